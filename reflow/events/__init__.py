"""Events: the CloudEvents model, EventBridge patterns and the rule index.

The front door of the events subsystem::

    from reflow.events import Event, Pattern, RuleSet

    rules = RuleSet()
    rules.add("render", {"source": ["cms"], "detail-type": ["ArticlePublished"]})
    event = Event(source="cms", type="ArticlePublished", data={"id": 7})
    rules.match(event.to_eventbridge())   # ["render"]

``Pattern`` validates and compiles one EventBridge pattern; ``RuleSet``
merges many into one matcher whose cost per event does not grow with the
number of rules; ``Event`` is the CloudEvents 1.0 envelope and its
EventBridge view. docs/events.md describes the pattern language.
"""

from __future__ import annotations

from reflow.events.model import Event
from reflow.events.patterns import Pattern
from reflow.events.ruleset import RuleSet

__all__ = ["Event", "Pattern", "RuleSet"]
