"""reflow: reactive content delivery in one Python package.

The front door. Everything a user's app needs to import lives here or one
level below (``reflow.events``, ``reflow.flows``, ``reflow.testing``).
"""

from __future__ import annotations

from reflow.app import App
from reflow.errors import (
    ConfigError,
    InvalidDefinitionError,
    InvalidPatternError,
    PermissionDeniedError,
    ReflowError,
    RegistrationError,
)
from reflow.events.model import Event
from reflow.functions.context import Context

__version__ = "0.1.0"

__all__ = [
    "App",
    "ConfigError",
    "Context",
    "Event",
    "InvalidDefinitionError",
    "InvalidPatternError",
    "PermissionDeniedError",
    "ReflowError",
    "RegistrationError",
    "__version__",
]
