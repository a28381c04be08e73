"""The one place that talks to Redis from asyncio: carries out, awaited, the I/O of
:meth:`jobstore.drivers.common.DriverCore.drive`, as :mod:`jobstore.drivers.sync` does without
asyncio (every decision is made there, once for both)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ..steps import NodeOf, Pause, Primaries, Scan, Step, Tidy
from .common import (IO, DriverBase, LoadScripts, One, Pipe, Reconnect, ScanStep, Send, command,
                     commands, target, unlink)

if TYPE_CHECKING:
    from ..events import Events
    from ..ops import Op
    from ..strategy import Strategy

log = logging.getLogger("jobstore.driver")
R = TypeVar("R")


class AsyncDriver(DriverBase):
    """Runs operations on a ``redis.asyncio`` client (standalone, cluster, or fakeredis's).

    A run awaits each of its round trips; a blocking dequeue waits in Redis (BLMOVE slices) on
    its own connection, so the event loop serves everything else meanwhile. A cancelled run
    stops at the await it was in, nothing more is sent, and what was sent may have been applied,
    as when a reply is lost: every write is whole or absent, but nothing re-sends the cancelled
    call. A claim in flight (a dequeue's) comes back when its lease runs out; a claim whose reply
    arrived as the task was cancelled is handed back at once (``run``'s ``give_back``).
    """

    # The seam a test (or a fault proxy) may set: called with each I/O request before it is
    # awaited, e.g. to cancel the task at the n-th await point.
    hook: Any = None

    def __init__(self, client: Any, strategy: Strategy | None, label: str,
                 events: Events | None = None, *, wait_replicas: int = 0,
                 wait_timeout: float = 1.0, wait: Callable[[float], Any] | None = None) -> None:
        """See :class:`jobstore.drivers.common.DriverBase`; ``wait`` (None: ``asyncio.sleep``)
        may be a coroutine function or a plain one."""
        super().__init__(client, strategy, label, events, wait_replicas=wait_replicas,
                         wait_timeout=wait_timeout, wait=wait)
        self.tidier = AsyncTidier(client, self.cluster)
        self._initialized = not self.cluster

    async def run(self, op: Op[R], *, plain: bool = False,
                  give_back: Callable[[Any], Op[None] | None] | None = None) -> R:
        """``op``'s result. ``plain``: without touching the routing state (the server check).

        ``give_back``: for an operation that claims a job (dequeue, finish), given its result
        (or the result a NotReplicated carries), the operation that hands the claimed job back
        (None: nothing claimed). It is run, to its end, when the task was cancelled but the
        claim's reply arrived all the same; then CancelledError is raised.
        """
        pending = _cancel_requests()
        cancels = pending()
        try:
            result = await self._drive(self.core.drive(op, plain=plain))
        except Exception as exc:  # noqa: BLE001 - a cancellation, if one is pending, wins
            if pending() <= cancels:
                raise
            await self._give_back(give_back, getattr(exc, "result", None))
            raise asyncio.CancelledError from exc
        if pending() > cancels:
            await self._give_back(give_back, result)
            raise asyncio.CancelledError
        return result

    async def _give_back(self, give_back: Callable[[Any], Op[None] | None] | None,
                         result: Any) -> None:
        """Run ``give_back(result)``'s operation in a task of its own, awaited to its end
        whatever cancellations come meanwhile (the caller raises CancelledError after)."""
        op = None if give_back is None or result is None else give_back(result)
        if op is None:
            return
        returning = asyncio.ensure_future(self._drive(self.core.drive(op)))
        while not returning.done():
            try:
                await asyncio.shield(returning)
            except asyncio.CancelledError:
                continue  # the task's own cancellation: raised once the job is back
            except Exception as exc:  # noqa: BLE001 - the job comes back when its lease runs out
                log.warning("jobstore: could not give back a job claimed by a cancelled call "
                            "(it is handed out again when its lease runs out): %s", exc)

    async def _do(self, step: Step, short: list[int] | None = None) -> Any:
        return await self._drive(self.core.step(step, short))

    async def _send(self, calls: tuple[Any, ...], tolerate: bool = False) -> list[Any]:
        return await self._drive(self.core.send(calls, tolerate))

    async def _scan(self, step: Scan) -> tuple[str, str, list[str]]:
        return await self._drive(self.core.scan(step))

    async def _drive(self, steps: Generator[IO, Any, R]) -> R:
        reply: Any = None
        error: Exception | None = None
        pending = _cancel_requests()
        cancels = pending()
        try:
            while True:
                try:
                    request = steps.send(reply) if error is None else steps.throw(error)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                try:
                    if self.hook is not None:
                        await self.hook(request)
                    reply, error = await self._io(request), None
                except Exception as exc:  # noqa: BLE001 - thrown into the core, which translates
                    reply, error = None, exc
                if pending() > cancels:
                    # The task was cancelled, and the I/O returned all the same (on Python 3.11
                    # asyncio.wait_for, redis-py's socket timeout, drops a cancellation that
                    # comes as its awaitable finishes). What arrived is the operation's: it goes
                    # in, so that an operation it ends reaches run() (a claimed job is handed
                    # back there); one that would send more stops here, nothing more is sent.
                    try:
                        steps.send(reply) if error is None else steps.throw(error)
                    except StopIteration as done:
                        return done.value  # type: ignore[no-any-return]
                    raise asyncio.CancelledError
        finally:
            steps.close()  # cancelled: the operation ends where it was, nothing more is sent

    async def _io(self, request: IO) -> Any:
        if not self._initialized:  # the cluster client learns its slots at its first command
            await self.client.initialize()
            self._initialized = True
        if isinstance(request, Send):
            return await self._send(request.calls, request.tolerate)
        if isinstance(request, Pipe):
            return await self._pipe(request)
        if isinstance(request, One):
            node = target(request.call, self.cluster)
            if node is not None:
                return await self.client.execute_command(
                    *command(request.call), target_nodes=self.client.get_node(node_name=node))
            return await self.client.execute_command(*command(request.call))
        if isinstance(request, ScanStep):
            return await self._scan(request.step)
        if isinstance(request, LoadScripts):
            for lua in self.core.scripts.values():
                await self.client.script_load(lua.source)
            return None
        if isinstance(request, Reconnect):
            pool = self.idle_pool()
            if pool is not None:
                await pool.disconnect(inuse_connections=False)
            return None
        if isinstance(request, Pause):
            if request.clock and self.wait is not None:
                waited = self.wait(request.seconds)
                if inspect.isawaitable(waited):
                    await waited
            else:
                await asyncio.sleep(request.seconds)
            return None
        if isinstance(request, Tidy):
            self.tidier.submit(request.keys)
            return None
        if isinstance(request, (Primaries, NodeOf)):
            return self.lookup(request)
        raise TypeError(f"unknown request {request!r}")

    async def _pipe(self, request: Pipe) -> list[Any]:
        args = commands(request)
        if request.node is not None and self.cluster:
            # One primary's own connection: its node client pipelines the commands.
            from redis.asyncio.cluster import PipelineCommand

            node = self.node(request.node)
            sent = [PipelineCommand(i, *a) for i, a in enumerate(args)]
            await node.execute_pipeline(sent)
            return [each.result for each in sent]
        pipe = self.client.pipeline(transaction=False)
        for a in args:
            pipe.execute_command(*a)
        return list(await pipe.execute(raise_on_error=False))

    async def close(self) -> None:
        await self.tidier.close()


def _cancel_requests() -> Callable[[], int]:
    """What tells how many cancellations of the running task are pending, to call before and
    after an await (the task looked up once per run, not at every await; always 0 before
    Python 3.11, which does not count them)."""
    task = asyncio.current_task()
    cancelling: Callable[[], int] | None = getattr(task, "cancelling", None)
    return cancelling if cancelling is not None else _none_pending


def _none_pending() -> int:
    return 0


class AsyncTidier:
    """Deletes the keys of :class:`jobstore.steps.Tidy` steps in tasks of their own, off the
    operations' path (the asyncio form of :class:`jobstore.drivers.sync.Tidier`): failures are
    ignored and, while BACKLOG deletes are under way, further keys are left to expire."""

    BACKLOG = 16

    def __init__(self, client: Any, cluster: bool) -> None:
        self.client = client
        self.cluster = cluster
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, keys: tuple[str, ...]) -> None:
        if not keys or len(self._tasks) >= self.BACKLOG:
            return
        task = asyncio.get_running_loop().create_task(self._unlink(keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every submitted delete was tried (tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _unlink(self, keys: tuple[str, ...]) -> None:
        try:
            sent, pipelined = unlink(keys, self.cluster)
            if pipelined:
                pipe = self.client.pipeline(transaction=False)
                for args in sent:
                    pipe.execute_command(*args)
                await pipe.execute(raise_on_error=False)
            else:
                await self.client.execute_command(*sent[0])
        except Exception as exc:  # noqa: BLE001 - best effort: the keys expire on their own
            log.debug("jobstore: tidy of %d spent keys failed: %s", len(keys), exc)
