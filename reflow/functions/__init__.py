"""Functions: the runtime every handler in reflow runs through.

The front door of the package. :class:`Runtime` invokes an App's functions
synchronously or as durable events; :class:`Context` is what handlers
receive; the pools, the zygote and the async queue live in the modules
below and are reached through the runtime.

Only :mod:`reflow.functions.context` is imported eagerly (``reflow``
re-exports ``Context``): an app module, and so every worker and zygote,
imports this package, and must not pay for the runtime's machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from reflow.functions.context import (
    Authorizer,
    BlobsClient,
    Context,
    allow_all,
    function_arn,
    register_client,
)

if TYPE_CHECKING:
    from reflow.functions.invocations import backoff, dead_letters, dlq_stream, events_stream
    from reflow.functions.metrics import FunctionMetrics
    from reflow.functions.runtime import Runtime, app_target

__all__ = [
    "Authorizer",
    "BlobsClient",
    "Context",
    "FunctionMetrics",
    "Runtime",
    "allow_all",
    "app_target",
    "backoff",
    "dead_letters",
    "dlq_stream",
    "events_stream",
    "function_arn",
    "register_client",
]

_LAZY = {
    "FunctionMetrics": "reflow.functions.metrics",
    "Runtime": "reflow.functions.runtime",
    "app_target": "reflow.functions.runtime",
    "backoff": "reflow.functions.invocations",
    "dead_letters": "reflow.functions.invocations",
    "dlq_stream": "reflow.functions.invocations",
    "events_stream": "reflow.functions.invocations",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reflow.functions' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
