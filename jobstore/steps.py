"""The steps an operation hands to a driver: what to send to Redis, or how long to pause."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .scripts import Lua


@dataclass(frozen=True)
class Command:
    """One plain Redis command, e.g. ``Command(("HGETALL", key))``.

    ``node``: on Redis Cluster, the primary to send a keyless command to (SCAN); a name from
    :class:`Primaries`. SCAN replies always come back as ``[cursor, keys]``.
    """

    args: tuple[Any, ...]
    node: str | None = None


@dataclass(frozen=True)
class Script:
    """One Lua script call."""

    lua: Lua
    keys: tuple[str, ...]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Batch:
    """Commands sent together: one network round trip on standalone Redis.

    ``tolerate_errors``: a command Redis refuses (WRONGTYPE, a script error) comes back as its
    exception among the replies instead of failing the batch (connection failures still raise).
    """

    calls: tuple[Command | Script, ...]
    tolerate_errors: bool = False


@dataclass(frozen=True)
class Scan:
    """One SCAN step of one server, with who answered it: the driver replies
    ``(server identity, next cursor, keys)``, all from one connection, so that a cursor is never
    used on a server that did not give it (a restart or a failover re-seeds the key order).

    ``node``: a name from :class:`Primaries` (None on standalone Redis).
    """

    pattern: str
    cursor: str
    count: int
    node: str | None = None


@dataclass(frozen=True)
class Pause:
    """Wait this many seconds before going on; the driver's reply is None.

    ``clock``: a wait on the caller's clock (a migration waits until a phase switch reached
    every store): the driver's own ``wait``, which a test replaces with a fake clock's.
    Otherwise a throttle (a pass under a rate), always slept for real.
    """

    seconds: float
    clock: bool = False


@dataclass(frozen=True)
class Refresh:
    """Re-read the strategy's routing state now: a script said the cached state is stale."""


@dataclass(frozen=True)
class Tidy:
    """Delete these keys when Redis lets us; the reply is None at once, whatever happens.

    For keys that expire on their own and are only dropped early to save memory (the op markers
    of calls that have their answer, on Redis Cluster, where they sit in every slot): the driver
    deletes them off the operation's path (jobstore.driver.Tidier), so a slow or failing node
    never holds up or fails the operation that already has its outcome.
    """

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Primaries:
    """The names of the primaries to scan: one name, None, on standalone Redis."""


@dataclass(frozen=True)
class NodeOf:
    """On Redis Cluster, the name of the primary serving ``key``'s slot (a keyless command such
    as TIME then goes to the server holding that key); None on standalone Redis. Asked of the
    driver, which knows the slot map once it has connected."""

    key: str


# One call of a batch.
Call = Command | Script

# Everything an operation or a migration pass may yield, and what the driver sends back:
# a Batch, the list of its replies; a Scan, ``(server identity, next cursor, keys)``; Primaries,
# the list of names (``[None]`` on standalone Redis); NodeOf, a name (None on standalone Redis);
# Pause, Refresh and Tidy, None.
Step = Batch | Scan | Pause | Refresh | Primaries | NodeOf | Tidy


class Refused(Exception):
    """Raised by an operation that reads in a reply that Redis refused one of its commands (a
    script's ``redis.pcall`` caught the error and handed back its text): the driver reports it as
    it reports the same refusal raised by redis-py, as :class:`jobstore.RedisCommandError`
    chained to a redis-py ``ResponseError`` carrying the text. Operations import no redis-py."""

