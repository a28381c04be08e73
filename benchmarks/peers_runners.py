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
from collections.abc import Awaitable, Callable
from typing import Any

import redis

import jobstore
from bench import new_record

WORKSPACES = [f"ws{i}" for i in range(20)]
PREFIX = "bench"
QUEUE = "bench"  # the queue name every peer uses (its own keys around it)
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
    used_cpu_sys), its command counts and their time (``INFO commandstats``: ``calls`` and
    ``usec``, a script's commands counted in its ``EVALSHA`` as well as on their own), and this
    process's CPU time, before and after."""

    client: redis.Redis
    seconds: float = 0.0
    done: int = 0
    redis_cpu: float = 0.0
    client_cpu: float = 0.0
    commands: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)
    _started: float = 0.0
    _client: float = 0.0
    _before: tuple[float, dict[str, int], dict[str, int]] = (0.0, {}, {})

    def read(self) -> tuple[float, dict[str, int], dict[str, int]]:
        cpu = self.client.info("cpu")
        stats = self.client.info("commandstats")
        return (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
                {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()},
                {name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in stats.items()})

    def begin(self) -> None:
        self._before = self.read()
        self._client = time.process_time()
        self._started = time.perf_counter()

    def end(self, done: int, *, at: float | None = None, seconds: float | None = None) -> None:
        ended = time.perf_counter()
        self.client_cpu = time.process_time() - self._client
        cpu, commands, usec = self.read()
        self.seconds = seconds if seconds is not None else (at or ended) - self._started
        self.done = done
        self.redis_cpu = cpu - self._before[0]
        # The window's own INFO calls are left out; every other command is the library's.
        self.commands = {name: calls - self._before[1].get(name, 0)
                         for name, calls in commands.items()
                         if name != "info" and calls > self._before[1].get(name, 0)}
        self.usec = {name: usec[name] - self._before[2].get(name, 0) for name in self.commands}


def noop(*args: Any, **kwargs: Any) -> None:
    """The job every peer runs: nothing."""


def timed_threads(ctx: Ctx, w: Window, one: Callable[[int], Any]) -> None:
    """``one(i)`` for WARM_UP untimed jobs, then for N timed ones from ``ctx.concurrency``
    threads (1: this one)."""
    for i in range(WARM_UP):
        one(-1 - i)

    def part(first: int) -> int:
        for i in range(first, ctx.n, ctx.concurrency):
            one(i)
        return len(range(first, ctx.n, ctx.concurrency))

    with ThreadPoolExecutor(ctx.concurrency) as pool:
        w.begin()
        done = part(0) if ctx.concurrency == 1 else sum(pool.map(part, range(ctx.concurrency)))
        w.end(done)


async def timed_tasks(ctx: Ctx, w: Window, one: Callable[[int], Awaitable[Any]]) -> None:
    """As :func:`timed_threads`, from ``ctx.concurrency`` asyncio tasks."""
    for i in range(WARM_UP):
        await one(-1 - i)

    async def part(first: int) -> None:
        for i in range(first, ctx.n, ctx.concurrency):
            await one(i)

    w.begin()
    await asyncio.gather(*(part(t) for t in range(ctx.concurrency)))
    w.end(ctx.n)


def in_loop(run: Callable[[Ctx, Window], Awaitable[None]]) -> Callable[[Ctx, Window], None]:
    """An async runner as a runner: in an event loop of its own."""
    return lambda ctx, w: asyncio.run(run(ctx, w))


class Countdown:
    """``finished``, a worker's after-job hook (a coroutine function: SAQ runs anything else in
    a thread), counts finished jobs; ``at``: when the N-th finished."""

    def __init__(self, n: int) -> None:
        self.n, self.done, self.at = n, 0, None

    async def finished(self, _: Any) -> None:
        self.done += 1
        if self.done == self.n:
            self.at = time.perf_counter()


def job_args(i: int) -> dict[str, int]:
    return {"i": i} if i >= 0 else {"warm": -1 - i}


# -- jobstore, sync -------------------------------------------------------------------------

def js_open(ctx: Ctx) -> jobstore.JobStore:
    return jobstore.open(ctx.url, "legacy", prefix=PREFIX)


def js_enqueue(ctx: Ctx, w: Window) -> None:
    store = js_open(ctx)
    try:
        timed_threads(ctx, w, lambda i: store.enqueue(WORKSPACES[i % 20], "noop", job_args(i)))
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


async def aio_enqueue(ctx: Ctx, w: Window) -> None:
    store = await aio_open(ctx)
    try:
        await timed_tasks(ctx, w, lambda i: store.enqueue(WORKSPACES[i % 20], "noop", job_args(i)))
    finally:
        await aio_close(store)


async def aio_worker(ctx: Ctx, w: Window) -> None:
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


# -- raw redis-py: the floor of an enqueue ------------------------------------------------------

def raw_enqueue(ctx: Ctx, w: Window) -> None:
    """The record jobstore writes (bench.py's ``new_record``: the same 10 fields), ``HSET`` and
    ``LPUSH`` of its queue entry in one ``MULTI``: what a hand-written enqueue costs."""
    client = redis.Redis.from_url(ctx.url, decode_responses=True)

    def one(i: int) -> None:
        ws = WORKSPACES[i % 20]
        job_id, fields = new_record(ws, abs(i), {})
        pipe = client.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}:jobs:{job_id}", mapping=fields)
        pipe.lpush(f"{PREFIX}:queue", f"{ws}:{job_id}:{fields['created_at']}")
        pipe.execute()

    try:
        timed_threads(ctx, w, one)
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


def rq_enqueue(ctx: Ctx, w: Window) -> None:
    rq = _rq()
    client = redis.Redis.from_url(ctx.url)
    try:
        queue = rq.Queue(QUEUE, connection=client)
        timed_threads(ctx, w, lambda i: queue.enqueue(RQ_FUNC, i))
    finally:
        client.close()


def _rq_work(url: str) -> None:
    rq = _rq()
    client = redis.Redis.from_url(url)
    rq.SimpleWorker([rq.Queue(QUEUE, connection=client)], connection=client).work(
        burst=True, logging_level="WARNING")


def rq_worker(ctx: Ctx, w: Window) -> None:
    """``SimpleWorker`` (runs each job in its own process, no fork per job), in burst mode, in
    1 or 8 processes of their own: RQ runs one job at a time per worker.

    The window ends when RQ's finished-job registry holds N jobs (this process reads its size
    every 20 ms: a ``ZCARD`` counted as RQ's), and the workers are then stopped: a worker that
    has finished its last job can take up to a minute to quit (its pubsub thread's wait), and
    an idle Redis's own CPU time would be counted meanwhile."""
    rq = _rq()
    client = redis.Redis.from_url(ctx.url)
    queue = rq.Queue(QUEUE, connection=client)
    try:
        for start in range(0, ctx.n, 1000):
            queue.enqueue_many([rq.Queue.prepare_data(RQ_FUNC, (i,))
                                for i in range(start, min(ctx.n, start + 1000))])
        workers = [multiprocessing.get_context("fork").Process(target=_rq_work, args=(ctx.url,))
                   for _ in range(ctx.concurrency)]
        w.begin()
        for process in workers:
            process.start()
        done = 0
        while (done := queue.finished_job_registry.count) < ctx.n and any(
                process.is_alive() for process in workers):
            time.sleep(0.02)
        w.end(done)
        for process in workers:
            process.join(timeout=1)
            if process.is_alive():
                process.kill()
                process.join()
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


async def arq_enqueue(ctx: Ctx, w: Window) -> None:
    pool = await _arq_pool(ctx)
    try:
        await timed_tasks(ctx, w, lambda i: pool.enqueue_job("noop", i))
    finally:
        await pool.aclose()


async def arq_worker(ctx: Ctx, w: Window) -> None:
    from arq.worker import Worker, func
    pool = await _arq_pool(ctx)
    for start in range(0, ctx.n, 100):
        await asyncio.gather(*(pool.enqueue_job("noop", i)
                               for i in range(start, min(ctx.n, start + 100))))
    after = Countdown(ctx.n)
    # poll_delay 0: arq takes jobs by polling, at most one job per poll for a worker with one
    # free slot, and its default 0.5 s between polls would cap concurrency 1 at 2 jobs/s. At 0 it
    # polls again at once (more Redis commands per job, counted as arq's).
    worker = Worker(functions=[func(arq_noop, name="noop")], redis_pool=pool, burst=True,
                    max_jobs=ctx.concurrency, handle_signals=False, after_job_end=after.finished,
                    poll_delay=0)
    try:
        w.begin()
        await worker.async_run()
        w.end(worker.jobs_complete, at=after.at)
    finally:
        await worker.close()


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


async def saq_enqueue(ctx: Ctx, w: Window) -> None:
    queue = await _saq_queue(ctx)
    try:
        await timed_tasks(ctx, w, lambda i: queue.enqueue("saq_noop", i=i))
    finally:
        await queue.disconnect()


async def saq_worker(ctx: Ctx, w: Window) -> None:
    import saq
    queue = await _saq_queue(ctx)
    for start in range(0, ctx.n, 100):
        await asyncio.gather(*(queue.enqueue("saq_noop", i=i)
                               for i in range(start, min(ctx.n, start + 100))))
    after = Countdown(ctx.n)
    # Burst mode: the worker stops once the queue is empty (a dequeue that waited 0.2 s for
    # nothing); the time ends at the N-th job's after_process, not at that wait.
    # Its stop cancels the dequeues still waiting, with a warning each time: not news here.
    logging.getLogger("saq").setLevel(logging.ERROR)
    worker = saq.Worker(queue, functions=[saq_noop], concurrency=ctx.concurrency, burst=True,
                        dequeue_timeout=0.2, max_burst_jobs=ctx.n, after_process=after.finished)
    try:
        w.begin()
        await worker.start()
        w.end(after.done, at=after.at)
    finally:
        await queue.disconnect()
