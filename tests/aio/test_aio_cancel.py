"""The asyncio store cancelled: how a cancelled call is reported to the events, and what becomes
of a job a cancelled dequeue or finish had already claimed when its reply arrived."""

from __future__ import annotations

import asyncio

import pytest

import jobstore.aio
from jobstore.events import Events
from jobstore.drivers.common import One, Pipe, Send


class Recorded(Events):
    """What a store told its events: each operation's (name, outcome), each dual write."""

    def __init__(self):
        super().__init__()
        self.operations: list[tuple[str, str]] = []
        self.dual_writes: list[tuple[str, bool]] = []
        self.enqueues: list[str] = []

    def operation(self, name, strategy, workspace_id, outcome, seconds):
        self.operations.append((name, outcome))

    def dual_write(self, workspace_id, succeeded):
        self.dual_writes.append((workspace_id, succeeded))

    def enqueued(self, workspace_id, n=1):
        self.enqueues.append(workspace_id)


def run(coro):
    return asyncio.run(coro)


# -- how a cancelled call is reported -------------------------------------------------------------

def test_a_dequeue_cancelled_while_it_waits_is_reported_as_cancelled(backend):
    events = Recorded()

    async def main():
        async with jobstore.aio.open(backend, "workspace", events=events) as store:
            await store.get("warm", workspace_id="ws")  # the server check, out of the way
            waiting = asyncio.ensure_future(store.dequeue(timeout=30))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

    run(main())
    assert events.operations == [("get", "ok"), ("dequeue", "CancelledError")]


def test_a_cancelled_dual_enqueue_is_no_dual_write_and_no_enqueue():
    """Cut before its write is sent: nothing was written, and the events say nothing was."""
    events = Recorded()

    async def main():
        async with jobstore.aio.open("memory://", "dual", phase="dual-write",
                                     events=events) as store:
            await store.get("warm", workspace_id="ws")

            async def cut(request):
                if isinstance(request, (One, Pipe, Send)):
                    asyncio.current_task().cancel()
                    await asyncio.sleep(0)

            store.driver.hook = cut
            with pytest.raises(asyncio.CancelledError):
                await store.enqueue("ws", "a", job_id="j1")
            store.driver.hook = None
            assert await store.get("j1", workspace_id="ws") is None

    run(main())
    assert ("enqueue", "CancelledError") in events.operations
    assert ("enqueue", "ok") not in events.operations
    assert events.dual_writes == [] and events.enqueues == []


def test_an_interrupt_is_reported_by_its_name_and_raised():
    events = Recorded()

    async def main():
        store = jobstore.aio.open("memory://", "legacy", events=events)

        async def interrupt(request):
            raise KeyboardInterrupt

        store.driver.hook = interrupt
        try:
            await store.get("j1", workspace_id="ws")
        finally:
            store.driver.hook = None
            await store.close()

    with pytest.raises(KeyboardInterrupt):
        run(main())
    assert events.operations == [("get", "KeyboardInterrupt")]


# -- a claim whose reply arrived as the task was cancelled ----------------------------------------

def runs(request, *scripts) -> bool:
    """A request carrying one of these scripts (by name)."""
    calls = request.calls if isinstance(request, Pipe) else (
        (request.call,) if isinstance(request, One) else ())
    return any(getattr(getattr(call, "lua", None), "name", "") in scripts for call in calls)


def cancel_as_the_claim_arrives(store):
    """The task is cancelled as the claim's reply comes back, and the reply is handed over all
    the same (what Python 3.11's asyncio.wait_for, under redis-py's socket timeout, does with a
    cancellation that comes as the read finishes)."""
    real = store.driver._io
    cut = []

    async def proxy(request):
        reply = await real(request)
        if runs(request, "dequeue", "finish") and not cut:
            cut.append(request)
            asyncio.current_task().cancel()
        return reply

    store.driver._io = proxy
    return cut


STANDALONE = ["memory", "redis"]  # on Cluster a claim is several steps: a cut one is in flight


@pytest.fixture(params=STANDALONE)
def standalone(request):
    if request.param == "memory":
        return "memory://"
    return request.getfixturevalue("redis_url")


@pytest.mark.parametrize("operation", ["dequeue", "finish"])
def test_a_job_claimed_as_the_call_is_cancelled_is_handed_out_again_at_once(standalone,
                                                                           operation):
    async def main():
        async with jobstore.aio.open(standalone, "workspace") as store:
            held = None
            if operation == "finish":
                await store.enqueue("ws", "first", job_id="j0")
                held = await store.dequeue(timeout=0)
            await store.enqueue("ws", "a", job_id="j1")
            cut = cancel_as_the_claim_arrives(store)
            call = (store.dequeue(timeout=0) if held is None
                    else store.finish(held, "completed", result={"ok": 1}))
            with pytest.raises(asyncio.CancelledError):
                await asyncio.ensure_future(call)
            assert cut, "the claim was never sent"
            if held is not None:  # the move that came with the claim stands
                assert (await store.get("j0", workspace_id="ws")).status.value == "completed"
            again = await store.dequeue(timeout=0)  # at once, not after the 30 s lease
            assert again is not None and again.job_id == "j1"
            assert again.attempts == 2 and again.status.value == "running"
            assert await store.dequeue(timeout=0) is None

    run(main())


def test_a_handed_back_job_counts_as_a_hand_out():
    """The job given back is one whose lease ran out: with max_attempts=1 it is failed."""
    async def main():
        async with jobstore.aio.open("memory://", "legacy", max_attempts=1) as store:
            await store.enqueue("ws", "a", job_id="j1")
            cancel_as_the_claim_arrives(store)
            with pytest.raises(asyncio.CancelledError):
                await asyncio.ensure_future(store.dequeue(timeout=0))
            assert await store.dequeue(timeout=0) is None
            assert (await store.get("j1", workspace_id="ws")).status.value == "failed"

    run(main())


def test_a_cancelled_call_that_claimed_nothing_hands_nothing_back():
    async def main():
        async with jobstore.aio.open("memory://", "legacy") as store:
            await store.enqueue("ws", "a", job_id="j1")
            running = await store.dequeue(timeout=0)
            sent = []
            real = store.driver._io

            async def proxy(request):
                sent.append(request)
                reply = await real(request)
                asyncio.current_task().cancel()
                return reply

            store.driver._io = proxy
            with pytest.raises(asyncio.CancelledError):  # a read of a running job: no claim
                await asyncio.ensure_future(store.get("j1", workspace_id="ws"))
            with pytest.raises(asyncio.CancelledError):  # an empty queue: nothing claimed
                await asyncio.ensure_future(store.dequeue(timeout=0))
            store.driver._io = real
            assert not any(runs(request, "extend") for request in sent)
            job = await store.get("j1", workspace_id="ws")
            assert (job.status.value, job.claim, job.attempts) == ("running", running.claim, 1)

    run(main())
