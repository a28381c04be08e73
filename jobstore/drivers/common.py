"""What the synchronous and the asyncio driver share: every decision, none of the I/O.

An operation (a generator of :mod:`jobstore.steps`) is run by :meth:`DriverCore.drive`, itself a
generator: it keeps the strategy's routing state fresh, wraps writing batches with ``WAIT``,
retries a batch whose scripts the server did not have, turns SCAN replies into a server's
identity, decodes replies, and translates what redis-py raises into jobstore's errors. What it
yields are :data:`IO` requests, each one thing to send or wait for; a driver
(:class:`jobstore.drivers.sync.SyncDriver`, :class:`jobstore.drivers.aio.AsyncDriver`) only
carries them out, and throws what the I/O raised back into the generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from ..connection import (REDIS_ERRORS, UNAVAILABLE, _unknown_command, demoted, is_cluster,
                          reported)
from ..errors import NotReplicated
from ..scripts import ALL as ALL_SCRIPTS
from ..phases import migration_name
from ..steps import (Batch, Call, Command, NodeOf, Pause, Primaries, Refresh, Refused, Scan, Script,
                     Step, Tidy)

if TYPE_CHECKING:
    from ..events import Events
    from ..strategy import Strategy

T = TypeVar("T")


# -- what a driver is asked to do ---------------------------------------------------------------

@dataclass(frozen=True)
class One:
    """Send one command or script call and hand back its reply (raise what redis-py raises).
    A :class:`Command` with a ``node``, on Redis Cluster, goes to that primary."""

    call: Call


@dataclass(frozen=True)
class Pipe:
    """Send these calls in one pipeline (no transaction) and hand back every reply, a refused
    command as its exception. ``node``: on Redis Cluster, all to that primary, on one connection
    (a SCAN step with its INFO); None: each where its keys live."""

    calls: tuple[Call, ...]
    node: str | None = None


@dataclass(frozen=True)
class LoadScripts:
    """SCRIPT LOAD every script (a NOSCRIPT reply said the server lacks them); reply None."""


@dataclass(frozen=True)
class Send:
    """A batch's calls (after WAIT wrapping), for the driver's ``_send(calls, tolerate)``: the
    one seam tests (and fault proxies) wrap. The driver runs :meth:`DriverCore.send` for it."""

    calls: tuple[Any, ...]
    tolerate: bool = False


@dataclass(frozen=True)
class ScanStep:
    """A SCAN step, for the driver's ``_scan(step)`` seam; the driver runs :meth:`DriverCore.scan`."""

    step: Scan


@dataclass(frozen=True)
class Reconnect:
    """Close the client's idle pooled connections (reply None): a primary that a failover made a
    replica answered, and the next connections must be made afresh (through Sentinel, to the
    new primary)."""


# Pause (sleep, reply None), Tidy (hand the keys to the tidier, reply None), Primaries (the
# primaries' names, unsorted) and NodeOf (on Redis Cluster: a primary's name) are passed to the
# driver as they are.
IO = One | Pipe | LoadScripts | Send | ScanStep | Reconnect | Pause | Tidy | Primaries | NodeOf


# -- the commands the requests are sent as: the drivers only send them -----------------------------

def command(call: Call) -> tuple[Any, ...]:
    """The command that sends ``call``. A script goes as EVALSHA directly: redis-py's Script
    object would send SCRIPT EXISTS first, a second round trip; a NOSCRIPT reply means nothing
    ran (the core loads the scripts and sends again)."""
    if isinstance(call, Script):
        return ("EVALSHA", call.lua.sha, len(call.keys), *call.keys, *call.args)
    return tuple(call.args)


def commands(request: Pipe) -> list[tuple[Any, ...]]:
    """The commands of a :class:`Pipe` request, in order."""
    return [command(call) for call in request.calls]


def target(call: Call, cluster: bool) -> str | None:
    """The primary a :class:`One` request's call goes to (on Redis Cluster, a keyless command
    with a ``node``), or None: where its keys live, or the one server."""
    return call.node if cluster and isinstance(call, Command) else None


def unlink(keys: tuple[str, ...], cluster: bool) -> tuple[list[tuple[Any, ...]], bool]:
    """How a tidier deletes ``keys``: the commands, and whether they go as one pipeline (Redis
    Cluster: one command per key, as the slots differ, each node its share in parallel) or as
    the one command."""
    if cluster:
        return [("UNLINK", key) for key in keys], True
    return [("UNLINK", *keys)], False


class DriverBase:
    """What the synchronous and the asyncio driver hold alike: the client, the core that makes
    every decision, the settings, and the answers the client's own slot map gives (no I/O)."""

    def __init__(self, client: Any, strategy: Strategy | None, label: str,
                 events: Events | None = None, *, wait_replicas: int = 0,
                 wait_timeout: float = 1.0, wait: Callable[[float], Any] | None = None) -> None:
        """``strategy``: whose routing state to keep fresh (None: a driver for admin passes).
        ``events``: told the phase each time the state is read. ``wait_replicas``: after every
        batch that writes, ``WAIT`` (in the same round trip) until that many replicas confirmed
        it, up to ``wait_timeout`` seconds; fewer raise :class:`NotReplicated`. ``wait``: how a
        ``Pause(clock=True)`` waits (a migration's own; None: the driver's sleep)."""
        # Any: the cluster branches call RedisCluster's own methods, behind self.cluster.
        self.client: Any = client
        self.cluster = is_cluster(client)
        self.core = DriverCore(strategy, label, events, cluster=self.cluster,
                               decodes=decodes(client), wait_replicas=wait_replicas,
                               wait_timeout=wait_timeout)
        self.strategy, self.label, self.events = strategy, label, events
        self.wait_replicas, self.wait_timeout = wait_replicas, wait_timeout
        self.wait = wait

    def lookup(self, request: Primaries | NodeOf) -> Any:
        """A :class:`Primaries` or :class:`NodeOf` request's answer, from the client's slot map."""
        if isinstance(request, Primaries):
            return [node.name for node in self.client.get_primaries()]
        return str(self.client.get_node_from_key(request.key).name)

    def node(self, name: str) -> Any:
        """The cluster client's node ``name`` (:raises ClusterError: no longer known)."""
        found = self.client.get_node(node_name=name)
        if found is None:
            raise redis.exceptions.ClusterError(f"node {name} is no longer known")
        return found

    def idle_pool(self) -> Any:
        """The pool whose idle connections a :class:`Reconnect` closes (None: a cluster client,
        which has none)."""
        return getattr(self.client, "connection_pool", None)


class DriverCore:
    """The I/O-free part of a driver for one client."""

    def __init__(self, strategy: Strategy | None, label: str, events: Events | None, *,
                 cluster: bool, decodes: bool, wait_replicas: int = 0,
                 wait_timeout: float = 1.0) -> None:
        self.strategy = strategy
        self.label = label
        self.events = events
        self.cluster = cluster
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        # What the age of the cached routing state is measured on (a test may stop it).
        self.monotonic: Callable[[], float] = time.monotonic
        # A strategy that keeps no routing state (every single schema) is never asked for it.
        from ..strategy import Strategy as Base

        self.stateful = strategy is not None and (
            type(strategy).state_request is not Base.state_request)
        # A client that decodes replies itself (jobstore.open's do) needs no second pass.
        self.text = _same if decodes else _text
        self.scripts = {lua.name: lua for lua in ALL_SCRIPTS}

    # -- an operation ---------------------------------------------------------------------------

    def drive(self, op: Generator[Step, Any, T], *, plain: bool = False) -> Generator[IO, Any, T]:
        """Run ``op``: its result, or a jobstore error. ``plain``: leave the routing state alone
        (the server check, which runs before the first operation and reads nothing routed)."""
        short: list[int] = []  # replica confirmations of writes WAIT found short (this run's)
        stateful = self.stateful and not plain
        try:
            if stateful:  # routing is decided when the operation starts: an overdue state first
                yield from self._refresh(force=False, overdue_only=True)
            step = next(op)
            while True:
                if type(step) is Batch:  # the common step, straight to its sending
                    reply = yield from self._batch(step, short, plain)
                else:
                    reply = yield from self.step(step, short, plain)
                step = op.send(reply)
        except StopIteration as done:
            result: T = done.value  # what the operation returned
            if short:
                # Raised once the operation has its outcome: a dequeue's claim, an enqueue's
                # job, reach the caller on the error instead of being stranded.
                raise NotReplicated(min(short), self.wait_replicas, self.wait_timeout,
                                    result=result) from None
            return result
        except REDIS_ERRORS as exc:
            # RedisError: on Cluster, redis-py reports a command the server lacks as a bare one.
            if demoted(exc):
                yield Reconnect()
            raise reported(exc, self.label) from exc
        except Refused as refused:  # as if redis-py had raised Redis's refusal itself
            cause = redis.exceptions.ResponseError(*refused.args)
            if demoted(cause):  # a script's write on a demoted primary
                yield Reconnect()
            raise reported(cause, self.label) from cause

    def step(self, step: Step, short: list[int] | None = None,
             plain: bool = False) -> Generator[IO, Any, Any]:
        """One step of an operation: its reply. ``plain``: see :meth:`drive`; its batches are
        sent past the driver's ``_send`` seam too (they are no operation's)."""
        stateful = self.stateful and not plain
        if isinstance(step, Batch):  # the common step first
            return (yield from self._batch(step, short, plain))
        if isinstance(step, (Pause, Tidy)):
            yield step
            return None
        if isinstance(step, Primaries):
            if not self.cluster:
                return [None]
            return sorted((yield step))
        if isinstance(step, NodeOf):
            return (yield step) if self.cluster else None
        if isinstance(step, Refresh):
            if stateful:
                yield from self._refresh(force=True, overdue_only=False)
            return None
        if isinstance(step, Scan):
            return (yield ScanStep(step))
        raise TypeError(f"unknown step {step!r}")

    def refusal(self, message: str) -> Exception:
        """The error of a write Redis refused with ``message`` (a script's pcall reply), as if
        Redis had refused the command itself."""
        return reported(redis.exceptions.ResponseError(message), self.label)

    # -- routing state --------------------------------------------------------------------------

    def _state_request(self, force: bool = False) -> tuple[Any, bool] | None:
        if not self.stateful:
            return None
        assert self.strategy is not None
        return self.strategy.state_request(self.monotonic(), force)

    def _refresh(self, force: bool, overdue_only: bool) -> Generator[IO, Any, None]:
        request = self._state_request(force)
        if request is not None and (request[1] or not overdue_only):
            (reply,) = yield Send((request[0],))
            self._apply_state(reply)

    def _apply_state(self, reply: Any) -> None:
        assert self.strategy is not None, "only a driver with a strategy asks for its state"
        self.strategy.apply_state(reply, self.monotonic())
        phase = self.strategy.describe().get("phase")
        if self.events is not None and phase:
            schemas = self.strategy.migration_schemas()
            self.events.phase(migration_name(schemas[0].name, schemas[1].name) if schemas
                              else self.strategy.name, phase)

    # -- batches --------------------------------------------------------------------------------

    def _batch(self, step: Batch, short: list[int] | None,
               plain: bool) -> Generator[IO, Any, list[Any]]:
        calls: tuple[Any, ...] = step.calls
        wait = self.wait_replicas and writes(calls)
        if wait:
            calls = (*calls, Command(("WAIT", self.wait_replicas,
                                      max(1, round(self.wait_timeout * 1000)))))
        # A state refresh that is due (but not overdue) rides along with this batch.
        request = None if plain or not self.stateful else self._state_request()
        if request is not None:
            replies = yield Send((request[0], *calls), step.tolerate_errors)
            self._apply_state(replies[0])
            replies = replies[1:]
        elif plain:
            replies = yield from self.send(calls, step.tolerate_errors)
        else:
            replies = yield Send(calls, step.tolerate_errors)
        if wait:
            acknowledged = replies.pop()
            if isinstance(acknowledged, Exception):
                raise acknowledged
            if int(acknowledged) < self.wait_replicas and short is not None:
                short.append(int(acknowledged))
        return list(replies)

    def send(self, calls: tuple[Any, ...], tolerate: bool = False) -> Generator[IO, Any, list[Any]]:
        """The replies of ``calls``, as text; a refused command raises, or (``tolerate``, a
        fault of the command itself) comes back as its exception."""
        if len(calls) == 1:
            if not tolerate:
                return [self.text((yield from self.one(calls[0])))]
            if self.cluster:  # a cluster pipeline of one command costs far more than the command
                try:
                    return [self.text((yield from self.one(calls[0])))]
                except redis.exceptions.ResponseError as exc:
                    if not one_commands_fault(exc):
                        raise
                    return [exc]
        for attempt in (1, 2):
            replies = yield Pipe(tuple(calls))
            if attempt == 1 and any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                yield LoadScripts()
                # Re-sending is safe: reads repeat harmlessly and every write recognises itself.
                continue
            for reply in replies:
                if isinstance(reply, Exception) and not (tolerate and one_commands_fault(reply)):
                    raise reply
            return [self.text(r) for r in replies]
        raise AssertionError("unreachable")

    def one(self, call: Call) -> Generator[IO, Any, Any]:
        """One call's raw reply; a script the server lacks is loaded (all at once) and re-sent."""
        try:
            reply = yield One(call)
        except redis.exceptions.NoScriptError:
            # Nothing ran. Load every script at once (a server restarted or flushed its cache,
            # or this is its first use): one load, not one per script later.
            yield LoadScripts()
            reply = yield One(call)
        if (isinstance(call, Command) and call.node is not None and self.cluster
                and call.args[0] == "SCAN"):  # the cluster client wraps the cursor as {node: cursor}
            cursors, keys = reply
            return [next(iter(cursors.values())), keys]
        return reply

    # -- scans ----------------------------------------------------------------------------------

    def scan(self, step: Scan) -> Generator[IO, Any, tuple[str, str, list[str]]]:
        """``(identity, cursor, keys)``: the server's run id (and, on a cluster, the slots it
        serves) read on the same connection as the SCAN step, so both come from one process."""
        commands: list[tuple[Any, ...]] = [("INFO", "server"),
                    # DEBUG RELOAD keeps the run id but not the key order: the count of keys
                    # its load read tells it apart (a restart changes the run id anyway).
                    ("INFO", "persistence")]
        if self.cluster:
            commands += [("CLUSTER", "MYID"), ("CLUSTER", "SLOTS")]
        commands.append(("SCAN", step.cursor, "MATCH", step.pattern, "COUNT", step.count))
        replies = yield Pipe(tuple(Command(args) for args in commands), step.node)
        return self.scan_identity(replies)

    def scan_identity(self, replies: list[Any]) -> tuple[str, str, list[str]]:
        if isinstance(replies[-1], Exception):
            raise replies[-1]
        cursor, keys = replies[-1]
        info, persistence = replies[0], replies[1]
        for reply in replies[:-1]:
            if isinstance(reply, Exception) and not _unknown_command(reply):
                # Refused (an ACL without INFO, say): a pass that cannot tell a restart must not
                # carry its cursor over one silently.
                raise reply
        if isinstance(info, Exception):  # the embedded store (fakeredis) has no INFO: one process
            identity = "embedded"
        else:
            identity = ":".join(str(_field(part, name)) for part, name in (
                (info, "run_id"), (persistence, "rdb_last_load_keys_loaded"),
                (persistence, "rdb_last_load_keys_expired")))
        if self.cluster:
            identity += "/" + _slots_of(_text(replies[2]), _text(replies[3]))
        return identity, str(self.text(cursor)), self.text(keys)


def decodes(client: Any) -> bool:
    """Whether every reply of ``client`` comes back as str already (``decode_responses``)."""
    kwargs = connection_kwargs(client)
    return bool(kwargs and kwargs.get("decode_responses"))


def connection_kwargs(client: Any) -> dict[str, Any]:
    """The settings every connection of ``client`` is made with (standalone or cluster)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # RedisCluster: the settings every node connection is made with
        pool = getattr(client, "nodes_manager", None)
    return getattr(pool, "connection_kwargs", None) or {}


def _same(reply: Any) -> Any:
    return reply


def _text(reply: Any) -> Any:
    """Replies as str whatever the client's ``decode_responses``."""
    if isinstance(reply, bytes):  # bytes that are not UTF-8 as lone surrogates (connection.DECODING)
        return reply.decode("utf-8", "surrogateescape")
    if isinstance(reply, list):
        return [_text(r) for r in reply]
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    return reply


def _field(info: Any, name: str) -> str:
    """One field of an INFO reply (parsed by redis-py into a dict, or raw text)."""
    if isinstance(info, Exception):
        return ""
    info = _text(info)
    if isinstance(info, dict):
        return str(info.get(name, ""))
    for line in str(info).splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _slots_of(node_id: str, slots: list[Any]) -> str:
    """The slot ranges ``node_id`` serves as primary, as ``a-b,c-d`` (CLUSTER SLOTS reply)."""
    mine = []
    for entry in slots or []:
        start, end, primary = entry[0], entry[1], entry[2]
        if len(primary) > 2 and str(primary[2]) == node_id:
            mine.append((int(start), int(end)))
    return ",".join(f"{a}-{b}" for a, b in sorted(mine))


def one_commands_fault(reply: Exception) -> bool:
    """An error that is about the command itself (WRONGTYPE, a script's own error), not about
    the server's state (down, loading, read-only, a slot moving): only those may be tolerated."""
    return isinstance(reply, redis.exceptions.ResponseError) and not isinstance(
        reply, UNAVAILABLE + (redis.exceptions.MovedError, redis.exceptions.AskError)
    )


# Commands of the operations that change data (scripts all do, but those whose header says
# '-- flags: read-only': Lua.read_only).
WRITE_COMMANDS = frozenset({"HSET", "HDEL", "HINCRBY", "DEL", "UNLINK", "ZADD", "ZREM", "LPUSH",
                            "RPUSH", "RPOP", "LPOP", "LMOVE", "BLMOVE", "LREM", "LTRIM", "SET",
                            "INCR", "EXPIRE", "PEXPIRE"})


def writes(calls: Iterable[Call]) -> bool:
    return any(
        (isinstance(call, Script) and not call.lua.read_only)
        or (isinstance(call, Command) and str(call.args[0]).upper() in WRITE_COMMANDS)
        for call in calls
    )

