"""jobstore on asyncio: :func:`open` gives an :class:`AsyncJobStore`, whose every operation is a
coroutine. It is the synchronous store's mirror, not a second copy: the same argument checks
(:class:`jobstore.store_core.StoreCore`), the same operations (generators of steps), the same
__init__ and from_env, run by :class:`jobstore.drivers.aio.AsyncDriver` on ``redis.asyncio``
(docs/async.md)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .. import config
from ..connection import asyncio_flavour, connect
from ..dead_letters import DeadLetter
from ..drivers.aio import AsyncDriver
from ..job import Job, JobStatus
from ..store import JobStore
from ..migration.aio import AsyncMigration, open_migration
from ..ops import Op
from ..store_core import Call, StoreCore
from .coalesce import EnqueueCoalescer

T = TypeVar("T")

__all__ = ["open", "open_migration", "AsyncJobStore", "AsyncDriver", "AsyncMigration"]


def open(url: str, strategy: str = "legacy", **options: Any) -> AsyncJobStore:  # noqa: A001
    """Open an asyncio store on ``url``: ``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://``, ``redis+sentinel://`` (redis.asyncio's Sentinel; ``close`` closes
    the sentinels' connections too) or ``memory://`` (a ``memory://name`` is shared with the
    synchronous stores of the process that open the same name). ``options``: as
    :func:`jobstore.open`.
    Nothing is sent to Redis until the first operation is awaited.

    :raises ConfigError: a bad URL, option or option value.
    :raises UnknownStrategy: ``strategy`` is not registered.
    """
    client_options = options.pop("client_options", None)
    client = connect(url, client_options, asyncio_flavour())
    return AsyncJobStore(client, strategy, url=url, **options)


class AsyncJobStore(StoreCore):
    """The asyncio store: every operation of :class:`jobstore.JobStore`, as a coroutine, with
    the same arguments, checks, results and errors (see each method there).

    Bad input raises at once, when the coroutine is awaited, before anything is sent. Use one
    store per event loop; ``async with`` (or ``await store.close()``) releases its connections.
    """

    _driver_class = AsyncDriver
    driver: AsyncDriver
    _asyncio = True  # runs on redis.asyncio clients

    def __init__(self, client: Any, strategy: str = "legacy", **options: Any) -> None:
        """``client``: a ``redis.asyncio`` client (or fakeredis's ``FakeAsyncRedis``);
        ``strategy`` and ``options``: as :class:`jobstore.JobStore`'s, checked by its __init__."""
        JobStore.__init__(self, client, strategy, **options)  # type: ignore[arg-type]
        self._enqueues = EnqueueCoalescer(self)
        self._server_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> AsyncJobStore:
        """As :meth:`jobstore.JobStore.from_env` (the same variables), opening an asyncio store."""
        opened: AsyncJobStore = JobStore.from_env.__func__(cls, environ, **options)  # type: ignore[attr-defined]
        return opened

    @staticmethod
    def _open_url(url: str, strategy: str, **options: Any) -> AsyncJobStore:
        return open(url, strategy, **options)

    # -- operations (each as JobStore's) ---------------------------------------------------------

    async def enqueue(self, workspace_id: str, action: str, params: dict[str, Any] | None = None,
                      *, job_id: str | None = None, ttl: float | None = None) -> Job:
        """:meth:`jobstore.JobStore.enqueue`. Enqueues awaited while another is in flight
        (on standalone Redis) go to Redis together, up to ``coalesce.CHUNK`` in one script call,
        in the order awaited (docs/async.md); each
        keeps its own ``ttl`` (a field of its record)."""
        if self.context.cluster:
            return await self._run(self._call_enqueue(workspace_id, action, params, job_id, ttl))
        job, fields = self._new_job(workspace_id, action, params, job_id,
                                    ttl_ms=config.ttl_ms("ttl", ttl))
        return await self._enqueues.enqueue(self._enqueue_call(job, fields), job, fields)

    async def enqueue_many(self, items: Iterable[Sequence[Any]], *,
                           ttl: float | None = None) -> builtins.list[Job]:
        """:meth:`jobstore.JobStore.enqueue_many`."""
        call = self._call_enqueue_many(items, ttl)
        return [] if call is None else await self._run(call)

    async def get(self, job_id: str, *, workspace_id: str) -> Job | None:
        """:meth:`jobstore.JobStore.get`."""
        return await self._run(self._call_get(job_id, workspace_id))

    async def update_status(self, job_id: str, status: JobStatus | str, *, workspace_id: str,
                            result: Any = None, error: str | None = None,
                            claim: str | None = None, ttl: float | None = None) -> Job:
        """:meth:`jobstore.JobStore.update_status`."""
        return await self._run(self._call_update_status(job_id, status, workspace_id, result,
                                                        error, claim, ttl))

    async def list(self, workspace_id: str, *, status: JobStatus | str | None = None,
                   limit: int = 100, errors: str = "skip") -> builtins.list[Job]:
        """:meth:`jobstore.JobStore.list`."""
        return await self._run(self._call_list(workspace_id, status, limit, errors))

    async def dequeue(self, timeout: float | None = 0, *, lease: float | None = None) -> Job | None:
        """:meth:`jobstore.JobStore.dequeue`: a wait (``timeout``) does not block the loop.

        Cancelled while its claim is in flight (sent, the reply not read), it cannot know whether
        it claimed a job: such a job comes back when its lease runs out, as a vanished worker's
        does. Cancelled as the claim's reply arrives, it hands the job back first (its lease
        ends now). To stop a worker, signal it rather than cancel it (docs/async.md).
        """
        return await self._run(self._call_dequeue(timeout, lease))

    async def extend(self, job: Job, seconds: float | None = None) -> None:
        """:meth:`jobstore.JobStore.extend`."""
        await self._run(self._call_extend(job, seconds))

    async def finish(self, job: Job, status: JobStatus | str = "completed", *, result: Any = None,
                     error: str | None = None, take_next: bool = True,
                     lease: float | None = None, ttl: float | None = None) -> Job | None:
        """:meth:`jobstore.JobStore.finish`; cancelled, its next job is as :meth:`dequeue`'s."""
        return await self._run(self._call_finish(job, status, result, error, take_next, lease,
                                                 ttl))

    async def leave_legacy_queue(self, batch: int = 1000) -> dict[str, int]:
        """:meth:`jobstore.JobStore.leave_legacy_queue`."""
        return await self._run(self._call_leave_legacy_queue(batch))

    async def dead_letters(self, limit: int = 100) -> builtins.list[DeadLetter]:
        """:meth:`jobstore.JobStore.dead_letters`."""
        return await self._run(self._call_dead_letters(limit))

    async def delete(self, job_id: str, *, workspace_id: str) -> bool:
        """:meth:`jobstore.JobStore.delete`."""
        return await self._run(self._call_delete(job_id, workspace_id))

    async def sweep(self, batch: int = 500, *, max_entries: int | None = None,
                    max_seconds: float | None = None) -> dict[str, int]:
        """:meth:`jobstore.JobStore.sweep`."""
        return await self._run(self._call_sweep(batch, max_entries, max_seconds))

    def migration(self) -> AsyncMigration:
        """The :class:`jobstore.migration.aio.AsyncMigration` between this ``dual`` store's
        schemas, on the store's connections (:meth:`jobstore.JobStore.migration`).

        :raises ConfigError: the store's strategy is not ``dual``.
        """
        return AsyncMigration(self.client, **self._migration_options())

    async def close(self) -> None:
        """Release the store's connections (once the enqueues under way have their answers)."""
        await self._enqueues.close()
        await self.driver.close()
        await self.client.aclose()

    async def __aenter__(self) -> AsyncJobStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncJobStore {self.url} strategy={self.strategy.describe()}>"

    async def _run(self, call: Call[T]) -> T:
        """Run a checked call (the server check first, until it passes), as JobStore._run."""
        with self._observed(call):
            if not self._eviction_checked:
                await self._check_server()
            claims = call.name in ("dequeue", "finish")
            return await self.driver.run(call.op, give_back=self._give_back if claims else None)

    async def _check_server(self) -> None:
        """The server check, one at a time (as JobStore._check_eviction): concurrent first
        calls wait for the one under way, and send nothing of their own once it passed."""
        loop = asyncio.get_running_loop()
        if self._server_lock is None or self._server_lock[0] is not loop:
            self._server_lock = (loop, asyncio.Lock())  # (an asyncio.Lock serves one loop)
        async with self._server_lock[1]:
            if not self._eviction_checked:
                await self.driver.run(self._server_check(), plain=True)
                self._eviction_checked = True

    def _give_back(self, result: Any) -> Op[None] | None:
        """The operation that hands back the job a cancelled dequeue or finish had claimed as
        the task was cancelled: its lease ends now, so the next dequeue hands it out again at
        once (as any job whose lease ran out: ``attempts`` + 1, or ``failed`` once it had had
        ``max_attempts`` hand-outs). None: nothing was claimed."""
        if isinstance(result, Job) and result.claim:
            return self._writes.extend(self.context, result, 0)
        return None

