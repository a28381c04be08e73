"""The phases of benchmarks/peers.py, one function per library and phase.

Every runner takes a :class:`Ctx` (the server, N, the concurrency) and a :class:`Window`, sets up
and warms up, calls ``window.begin()`` right before the timed part and ``window.end(done)`` right
after it (with ``at=`` when the library tells when the N-th job finished earlier than the call
returns, or ``seconds=`` when another process timed it), then tears down. The window reads the
server's CPU time and command counts at both ends. A runner raises :class:`Skip` when its library
cannot run here. The peers are imported here only inside their runners: none is a dependency of
jobstore.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

import jobstore
from bench import new_record

WORKSPACES = [f"ws{i}" for i in range(20)]
PREFIX = "bench"
QUEUE = "bench"  # the queue name every peer uses (its own keys around it)
THREADS = 8  # the sync libraries' concurrent enqueue: threads of one process
WARM_UP = 20  # enqueues before an enqueue phase's timed part: connections, script cache


class Skip(Exception):
    """This library, or this phase of it, cannot run here (the message says why)."""


@dataclass
class Ctx:
    url: str
    n: int
    concurrency: int
    cache_dir: Path


@dataclass
class Window:
    """One timed part: wall time, the server's CPU time (``INFO cpu``: used_cpu_user +
    used_cpu_sys) and its command counts (``INFO commandstats``) before and after."""

    client: redis.Redis
    seconds: float = 0.0
    done: int = 0
    redis_cpu: float = 0.0
    commands: dict[str, int] = field(default_factory=dict)
    _started: float = 0.0
    _before: tuple[float, dict[str, int]] = (0.0, {})

    def read(self) -> tuple[float, dict[str, int]]:
        cpu = self.client.info("cpu")
        stats = self.client.info("commandstats")
        return (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
                {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})

    def begin(self) -> None:
        self._before = self.read()
        self._started = time.perf_counter()

    def end(self, done: int, *, at: float | None = None, seconds: float | None = None) -> None:
        ended = time.perf_counter()
        cpu, commands = self.read()
        self.seconds = seconds if seconds is not None else (at or ended) - self._started
        self.done = done
        self.redis_cpu = cpu - self._before[0]
        # The window's own INFO calls are left out; every other command is the library's.
        self.commands = {name: calls - self._before[1].get(name, 0)
                         for name, calls in commands.items()
                         if name != "info" and calls > self._before[1].get(name, 0)}


def noop(*args: Any, **kwargs: Any) -> None:
    """The job every peer runs: nothing."""


# -- jobstore, sync -------------------------------------------------------------------------

def js_open(ctx: Ctx) -> jobstore.JobStore:
    return jobstore.open(ctx.url, "legacy", prefix=PREFIX)


def js_enqueue(ctx: Ctx, w: Window) -> None:
    store = js_open(ctx)
    try:
        for i in range(WARM_UP):
            store.enqueue(WORKSPACES[i % 20], "noop", {"warm": i})
        w.begin()
        for i in range(ctx.n):
            store.enqueue(WORKSPACES[i % 20], "noop", {"i": i})
        w.end(ctx.n)
    finally:
        store.close()


def js_enqueue_threads(ctx: Ctx, w: Window) -> None:
    store = js_open(ctx)
    try:
        for i in range(WARM_UP):
            store.enqueue(WORKSPACES[i % 20], "noop", {"warm": i})

        def part(first: int) -> int:
            for i in range(first, ctx.n, THREADS):
                store.enqueue(WORKSPACES[i % 20], "noop", {"i": i})
            return len(range(first, ctx.n, THREADS))

        with ThreadPoolExecutor(THREADS) as pool:
            w.begin()
            done = sum(pool.map(part, range(THREADS)))
            w.end(done)
    finally:
        store.close()


def js_seed(ctx: Ctx) -> None:
    store = js_open(ctx)
    try:
        for start in range(0, ctx.n, 100):
            store.enqueue_many([(WORKSPACES[i % 20], "noop", {"i": i})
                                for i in range(start, min(ctx.n, start + 100))])
    finally:
        store.close()


def js_worker(ctx: Ctx, w: Window, finish: bool) -> None:
    """``concurrency`` threads, each: dequeue, run the no-op, then ``update_status(completed,
    claim=...)`` and dequeue again, or (``finish``) ``store.finish(job)``, which also claims the
    next job; until the queue is empty."""
    if finish and not hasattr(jobstore.JobStore, "finish"):
        raise Skip("this jobstore has no JobStore.finish")
    js_seed(ctx)
    store = js_open(ctx)

    def loop(_: int) -> int:
        count = 0
        job = store.dequeue(timeout=0)
        while job is not None:
            noop()
            count += 1
            if finish:
                job = store.finish(job)
            else:
                store.update_status(job.job_id, "completed", workspace_id=job.workspace_id,
                                    claim=job.claim)
                job = store.dequeue(timeout=0)
        return count

    try:
        with ThreadPoolExecutor(ctx.concurrency) as pool:
            w.begin()
            done = sum(pool.map(loop, range(ctx.concurrency)))
            w.end(done)
    finally:
        store.close()


# -- jobstore.aio -----------------------------------------------------------------------------

async def aio_open(ctx: Ctx) -> Any:
    try:
        from jobstore import aio  # type: ignore[attr-defined]
    except ImportError as exc:
        raise Skip(f"jobstore.aio is not importable here ({exc})") from None
    opener = getattr(aio, "open", None)
    if opener is None:
        raise Skip("jobstore.aio has no open()")
    store = opener(ctx.url, "legacy", prefix=PREFIX)
    return await store if inspect.isawaitable(store) else store


async def aio_close(store: Any) -> None:
    for name in ("aclose", "close"):
        close = getattr(store, name, None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result
            return


async def _aio_enqueue(ctx: Ctx, w: Window, tasks: int) -> None:
    store = await aio_open(ctx)
    try:
        for i in range(WARM_UP):
            await store.enqueue(WORKSPACES[i % 20], "noop", {"warm": i})

        async def part(first: int) -> None:
            for i in range(first, ctx.n, tasks):
                await store.enqueue(WORKSPACES[i % 20], "noop", {"i": i})

        w.begin()
        await asyncio.gather(*(part(t) for t in range(tasks)))
        w.end(ctx.n)
    finally:
        await aio_close(store)


async def _aio_worker(ctx: Ctx, w: Window) -> None:
    store = await aio_open(ctx)
    finish = hasattr(store, "finish")
    js_seed(ctx)  # the same records and queue the async store reads

    async def loop() -> int:
        count = 0
        job = await store.dequeue(timeout=0)
        while job is not None:
            noop()
            count += 1
            if finish:
                job = await store.finish(job)
            else:
                await store.update_status(job.job_id, "completed", workspace_id=job.workspace_id,
                                          claim=job.claim)
                job = await store.dequeue(timeout=0)
        return count

    try:
        w.begin()
        done = sum(await asyncio.gather(*(loop() for _ in range(ctx.concurrency))))
        w.end(done)
    finally:
        await aio_close(store)


def aio_enqueue(ctx: Ctx, w: Window) -> None:
    asyncio.run(_aio_enqueue(ctx, w, 1))


def aio_enqueue_tasks(ctx: Ctx, w: Window) -> None:
    asyncio.run(_aio_enqueue(ctx, w, ctx.concurrency))


def aio_worker(ctx: Ctx, w: Window) -> None:
    asyncio.run(_aio_worker(ctx, w))


# -- raw redis-py: the floor of an enqueue ------------------------------------------------------

def raw_enqueue(ctx: Ctx, w: Window) -> None:
    """The record jobstore writes (bench.py's ``new_record``: the same 10 fields), ``HSET`` and
    ``LPUSH`` of its queue entry in one ``MULTI``: what a hand-written enqueue costs."""
    client = redis.Redis.from_url(ctx.url, decode_responses=True)

    def one(i: int) -> None:
        ws = WORKSPACES[i % 20]
        job_id, fields = new_record(ws, i, {})
        pipe = client.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}:jobs:{job_id}", mapping=fields)
        pipe.lpush(f"{PREFIX}:queue", f"{ws}:{job_id}:{fields['created_at']}")
        pipe.execute()

    try:
        for i in range(WARM_UP):
            one(i)
        w.begin()
        for i in range(ctx.n):
            one(i)
        w.end(ctx.n)
    finally:
        client.close()


# -- RQ ---------------------------------------------------------------------------------------

RQ_FUNC = "benchmarks.peers_runners.noop"


def _rq() -> Any:
    try:
        import rq
    except ImportError:
        raise Skip("rq is not installed (pip install rq)") from None
    return rq


def rq_enqueue(ctx: Ctx, w: Window, threads: int = 1) -> None:
    rq = _rq()
    client = redis.Redis.from_url(ctx.url)
    queue = rq.Queue(QUEUE, connection=client)
    try:
        for i in range(WARM_UP):
            queue.enqueue(RQ_FUNC, i)

        def part(first: int) -> int:
            for i in range(first, ctx.n, threads):
                queue.enqueue(RQ_FUNC, i)
            return len(range(first, ctx.n, threads))

        with ThreadPoolExecutor(threads) as pool:
            w.begin()
            done = sum(pool.map(part, range(threads)))
            w.end(done)
    finally:
        client.close()


def rq_enqueue_threads(ctx: Ctx, w: Window) -> None:
    rq_enqueue(ctx, w, THREADS)


def _rq_work(url: str) -> None:
    rq = _rq()
    client = redis.Redis.from_url(url)
    rq.SimpleWorker([rq.Queue(QUEUE, connection=client)], connection=client).work(
        burst=True, logging_level="WARNING")


def rq_worker(ctx: Ctx, w: Window) -> None:
    """``SimpleWorker`` (runs each job in its own process, no fork per job), in burst mode;
    concurrency 8 is 8 of them in processes of their own: RQ runs one job at a time per worker."""
    rq = _rq()
    client = redis.Redis.from_url(ctx.url)
    queue = rq.Queue(QUEUE, connection=client)
    try:
        for start in range(0, ctx.n, 1000):
            queue.enqueue_many([rq.Queue.prepare_data(RQ_FUNC, (i,))
                                for i in range(start, min(ctx.n, start + 1000))])
        if ctx.concurrency == 1:
            w.begin()
            _rq_work(ctx.url)
        else:
            fork = multiprocessing.get_context("fork")
            workers = [fork.Process(target=_rq_work, args=(ctx.url,))
                       for _ in range(ctx.concurrency)]
            w.begin()
            for process in workers:
                process.start()
            for process in workers:
                process.join()
        w.end(queue.finished_job_registry.count)
    finally:
        client.close()


# -- arq --------------------------------------------------------------------------------------

async def arq_noop(ctx: Any, *args: Any) -> None:
    """arq's job: nothing (arq runs coroutines)."""


async def _arq_pool(ctx: Ctx) -> Any:
    try:
        from arq import create_pool
        from arq.connections import RedisSettings
    except ImportError:
        raise Skip("arq is not installed (pip install --no-deps arq: docs/performance.md)") from None
    return await create_pool(RedisSettings.from_dsn(ctx.url))


async def _arq_enqueue(ctx: Ctx, w: Window, tasks: int) -> None:
    pool = await _arq_pool(ctx)
    try:
        for i in range(WARM_UP):
            await pool.enqueue_job("noop", i)

        async def part(first: int) -> None:
            for i in range(first, ctx.n, tasks):
                await pool.enqueue_job("noop", i)

        w.begin()
        await asyncio.gather(*(part(t) for t in range(tasks)))
        w.end(ctx.n)
    finally:
        await pool.aclose()


async def _arq_worker(ctx: Ctx, w: Window) -> None:
    from arq.worker import Worker, func
    pool = await _arq_pool(ctx)
    for start in range(0, ctx.n, 100):
        await asyncio.gather(*(pool.enqueue_job("noop", i)
                               for i in range(start, min(ctx.n, start + 100))))
    finished: dict[str, Any] = {"done": 0, "at": None}

    async def after(_: Any) -> None:
        finished["done"] += 1
        if finished["done"] == ctx.n:
            finished["at"] = time.perf_counter()

    # poll_delay 0: arq takes jobs by polling, at most one job per poll for a worker with one
    # free slot, and its default 0.5 s between polls would cap concurrency 1 at 2 jobs/s. At 0 it
    # polls again at once (more Redis commands per job, counted as arq's).
    worker = Worker(functions=[func(arq_noop, name="noop")], redis_pool=pool, burst=True,
                    max_jobs=ctx.concurrency, handle_signals=False, after_job_end=after,
                    poll_delay=0)
    try:
        w.begin()
        await worker.async_run()
        w.end(worker.jobs_complete, at=finished["at"])
    finally:
        await worker.close()


def arq_enqueue(ctx: Ctx, w: Window) -> None:
    asyncio.run(_arq_enqueue(ctx, w, 1))


def arq_enqueue_tasks(ctx: Ctx, w: Window) -> None:
    asyncio.run(_arq_enqueue(ctx, w, ctx.concurrency))


def arq_worker(ctx: Ctx, w: Window) -> None:
    asyncio.run(_arq_worker(ctx, w))


# -- SAQ --------------------------------------------------------------------------------------

async def saq_noop(ctx: Any, **kwargs: Any) -> None:
    """SAQ's job: nothing."""


async def _saq_queue(ctx: Ctx) -> Any:
    try:
        import saq
    except ImportError:
        raise Skip("saq is not installed (pip install saq)") from None
    queue = saq.Queue.from_url(ctx.url, name=QUEUE)
    await queue.connect()
    return queue


async def _saq_enqueue(ctx: Ctx, w: Window, tasks: int) -> None:
    queue = await _saq_queue(ctx)
    try:
        for i in range(WARM_UP):
            await queue.enqueue("saq_noop", i=i)

        async def part(first: int) -> None:
            for i in range(first, ctx.n, tasks):
                await queue.enqueue("saq_noop", i=i)

        w.begin()
        await asyncio.gather(*(part(t) for t in range(tasks)))
        w.end(ctx.n)
    finally:
        await queue.disconnect()


async def _saq_worker(ctx: Ctx, w: Window) -> None:
    import saq
    queue = await _saq_queue(ctx)
    for start in range(0, ctx.n, 100):
        await asyncio.gather(*(queue.enqueue("saq_noop", i=i)
                               for i in range(start, min(ctx.n, start + 100))))
    finished: dict[str, Any] = {"done": 0, "at": None}

    async def after(_: Any) -> None:
        finished["done"] += 1
        if finished["done"] == ctx.n:
            finished["at"] = time.perf_counter()

    # Burst mode: the worker stops once the queue is empty (a dequeue that waited 0.2 s for
    # nothing); the time ends at the N-th job's after_process, not at that wait.
    # Its stop cancels the dequeues still waiting, with a warning each time: not news here.
    logging.getLogger("saq").setLevel(logging.ERROR)
    worker = saq.Worker(queue, functions=[saq_noop], concurrency=ctx.concurrency, burst=True,
                        dequeue_timeout=0.2, max_burst_jobs=ctx.n, after_process=after)
    try:
        w.begin()
        await worker.start()
        w.end(finished["done"], at=finished["at"])
    finally:
        await queue.disconnect()


def saq_enqueue(ctx: Ctx, w: Window) -> None:
    asyncio.run(_saq_enqueue(ctx, w, 1))


def saq_enqueue_tasks(ctx: Ctx, w: Window) -> None:
    asyncio.run(_saq_enqueue(ctx, w, ctx.concurrency))


def saq_worker(ctx: Ctx, w: Window) -> None:
    asyncio.run(_saq_worker(ctx, w))
