"""Purging the edge cache from a flow: CloudFront's CreateInvalidation and ``reflow:cache:purge``.

``arn:aws:states:::aws-sdk:cloudfront:createInvalidation`` takes the SDK's
request, ``{"DistributionId", "InvalidationBatch": {"CallerReference",
"Paths": {"Quantity", "Items": ["/a", "/blog/*"]}}}``, purges those paths on
every edge (``/blog/*`` is a prefix, as in CloudFront; the distribution id is
only echoed: reflow has one cache) and answers as CreateInvalidation does,
``{"Location", "Invalidation": {"Id", "Status": "Completed", "CreateTime",
"InvalidationBatch"}}`` — ``Completed`` at once, since the purge is done when
the call returns. A malformed request fails with
``CloudFront.InvalidArgumentException``.

``reflow:cache:purge`` is reflow's own: ``{"Keys": [...], "Paths": [...],
"Soft": false}`` (surrogate keys, paths, and a soft purge that marks objects
stale instead of dropping them) answered with ``{"Purged": COUNT}``, the
objects purged on this process's edge. A malformed request fails with
``Cache.InvalidPurgeRequest``.

Both go through the same client as a handler's ``context.cache``
(:class:`reflow.edge.client.CacheClient` in the server), so the
authorisation hook and the PubSub fan-out to other edges are the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reflow.errors import EdgeError
from reflow.flows.errors import StatesError

if TYPE_CHECKING:
    from reflow.flows.tasks import TaskContext

__all__ = ["create_invalidation", "purge"]

_INVALID = "CloudFront.InvalidArgumentException"
_INVALID_PURGE = "Cache.InvalidPurgeRequest"
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


async def create_invalidation(client: Any, payload: Any, context: TaskContext) -> Any:
    """CloudFront CreateInvalidation over the edge cache: purge the batch's paths."""
    if not isinstance(payload, Mapping):
        raise StatesError(_INVALID, "the request must be a JSON object")
    distribution = payload.get("DistributionId")
    if not isinstance(distribution, str) or not distribution:
        raise StatesError(_INVALID, "DistributionId is required: a non-empty string")
    batch = payload.get("InvalidationBatch")
    if not isinstance(batch, Mapping):
        raise StatesError(_INVALID, "InvalidationBatch is required: an object")
    reference = batch.get("CallerReference")
    if not isinstance(reference, str) or not reference:
        raise StatesError(_INVALID, "InvalidationBatch.CallerReference is required: a string")
    paths = batch.get("Paths")
    if not isinstance(paths, Mapping):
        raise StatesError(_INVALID, "InvalidationBatch.Paths is required: an object")
    items = paths.get("Items", [])
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise StatesError(_INVALID, "InvalidationBatch.Paths.Items must be a list of strings")
    quantity = paths.get("Quantity")
    if quantity != len(items) or isinstance(quantity, bool):
        raise StatesError(
            _INVALID,
            f"InvalidationBatch.Paths.Quantity ({quantity!r}) must equal "
            f"the number of Items ({len(items)})",
        )
    try:
        await client.purge((), items, soft=False)
    except EdgeError as error:
        raise StatesError(_INVALID, f"InvalidationBatch.Paths.Items: {error}") from None
    # The same id on every redelivery of one attempt: derived from its idempotency key.
    digest = hashlib.sha256(context.idempotency_key.encode()).digest()
    invalidation = "I" + "".join(_ID_ALPHABET[byte % len(_ID_ALPHABET)] for byte in digest[:13])
    created = context.context_object.get("State", {}).get("EnteredTime")
    return {
        "Location": (
            f"https://cloudfront.amazonaws.com/2020-05-31/distribution/"
            f"{distribution}/invalidation/{invalidation}"
        ),
        "Invalidation": {
            "Id": invalidation,
            "Status": "Completed",
            "CreateTime": created,
            "InvalidationBatch": {
                "CallerReference": reference,
                "Paths": {"Quantity": len(items), "Items": list(items)},
            },
        },
    }


async def purge(client: Any, payload: Any, context: TaskContext) -> Any:
    """``reflow:cache:purge``: purge surrogate keys and paths on every edge.

    The output counts the objects purged by every edge that answered; when a
    live edge did not answer in time it is named under ``Missing`` (it may
    still serve the old body), so a flow can retry or alert on it.
    """
    if not isinstance(payload, Mapping):
        raise StatesError(_INVALID_PURGE, "the request must be a JSON object")
    unknown = sorted(set(payload) - {"Keys", "Paths", "Soft"})
    if unknown:
        raise StatesError(_INVALID_PURGE, f"unknown fields {unknown}: expected Keys, Paths, Soft")
    lists = {}
    for name in ("Keys", "Paths"):
        value = payload.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise StatesError(_INVALID_PURGE, f"{name} must be a list of strings")
        lists[name] = value
    if not lists["Keys"] and not lists["Paths"]:
        raise StatesError(_INVALID_PURGE, "nothing to purge: give Keys or Paths")
    soft = payload.get("Soft", False)
    if not isinstance(soft, bool):
        raise StatesError(_INVALID_PURGE, "Soft must be true or false")
    try:
        count = await client.purge(lists["Keys"], lists["Paths"], soft=soft)
    except EdgeError as error:
        raise StatesError(_INVALID_PURGE, str(error)) from None
    missing = list(getattr(count, "missing", ()))
    return {"Purged": int(count), "Missing": missing} if missing else {"Purged": int(count)}
