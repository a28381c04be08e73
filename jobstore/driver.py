"""The one place that talks to Redis synchronously: runs operations (generators of steps).

An asyncio driver would mirror this file and nothing else.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis

from .errors import NotReplicated
from .phases import migration_name
from .scripts import ALL as ALL_SCRIPTS
# What redis-py raises is translated where clients are made (connect() needs it too); MINIMUM is
# also importable from here, where it was defined before.
from .connection import MINIMUM as MINIMUM
from .connection import REDIS_ERRORS, UNAVAILABLE, Client, _unknown_command, is_cluster, reported
from .steps import (Batch, Call, Command, Pause, Primaries, Refresh, Refused, Scan, Script, Step,
                    Tidy)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .events import Events
    from .ops import Op, T
    from .strategy import Strategy

class SyncDriver:
    """Sends each batch an operation yields in one round trip and hands back the replies."""

    def __init__(self, client: Client, strategy: Strategy | None, label: str,
                 events: Events | None = None, *, wait_replicas: int = 0,
                 wait_timeout: float = 1.0) -> None:
        """``strategy``: whose routing state to keep fresh (None: a driver for admin passes).
        ``events``: told the phase each time the state is read. ``wait_replicas``: after every
        batch that writes, ``WAIT`` (in the same round trip) until that many replicas confirmed
        it, up to ``wait_timeout`` seconds; fewer raise :class:`NotReplicated`."""
        # Any: the cluster branches below call RedisCluster's own methods, behind self.cluster.
        self.client: Any = client
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self.strategy = strategy
        self.label = label
        self.events = events
        self.cluster = is_cluster(client)
        # A strategy that keeps no routing state (every single schema) is never asked for it.
        from .strategy import Strategy as Base

        self._stateful = strategy is not None and (
            type(strategy).state_request is not Base.state_request)
        if self.cluster:
            _local_script_keys(client)
        # A client that decodes replies itself (jobstore.open's do) needs no second pass over
        # every reply; one given by the caller may hand back bytes.
        self._text = _text if not _decodes(client) else _same
        self._scripts = {lua.name: client.register_script(lua.source) for lua in ALL_SCRIPTS}
        self.tidier = Tidier(client, self.cluster)

    def run(self, op: Op[T]) -> T:
        short: list[int] = []  # replica confirmations of writes WAIT found short (this run's)
        try:
            self._refresh_overdue_state()
            step = next(op)
            while True:
                step = op.send(self._do(step, short))
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
            raise reported(exc, self.label) from exc
        except Refused as refused:  # as if redis-py had raised Redis's refusal itself
            cause = redis.exceptions.ResponseError(*refused.args)
            raise reported(cause, self.label) from cause

    def _state_request(self, force: bool = False) -> tuple[Any, bool] | None:
        if not self._stateful:
            return None
        assert self.strategy is not None
        return self.strategy.state_request(time.monotonic(), force)

    def _refresh_overdue_state(self) -> None:
        # Routing is decided when the operation starts, so a state too old to trust is read first.
        request = self._state_request()
        if request is not None and request[1]:
            (reply,) = self._send((request[0],))
            self._apply_state(reply)

    def _do(self, step: Step, short: list[int] | None = None) -> Any:
        if isinstance(step, Batch):  # the common step first
            return self._batch(step, short)
        return self._other(step)

    def _other(self, step: Step) -> Any:
        if isinstance(step, Pause):
            time.sleep(step.seconds)
            return None
        if isinstance(step, Primaries):
            if not self.cluster:
                return [None]
            return sorted(node.name for node in self.client.get_primaries())
        if isinstance(step, Refresh):
            request = self._state_request(force=True)
            if request is not None:
                (reply,) = self._send((request[0],))
                self._apply_state(reply)
            return None
        if isinstance(step, Scan):
            return self._scan(step)
        if isinstance(step, Tidy):
            self.tidier.submit(step.keys)
            return None
        raise TypeError(f"unknown step {step!r}")

    def _batch(self, step: Batch, short: list[int] | None) -> Any:
        calls = step.calls
        tolerate = step.tolerate_errors
        wait = self.wait_replicas and _writes(calls)
        if wait:
            calls = (*calls, Command(("WAIT", self.wait_replicas, max(1, round(self.wait_timeout * 1000)))))
        # A state refresh that is due (but not overdue) rides along with this batch.
        request = self._state_request()
        if request is not None:
            replies = self._send((request[0], *calls), tolerate)
            self._apply_state(replies[0])
            replies = replies[1:]
        else:
            replies = self._send(calls, tolerate)
        if wait:
            acknowledged = replies.pop()
            if isinstance(acknowledged, Exception):
                raise acknowledged
            if int(acknowledged) < self.wait_replicas and short is not None:
                short.append(int(acknowledged))
        return replies

    def _scan(self, step: Scan) -> tuple[str, str, list[str]]:
        """``(identity, cursor, keys)``: the server's run id (and, on a cluster, the slots it
        serves) read on the same connection as the SCAN step, so both come from one process."""
        if self.cluster:
            node = self.client.get_node(node_name=step.node)
            if node is None:
                raise redis.exceptions.ClusterError(f"node {step.node} is no longer known")
            conn = self.client.get_redis_connection(node)
        else:
            conn = self.client
        pipe = conn.pipeline(transaction=False)
        pipe.execute_command("INFO", "server")
        # DEBUG RELOAD keeps the run id but not the key order: the count of keys its load read
        # tells it apart (a restart changes the run id anyway).
        pipe.execute_command("INFO", "persistence")
        if self.cluster:
            pipe.execute_command("CLUSTER", "MYID")
            pipe.execute_command("CLUSTER", "SLOTS")
        pipe.execute_command("SCAN", step.cursor, "MATCH", step.pattern, "COUNT", step.count)
        replies = pipe.execute(raise_on_error=False)
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
        return identity, str(self._text(cursor)), self._text(keys)

    def _apply_state(self, reply: Any) -> None:
        assert self.strategy is not None, "only a driver with a strategy asks for its state"
        self.strategy.apply_state(reply, time.monotonic())
        phase = self.strategy.describe().get("phase")
        if self.events is not None and phase:
            schemas = self.strategy.migration_schemas()
            self.events.phase(migration_name(schemas[0].name, schemas[1].name) if schemas
                              else self.strategy.name, phase)

    def _send(self, calls: tuple[Any, ...], tolerate: bool = False) -> list[Any]:
        if len(calls) == 1:
            if not tolerate:
                return [self._text(self._one(calls[0]))]
            if self.cluster:  # a cluster pipeline of one command costs far more than the command
                try:
                    return [self._text(self._one(calls[0]))]
                except redis.exceptions.ResponseError as exc:
                    if not _one_commands_fault(exc):
                        raise
                    return [exc]
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for call in calls:
                if isinstance(call, Script):
                    # EVALSHA directly: a Script object would make redis-py send SCRIPT EXISTS
                    # first, a second round trip. A NOSCRIPT reply means nothing ran.
                    script = self._scripts[call.lua.name]
                    pipe.execute_command("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args)
                else:
                    pipe.execute_command(*call.args)
            replies = pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                self._load_scripts()
                # Re-sending is safe: reads repeat harmlessly and every write recognises itself.
                continue
            for reply in replies:
                if isinstance(reply, Exception) and not (tolerate and _one_commands_fault(reply)):
                    raise reply
            return [self._text(r) for r in replies]
        raise AssertionError("unreachable")

    def _one(self, call: Call) -> Any:
        if isinstance(call, Script):
            script = self._scripts[call.lua.name]
            try:
                return self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
            except redis.exceptions.NoScriptError:
                # Nothing ran. Load every script at once (a server restarted or flushed its
                # cache, or this is its first use): one load, not one per script later.
                self._load_scripts()
                return self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        if call.node is not None and self.cluster:
            node = self.client.get_node(node_name=call.node)
            reply = self.client.execute_command(*call.args, target_nodes=node)
            if call.args[0] == "SCAN":  # the cluster client wraps the cursor as {node: cursor}
                cursors, keys = reply
                return [next(iter(cursors.values())), keys]
            return reply
        return self.client.execute_command(*call.args)

    def _load_scripts(self) -> None:
        for script in self._scripts.values():
            script.sha = self.client.script_load(script.script)


class Tidier:
    """Deletes the keys of :class:`jobstore.steps.Tidy` steps off the operations' path.

    A thread of the store's process (started at a Tidy when none runs, again in a forked child)
    sends them, so that no operation waits for it: on a cluster the keys sit on every primary,
    and one that is slow, failing over or gone must not hold up, or fail, an operation that
    already has its outcome. Every failure is ignored, and while the thread is behind, further
    keys are dropped: they all expire on their own. The thread ends after IDLE seconds without
    work (so a store dropped without ``close()`` is not kept alive by it) or at ``close()``.
    """

    BACKLOG = 16  # Tidy steps waiting at most (64 keys each)
    IDLE = 30.0  # seconds without work before the thread ends

    def __init__(self, client: Any, cluster: bool) -> None:
        self.client = client
        self.cluster = cluster
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue.Queue[tuple[str, ...] | None] = queue.Queue(self.BACKLOG)
        self._thread: threading.Thread | None = None

    def submit(self, keys: tuple[str, ...]) -> None:
        if not keys:
            return
        try:
            if self._pid != os.getpid():
                # A forked child: the parent's lock may be held by a thread the child lacks.
                self._lock = threading.Lock()
            with self._lock:  # the thread ends only under it, when nothing waits
                if self._pid != os.getpid():  # ...nor are the parent's queue and thread its own
                    self._pid, self._thread = os.getpid(), None
                    self._queue = queue.Queue(self.BACKLOG)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="jobstore-tidy",
                                                    daemon=True)
                    self._thread.start()
                self._queue.put_nowait(keys)
        except queue.Full:
            log.debug("jobstore: tidy behind; %d spent keys left to expire", len(keys))
        except Exception as exc:  # noqa: BLE001 - no thread (a limit reached): the keys expire
            log.debug("jobstore: tidy not started (%s); %d spent keys left to expire", exc, len(keys))

    def wait(self, timeout: float = 10.0) -> bool:
        """Until every submitted key was tried (tests); False when ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Drop what waits (it expires) and let the thread end; never blocks the caller. Only a
        delete already in flight may still use the client (and reopen a connection for it)."""
        if self._thread is None or self._pid != os.getpid():
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # it is daemonic: it ends with the process

    def _run(self) -> None:
        while True:
            try:
                keys = self._queue.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:  # no submit is between its look at this thread and its put
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                if keys is None:
                    return
                self._unlink(keys)
            except Exception as exc:  # noqa: BLE001 - best effort: the keys expire on their own
                log.debug("jobstore: tidy of %d spent keys failed: %s", len(keys or ()), exc)
            finally:
                self._queue.task_done()

    def _unlink(self, keys: tuple[str, ...]) -> None:
        if self.cluster:  # one command per key (slots differ): each node its share, in parallel
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("UNLINK", key)
            pipe.execute(raise_on_error=False)
        else:
            self.client.execute_command("UNLINK", *keys)


def _local_script_keys(client: Any) -> None:
    """Make ``client`` (a RedisCluster) read the keys of EVAL/EVALSHA from the command itself.

    redis-py's cluster pipeline looks up the keys of every command it queues, and for a script
    call (Redis flags them "movablekeys") it asks the server with ``COMMAND GETKEYS``: one more
    round trip per script call of a pipeline, one after the other. The keys of a script call
    are its ``numkeys`` arguments after the script, which is also how redis-py itself routes
    them (``RedisCluster.determine_slot``); only this lookup is made local. Idempotent.
    """
    parser = getattr(client, "commands_parser", None)
    if parser is None or getattr(parser, "_jobstore_local_script_keys", False):
        return
    server_lookup = parser.get_keys

    def get_keys(redis_conn: Any, *args: Any) -> Any:
        if len(args) > 2 and str(args[0]).upper() in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO"):
            return list(args[3:3 + int(args[2])])
        return server_lookup(redis_conn, *args)

    parser.get_keys = get_keys
    parser._jobstore_local_script_keys = True


def _decodes(client: Any) -> bool:
    """Whether every reply of ``client`` comes back as str already (``decode_responses``)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # RedisCluster: the settings every node connection is made with
        pool = getattr(client, "nodes_manager", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    return bool(kwargs and kwargs.get("decode_responses"))


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


def _one_commands_fault(reply: Exception) -> bool:
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


def _writes(calls: Iterable[Call]) -> bool:
    return any(
        (isinstance(call, Script) and not call.lua.read_only)
        or (isinstance(call, Command) and str(call.args[0]).upper() in WRITE_COMMANDS)
        for call in calls
    )
