"""The edge: an HTTP/1.1 cache server with RFC 9111 semantics and the four hooks.

The pure policy lives in :mod:`reflow.edge.cache`; the request logic in
:mod:`reflow.edge.core`; sockets only in :mod:`reflow.edge.server`. The
platform starts it through :class:`reflow.edge.service.EdgeService` (not
imported here: it pulls in the admin API).
"""

from reflow.edge.cache import CachePolicy
from reflow.edge.core import Behaviour, Edge, Metrics
from reflow.edge.origins import AsgiOrigin, BucketOrigin, HttpOrigin, OriginGroup
from reflow.edge.purge import PurgePlan, Purger
from reflow.edge.server import EdgeServer
from reflow.edge.store import Store
from reflow.edge.triggers import Hook

__all__ = [
    "AsgiOrigin",
    "Behaviour",
    "BucketOrigin",
    "CachePolicy",
    "Edge",
    "EdgeServer",
    "Hook",
    "HttpOrigin",
    "Metrics",
    "OriginGroup",
    "PurgePlan",
    "Purger",
    "Store",
]
