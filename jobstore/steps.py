"""The steps an operation hands to a driver: what to send to Redis, or how long to pause."""

from __future__ import annotations

from dataclasses import dataclass

from .scripts import Lua


@dataclass(frozen=True)
class Command:
    """One plain Redis command, e.g. ``Command(("HGETALL", key))``.

    ``node``: on Redis Cluster, the primary to send a keyless command to (SCAN); a name from
    :class:`Primaries`. SCAN replies always come back as ``[cursor, keys]``.
    """

    args: tuple
    node: str | None = None


@dataclass(frozen=True)
class Script:
    """One Lua script call."""

    lua: Lua
    keys: tuple[str, ...]
    args: tuple


@dataclass(frozen=True)
class Batch:
    """Commands sent together: one network round trip on standalone Redis."""

    calls: tuple[Command | Script, ...]


@dataclass(frozen=True)
class Pause:
    """Wait this many seconds before going on (throttling); the driver's reply is None."""

    seconds: float


@dataclass(frozen=True)
class Refresh:
    """Re-read the strategy's routing state now: a script said the cached state is stale."""


@dataclass(frozen=True)
class Primaries:
    """The names of the primaries to scan: one name, None, on standalone Redis."""
