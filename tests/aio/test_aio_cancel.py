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
