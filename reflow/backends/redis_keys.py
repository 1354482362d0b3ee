"""Where the Redis engine keeps things: key names under a prefix, and its Lua scripts.

Every key and channel the engine touches starts with the namespace's prefix
(the URL option ``?prefix=``), so several deployments, or several test runs,
share one server without seeing each other. The layout under the prefix::

    log:<stream>                    the stream (XADD / XREADGROUP / XTRIM)
    lease:<stream>\\0<group>         the group's lease deadlines: entry id -> end
    delivered:<stream>\\0<group>     the group's delivery times: entry id -> when
    kv:<key>                        a key's hash: v (value), ver, exp
    kv#index                        every live key, for scans in key order
    kv#expiring                     keys with a TTL, by expiry, for reaping
    kv#dead                         tombstones, by when they died, for collection
    kv#floor                        the highest version collection ever dropped
    ps:<channel>                    a pub/sub channel

The scripts live as ``.lua`` files beside this module (packaged with it);
:func:`load_script` reads one, prepending a shared helper file when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

__all__ = ["Namespace", "load_script"]


@dataclass(frozen=True)
class Namespace:
    """Builds the Redis key of each thing the engine stores, under one prefix."""

    prefix: str = ""

    def stream(self, name: str) -> str:
        """The stream holding log ``name``."""
        return f"{self.prefix}log:{name}"

    def lease_prefix(self, stream: str) -> str:
        """What every lease index of ``stream`` starts with (the group name follows)."""
        # NUL cannot appear in a sensible stream name, so stream "a" group "b:c"
        # never collides with stream "a:b" group "c".
        return f"{self.prefix}lease:{stream}\x00"

    def leases(self, stream: str, group: str) -> str:
        """The sorted set of lease deadlines of ``group`` on ``stream``."""
        return self.lease_prefix(stream) + group

    def delivered_prefix(self, stream: str) -> str:
        """What every delivery-time hash of ``stream`` starts with (the group follows)."""
        return f"{self.prefix}delivered:{stream}\x00"

    def delivered(self, stream: str, group: str) -> str:
        """The hash of when each pending entry of ``group`` was last delivered."""
        return self.delivered_prefix(stream) + group

    @property
    def kv_prefix(self) -> str:
        """What every KV hash's name starts with (the key follows)."""
        return f"{self.prefix}kv:"

    def kv(self, key: str) -> str:
        """The hash holding KV ``key``."""
        return self.kv_prefix + key

    @property
    def kv_index(self) -> str:
        """The sorted set of live KV keys (all scored 0, so ordered by bytes)."""
        return f"{self.prefix}kv#index"

    @property
    def kv_expiring(self) -> str:
        """The sorted set of KV keys with a TTL, scored by expiry."""
        return f"{self.prefix}kv#expiring"

    def channel(self, name: str) -> str:
        """The pub/sub channel carrying ``name``."""
        return f"{self.prefix}ps:{name}"

    def channel_name(self, channel: bytes | str) -> str:
        """The reflow channel name of a Redis channel (the inverse of :meth:`channel`)."""
        text = channel.decode() if isinstance(channel, bytes) else channel
        return text.removeprefix(f"{self.prefix}ps:")


def load_script(name: str, *, common: str | None = None) -> str:
    """The text of ``lua/<name>``, after ``lua/<common>`` when one is given."""
    folder = resources.files("reflow.backends").joinpath("lua")
    text = folder.joinpath(name).read_text(encoding="utf-8")
    if common is not None:
        text = folder.joinpath(common).read_text(encoding="utf-8") + "\n" + text
    return text
