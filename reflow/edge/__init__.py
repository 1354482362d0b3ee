"""The edge: an HTTP/1.1 cache server with RFC 9111 semantics and the four hooks.

The pure policy lives in :mod:`reflow.edge.cache`; the request logic in
:mod:`reflow.edge.core`; sockets only in :mod:`reflow.edge.server`.
"""

from reflow.edge.cache import CachePolicy
from reflow.edge.core import Behaviour, Edge, Metrics
from reflow.edge.origins import BucketOrigin, HttpOrigin, OriginGroup
from reflow.edge.server import EdgeServer
from reflow.edge.store import Store
from reflow.edge.triggers import Hook

__all__ = [
    "Behaviour",
    "BucketOrigin",
    "CachePolicy",
    "Edge",
    "EdgeServer",
    "Hook",
    "HttpOrigin",
    "Metrics",
    "OriginGroup",
    "Store",
]
