"""Concurrent enqueues of one asyncio store, coalesced (docs/async.md#concurrent-enqueues).

An ``enqueue`` awaited while none of the store's is in flight runs as it always did: its own
ENQUEUE script call. One awaited while another is in flight (other tasks of the same loop) waits
for it; then the enqueues that arrived meanwhile go in ENQUEUE calls (the script ``enqueue_many``
sends) of up to ``CHUNK`` jobs, one call at a time, in the order awaited, sent by a task of the
store's own, so that no caller's cancellation cuts the others' call. Each caller gets its own outcome: its job,
``JobExists`` for its id alone, a refusal of its own job's write, or the batch's
``StoreUnavailable`` (retrying with the same ``job_id`` is safe, as for any lost reply: every job
carries its call's own token, and a re-sent batch recognises each job its first attempt wrote).

A caller cancelled before its batch is sent is left out of it (its job is not written); one
cancelled after may still have its job enqueued, as with a lost reply.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..connection import reported
from ..errors import JobExists, NotReplicated
from ..job import Job
from ..ops.writes import enqueue_replies

if TYPE_CHECKING:
    from ..store_core import Call

# At most CHUNK jobs per call, fewer than ENQUEUE_CHUNK: with more callers waiting than one call
# takes, the next call goes out as the one before answers, before its callers run again, and
# Redis runs it while the event loop runs them (their reply, their next enqueue), instead of the
# loop and Redis taking turns; calls still go one at a time, in the order awaited.
CHUNK = 50

# One enqueue waiting for a batch: its job, the record's fields, and where its outcome goes.
Waiting = tuple[Job, dict[str, str], "asyncio.Future[Job]"]


class EnqueueCoalescer:
    """The enqueues of one :class:`jobstore.aio.AsyncJobStore` (one event loop)."""

    def __init__(self, store: Any) -> None:
        """``store``: the AsyncJobStore whose enqueues these are."""
        self.store = store
        self.waiting: list[Waiting] = []
        self.busy = False  # an ENQUEUE call of the store's is in flight
        self.flusher: asyncio.Task[None] | None = None

    async def enqueue(self, call: Call[Job], job: Job, fields: dict[str, str]) -> Job:
        """``call``'s job, enqueued alone or in the batch of the enqueues awaited meanwhile."""
        if not self.busy:
            self.busy = True
            try:
                return await self.store._run(call)
            finally:
                self._next()
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self.waiting.append((job, fields, future))
        with self.store._observed(call):
            return await future

    def _next(self) -> None:
        """The call in flight has ended: send what waits for it, in a task of the store's."""
        if self.waiting:
            self.flusher = asyncio.get_running_loop().create_task(self._flush())
        else:
            self.busy = False

    async def _flush(self) -> None:
        try:
            while self.waiting:
                batch = [w for w in self.waiting[:CHUNK] if not w[2].done()]
                del self.waiting[:CHUNK]
                if batch:
                    await self._send(batch)
        finally:
            self.busy, self.flusher = False, None
            for _, _, future in self.waiting:  # cancelled itself (the loop is closing)
                future.cancel()
            self.waiting.clear()

    async def _send(self, batch: list[Waiting]) -> None:
        store = self.store
        short: NotReplicated | None = None
        try:
            if not store._eviction_checked:
                await store._check_server()
            replies = await store.driver.run(enqueue_replies(
                store.context, [(job, fields) for job, fields, _ in batch], tolerate=False))
        except NotReplicated as exc:  # applied: each caller gets its own outcome on the error
            replies, short = exc.result, exc
        except BaseException as exc:
            for _, _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (job, _, future), reply in zip(batch, replies):
            if not future.done():  # not cancelled meanwhile
                self._settle(future, job, reply, short)

    def _settle(self, future: asyncio.Future[Job], job: Job, reply: Any,
                short: NotReplicated | None) -> None:
        """One caller's outcome, as its own ENQUEUE call would have given it."""
        label = self.store.driver.label
        if isinstance(reply, Exception):
            future.set_exception(reported(reply, label))
        elif reply[0] == "exists":
            future.set_exception(JobExists([job.job_id]))
        elif reply[0] == "error":  # Redis refused this job's write: nothing of it is left
            future.set_exception(self.store.driver.core.refusal(reply[1]))
        elif short is not None:
            future.set_exception(NotReplicated(short.acknowledged, short.wanted,
                                               self.store.driver.wait_timeout, result=job))
        else:
            future.set_result(job)

    async def close(self) -> None:
        """Until the batches under way have their answers."""
        if self.flusher is not None:
            await asyncio.gather(self.flusher, return_exceptions=True)
