"""The one place that talks to Redis synchronously: carries out the I/O of
:meth:`jobstore.drivers.common.DriverCore.drive` (every decision is made there)."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ..connection import Client
from ..steps import NodeOf, Pause, Primaries, Scan, Step, Tidy
from .common import (IO, DriverBase, LoadScripts, One, Pipe, Reconnect, ScanStep, Send, command,
                     commands, target, unlink)

log = logging.getLogger("jobstore.driver")

if TYPE_CHECKING:
    from ..events import Events
    from ..ops import Op
    from ..strategy import Strategy

R = TypeVar("R")


class SyncDriver(DriverBase):
    """Sends each batch an operation yields in one round trip and hands back the replies."""

    def __init__(self, client: Client, strategy: Strategy | None, label: str,
                 events: Events | None = None, *, wait_replicas: int = 0,
                 wait_timeout: float = 1.0, wait: Callable[[float], Any] | None = None) -> None:
        """See :class:`jobstore.drivers.common.DriverBase` (``wait`` None: ``time.sleep``)."""
        super().__init__(client, strategy, label, events, wait_replicas=wait_replicas,
                         wait_timeout=wait_timeout, wait=wait)
        if self.cluster:
            _local_script_keys(client)
        self.tidier = Tidier(client, self.cluster)

    def run(self, op: Op[R], *, plain: bool = False) -> R:
        """``op``'s result. ``plain``: without touching the routing state (the server check)."""
        return self._drive(self.core.drive(op, plain=plain))

    # The seams tests wrap (a lost reply, a killed connection): each runs the core's steps.

    def _do(self, step: Step, short: list[int] | None = None) -> Any:
        return self._drive(self.core.step(step, short))

    def _send(self, calls: tuple[Any, ...], tolerate: bool = False) -> list[Any]:
        return self._drive(self.core.send(calls, tolerate))

    def _scan(self, step: Scan) -> tuple[str, str, list[str]]:
        return self._drive(self.core.scan(step))

    def _drive(self, steps: Generator[IO, Any, R]) -> R:
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                request = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply, error = self._io(request), None
            except Exception as exc:  # noqa: BLE001 - thrown into the core, which translates
                reply, error = None, exc

    def _io(self, request: IO) -> Any:
        if isinstance(request, Send):
            return self._send(request.calls, request.tolerate)
        if isinstance(request, Pipe):
            pipe = self._connection(request.node).pipeline(transaction=False)
            for args in commands(request):
                pipe.execute_command(*args)
            return pipe.execute(raise_on_error=False)
        if isinstance(request, One):
            node = target(request.call, self.cluster)
            if node is not None:
                return self.client.execute_command(*command(request.call),
                                                   target_nodes=self.client.get_node(node_name=node))
            return self.client.execute_command(*command(request.call))
        if isinstance(request, ScanStep):
            return self._scan(request.step)
        if isinstance(request, LoadScripts):
            for lua in self.core.scripts.values():
                self.client.script_load(lua.source)
            return None
        if isinstance(request, Reconnect):
            pool = self.idle_pool()
            if pool is not None:
                pool.disconnect(inuse_connections=False)
            return None
        if isinstance(request, Pause):
            if request.clock and self.wait is not None:
                self.wait(request.seconds)
            else:
                time.sleep(request.seconds)
            return None
        if isinstance(request, Tidy):
            self.tidier.submit(request.keys)
            return None
        if isinstance(request, (Primaries, NodeOf)):
            return self.lookup(request)
        raise TypeError(f"unknown request {request!r}")

    def _connection(self, name: str | None) -> Any:
        """Who to pipeline on: the client, or (Cluster) one primary's own connection."""
        if name is None or not self.cluster:
            return self.client
        return self.client.get_redis_connection(self.node(name))


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
        sent, pipelined = unlink(keys, self.cluster)
        if pipelined:
            pipe = self.client.pipeline(transaction=False)
            for args in sent:
                pipe.execute_command(*args)
            pipe.execute(raise_on_error=False)
        else:
            self.client.execute_command(*sent[0])


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


