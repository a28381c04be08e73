"""The asyncio store (jobstore.aio): every operation and error as the synchronous store has them,
on the embedded store, a real Redis and a real Redis Cluster; a blocking dequeue that leaves the
loop free; and cancellation at every await point of enqueue, dequeue, update_status and finish."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import jobstore
import jobstore.aio
from jobstore import (InvalidArgument, InvalidIdentifier, InvalidTransition, JobExists,
                      JobNotFound, LeaseLost, StoreUnavailable)
from jobstore.drivers.common import LoadScripts, One, Pipe
from jobstore.ops import finish as ops_finish
from jobstore.steps import Pause
from tests.conftest import keys

STRATEGIES = ["legacy", "workspace", "dual"]


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_operation(backend, strategy):
    async def main():
        async with jobstore.aio.open(backend, strategy) as store:
            job = await store.enqueue("ws", "summarise", {"n": 1}, job_id="j1")
            assert (job.job_id, job.status.value, job.params) == ("j1", "pending", {"n": 1})
            assert await store.get("j1", workspace_id="ws") == job
            assert await store.get("j1", workspace_id="other") is None
            with pytest.raises(JobExists):
                await store.enqueue("ws", "again", job_id="j1")
            many = await store.enqueue_many([("ws", "a", {"i": i}) for i in range(3)])
            assert len(many) == 3 and await store.enqueue_many([]) == []
            assert {j.job_id for j in await store.list("ws")} == {"j1", *(j.job_id for j in many)}
            got = await store.dequeue(timeout=1)
            assert got.job_id == "j1" and got.status.value == "running" and got.claim
            await store.extend(got, 30)
            done = await store.update_status("j1", "completed", workspace_id="ws",
                                             result={"ok": True}, claim=got.claim)
            assert done.result == {"ok": True}
            with pytest.raises(LeaseLost):
                await store.extend(got)
            with pytest.raises(InvalidTransition):
                await store.update_status("j1", "running", workspace_id="ws")
            with pytest.raises(JobNotFound):
                await store.update_status("nope", "cancelled", workspace_id="ws")
            assert [j.job_id for j in await store.list("ws", status="completed")] == ["j1"]
            assert await store.dead_letters() == []
            assert await store.delete("j1", workspace_id="ws") is True
            assert await store.delete("j1", workspace_id="ws") is False
            for _ in many:
                assert (await store.dequeue(timeout=0)).job_id in {j.job_id for j in many}
            assert await store.dequeue(timeout=0) is None

    run(main())
    # What the asyncio store wrote, the synchronous store reads.
    if not backend.startswith("memory"):
        with jobstore.open(backend, strategy) as sync:
            assert sync.get("j1", workspace_id="ws") is None
            assert len(sync.list("ws")) == 3


def test_bad_input_raises_before_anything_is_sent(backend):
    async def main():
        store = jobstore.aio.open(backend, "dual")
        sent = []
        real = store.driver._io

        async def counting(request):
            sent.append(request)
            return await real(request)

        store.driver._io = counting
        with pytest.raises(InvalidIdentifier):
            await store.enqueue("bad id", "a")
        with pytest.raises(InvalidArgument, match="timeout"):
            await store.dequeue(timeout=-1)
        with pytest.raises(InvalidArgument, match="claim"):
            await store.update_status("j1", "completed", workspace_id="ws", claim="")
        with pytest.raises(InvalidArgument, match="limit"):
            await store.list("ws", limit=0)
        with pytest.raises(InvalidArgument, match="job"):
            await store.extend("not a job")
        assert sent == []
        await store.close()

    run(main())


def test_a_waiting_dequeue_leaves_the_loop_free(backend):
    """While a dequeue waits for a job, the same loop (and store) enqueues one: it gets it."""
    async def main():
        async with jobstore.aio.open(backend, "workspace") as store:
            waiting = asyncio.ensure_future(store.dequeue(timeout=30))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            job = await store.enqueue("ws", "late")  # served while the dequeue waits
            got = await waiting
            assert got.job_id == job.job_id

    run(main())


def test_from_env_and_an_unreachable_redis():
    env = {"JOBSTORE_REDIS_URL": "memory://env-test", "AI_JOBS_NEW_SCHEMA": "on"}

    async def main():
        store = jobstore.aio.AsyncJobStore.from_env(env)
        assert isinstance(store, jobstore.aio.AsyncJobStore) and store.strategy.name == "dual"
        await store.enqueue("ws", "a", job_id="j1")
        # memory://env-test is shared with the synchronous stores of the process
        assert jobstore.open("memory://env-test", "dual").get("j1", workspace_id="ws")
        await store.close()
        down = jobstore.aio.open("redis://:hunter2@127.0.0.1:1/0",
                                 client_options={"socket_connect_timeout": 0.5})
        with pytest.raises(StoreUnavailable) as caught:
            await down.get("j1", workspace_id="ws")
        assert "hunter2" not in str(caught.value)
        await down.close()

    run(main())


def test_a_write_that_stalls_past_the_socket_timeout_is_unavailable_and_its_connection_dropped(
        redis_url, monkeypatch):
    """The store's connections bound each write by socket_timeout (in the caller's task, not in
    a task of its own per command): a stalled write ends as StoreUnavailable, the connection is
    dropped (never reused half-written), and the next call goes through."""
    stalling = [True]

    async def main():
        async with jobstore.aio.open(redis_url, "legacy",
                                     client_options={"socket_timeout": 0.2}) as store:
            await store.enqueue("ws", "a", job_id="j1")
            pool = store.client.connection_pool
            drain = asyncio.StreamWriter.drain

            async def stalled(self):  # where every redis-py's write waits for the socket
                if stalling[0]:  # every attempt (redis-py re-sends a timed-out command)
                    await asyncio.sleep(5)
                return await drain(self)

            monkeypatch.setattr(asyncio.StreamWriter, "drain", stalled)
            with pytest.raises(StoreUnavailable, match="Timeout writing"):
                await store.get("j1", workspace_id="ws")
            assert all(not conn.is_connected for conn in pool._available_connections)
            stalling[0] = False
            assert (await store.get("j1", workspace_id="ws")).job_id == "j1"

    run(main())


# -- cancellation ---------------------------------------------------------------------------------

def fixed_tokens(store):
    """The store's context whose tokens come in a fixed order for each operation made with it
    (``ctx.again()`` restarts it): a second run is the same call re-sent, its steps' tokens
    the same as the first run's (what redis-py does when a reply is lost)."""
    counter = [0]

    def token():
        counter[0] += 1
        return f"sametoken{counter[0]:03d}"

    ctx = dataclasses.replace(store.context, new_token=token)
    return ctx, counter


# The driver's requests that wait on Redis or a timer: where a cancellation can land. (Send is
# carried out by those within it; a Tidy, the primaries' names and the like never suspend.)
SUSPENDS = (One, Pipe, LoadScripts, Pause)


async def cancelled_at(store, n, after, make_op):
    """Run ``make_op()``, cancelling its task at its ``n``-th await (the request sent and its
    reply lost when ``after``, else before it is sent); True if it was cancelled."""
    real = store.driver._io
    count = [0]

    async def proxy(request):
        if not isinstance(request, SUSPENDS):
            return await real(request)
        count[0] += 1
        mine = count[0]
        if mine == n and not after:
            asyncio.current_task().cancel()
            await asyncio.sleep(0)
        reply = await real(request)
        if mine == n and after:
            asyncio.current_task().cancel()
            await asyncio.sleep(0)
        return reply

    store.driver._io = proxy
    task = asyncio.ensure_future(store.driver.run(make_op()))
    try:
        await task
        return False
    except asyncio.CancelledError:
        return True
    finally:
        store.driver._io = real


async def awaits_of(store, make_op):
    real = store.driver._io
    count = [0]

    async def counting(request):
        count[0] += isinstance(request, SUSPENDS)
        return await real(request)

    store.driver._io = counting
    try:
        result = await store.driver.run(make_op())
    finally:
        store.driver._io = real
    return count[0], result


CANCEL_BACKENDS = ["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)]


@pytest.fixture(params=CANCEL_BACKENDS)
def cancel_backend(request):
    if request.param == "memory":
        return "memory://cancel"
    return request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")


async def fresh(url):
    store = jobstore.aio.open(url, "dual")
    if url.startswith("memory"):
        await store.client.flushall()
    else:
        with jobstore.open(url, "legacy") as admin:
            for key in keys(admin.client):
                admin.client.delete(key)
    await store.get("warm", workspace_id="ws")  # the server check and the routing state
    return store


@pytest.mark.parametrize("operation", ["enqueue", "dequeue", "update_status"])
def test_a_call_cancelled_at_any_await_loses_nothing_and_is_recognised_when_re_sent(
        cancel_backend, operation):
    async def prepare(store):
        ctx, counter = fixed_tokens(store)

        def again(build):
            def make_op():
                counter[0] = 0
                return build()
            return make_op

        if operation == "enqueue":
            job, fields = store._new_job("ws", "a", {"n": 1}, "j1")
            return again(lambda: store._writes.enqueue(ctx, job, fields))
        await store.enqueue("ws", "a", {"n": 1}, job_id="j1")
        if operation == "dequeue":
            return again(lambda: store._writes.dequeue(ctx, 0, None))
        got = await store.dequeue(timeout=0)
        changes = {"result": '{"ok": 1}'}
        return again(lambda: store._writes.update_status(
            ctx, "j1", "ws", jobstore.JobStatus.COMPLETED, changes, got.claim))

    async def main():
        for _ in range(2):  # the first run may load the scripts (awaits the others do not have)
            store = await fresh(cancel_backend)
            total, expected = await awaits_of(store, await prepare(store))
            await store.close()
        assert total >= 1
        for n in range(1, total + 1):
            for after in (False, True):
                store = await fresh(cancel_backend)
                make_op = await prepare(store)
                assert await cancelled_at(store, n, after, make_op), (n, after)
                # The re-sent call (same token) answers as the uncancelled one did.
                try:
                    again = await store.driver.run(make_op())
                except Exception as exc:
                    raise AssertionError(f"re-sent after a cancel at await {n} "
                                         f"({'after' if after else 'before'} sending): {exc!r}") from exc
                assert again.job_id == "j1", (n, after)
                assert again.status == expected.status and again.params == {"n": 1}
                record = await store.get("j1", workspace_id="ws")
                assert record.status == expected.status and record.params == {"n": 1}
                if operation == "update_status":
                    assert record.result == {"ok": 1}
                if operation == "dequeue":  # its lease, and nothing left in a claim list
                    assert await store.client.zrange(store.keys.leases, 0, -1) == [again.claim]
                if operation == "enqueue":  # queued once: handed out once
                    assert (await store.dequeue(timeout=0)).job_id == "j1"
                assert await store.dequeue(timeout=0) is None, (n, after)  # never twice
                await store.close()

    run(main())


def test_a_finish_cancelled_at_any_await_never_claims_twice_nor_loses_a_job(cancel_backend):
    """finish: the move of the held job, then the claim of the next (one await on standalone
    Redis, each step of both halves on Cluster). Cut at any await, before or after its request
    went out: the held job is finished or still held, the next one pending or claimed by this
    call, nothing else; re-sent (same tokens) it answers as the uncut call did."""
    async def prepare(store):
        ctx, counter = fixed_tokens(store)
        await store.enqueue("ws", "a", {"n": 1}, job_id="j1")
        held = await store.dequeue(timeout=0)
        await store.enqueue("ws", "b", {"n": 2}, job_id="j2")

        def make_op():
            counter[0] = 0
            return ops_finish.finish(ctx, held, jobstore.JobStatus.COMPLETED,
                                     {"result": '{"ok": 1}'}, True)
        return make_op, held

    async def main():
        for _ in range(2):  # the first run may load the scripts (awaits the others do not have)
            store = await fresh(cancel_backend)
            total, expected = await awaits_of(store, (await prepare(store))[0])
            await store.close()
        assert expected.job_id == "j2" and total >= 1
        for n in range(1, total + 1):
            for after in (False, True):
                store = await fresh(cancel_backend)
                make_op, held = await prepare(store)
                assert await cancelled_at(store, n, after, make_op), (n, after)
                first = await store.get("j1", workspace_id="ws")
                second = await store.get("j2", workspace_id="ws")
                assert first.status.value in ("running", "completed"), (n, after)
                assert first.claim == held.claim or first.status.value == "completed"
                assert second.status.value in ("pending", "running"), (n, after)
                if second.status.value == "running":  # claimed by the cut call, not finished
                    assert first.status.value == "completed", (n, after)

                again = await store.driver.run(make_op())

                assert again and (again.job_id, again.status.value) == ("j2", "running"), (n, after)
                first = await store.get("j1", workspace_id="ws")
                assert (first.status.value, first.result) == ("completed", {"ok": 1})
                assert (await store.get("j2", workspace_id="ws")).claim == again.claim
                assert await store.dequeue(timeout=0) is None, (n, after)  # handed out once
                assert await store.client.zrange(store.keys.leases, 0, -1) == [again.claim]
                await store.close()

    run(main())


# -- concurrent enqueues --------------------------------------------------------------------------

def script_calls(url):
    """EVALSHA and EVAL calls the server has run so far (INFO commandstats)."""
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


async def started(coros):
    """Tasks of ``coros``, each run up to its first await: the first one's call in flight, the
    others waiting for it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    await asyncio.sleep(0)
    return tasks


def test_concurrent_enqueues_go_in_one_script_call(redis_url):
    async def main():
        async with jobstore.aio.open(redis_url, "dual") as store:
            await store.get("warm", workspace_id="ws")  # the server check, the routing state
            before = script_calls(redis_url)
            jobs = await asyncio.gather(*(store.enqueue(f"ws{i % 3}", "a", {"i": i})
                                          for i in range(40)))
            # the first alone (nothing was in flight), the 39 awaited meanwhile in one call
            assert script_calls(redis_url) - before == 2
            assert [j.params for j in jobs] == [{"i": i} for i in range(40)]
            for job in jobs:
                assert await store.get(job.job_id, workspace_id=job.workspace_id) == job
            taken = set()
            while (got := await store.dequeue(timeout=0)) is not None:
                taken.add(got.job_id)
            assert taken == {j.job_id for j in jobs}  # each queued once
            before = script_calls(redis_url)
            for i in range(3):  # one at a time: one call each, as before
                await store.enqueue("ws", "a", {"i": i})
            assert script_calls(redis_url) - before == 3

    run(main())


def test_many_concurrent_enqueues_go_in_batches_in_the_order_awaited(redis_url):
    """More callers than a batch holds, on a fresh store (its connections made as the calls go):
    batches of at most CHUNK jobs, one call at a time, so that the queue hands the jobs out in
    the order they were awaited, and of two callers asking for one id the first gets it."""
    from jobstore.aio.coalesce import CHUNK
    from jobstore.ops.writes import outcomes_of

    async def main():
        async with jobstore.aio.open(redis_url, "legacy") as store:
            real = store.driver._io
            under_way, most, sizes = [0], [0], []

            async def counted(request):
                if not isinstance(request, One):
                    return await real(request)
                under_way[0] += 1
                most[0] = max(most[0], under_way[0])
                try:
                    reply = await real(request)
                finally:
                    under_way[0] -= 1
                if reply != ["stale"]:  # a call's outcomes: one per job of it
                    sizes.append(len(outcomes_of(reply)))
                return reply

            store.driver._io = counted
            total = 3 * CHUNK + 7
            results = await asyncio.gather(
                *(store.enqueue("ws", "a", {"i": i}, job_id="dup" if i in (1, total - 1) else None)
                  for i in range(total)), return_exceptions=True)
            store.driver._io = real
            assert isinstance(results[-1], JobExists) and results[1].params == {"i": 1}
            assert most[0] == 1 and max(sizes) == CHUNK and sum(sizes) == total
            taken = []
            while (got := await store.dequeue(timeout=0)) is not None:
                taken.append(got.params["i"])
            assert taken == list(range(total - 1))  # each once, oldest first

    run(main())


def test_each_caller_of_a_batch_gets_its_own_outcome(redis_url):
    async def main():
        async with jobstore.aio.open(redis_url, "legacy", max_record_bytes=2000) as store:
            await store.enqueue("ws", "a", job_id="taken")
            with pytest.raises(jobstore.PayloadTooLarge):  # before it joins any batch
                await store.enqueue("ws", "a", {"x": "y" * 5000})
            results = await asyncio.gather(
                store.enqueue("ws", "a", job_id="first"),
                *(store.enqueue("ws", "a", job_id=name) for name in ("b1", "taken", "b2")),
                return_exceptions=True)
            assert [r.job_id for r in results if isinstance(r, jobstore.Job)] == ["first", "b1", "b2"]
            assert isinstance(results[2], JobExists) and results[2].job_ids == ["taken"]
            assert len(await store.list("ws")) == 4

            # The batch's call fails as a whole: every caller of it gets StoreUnavailable.
            real = store.driver._io
            sent = []

            async def failing(request):
                if isinstance(request, One):
                    sent.append(request)
                    if len(sent) == 2:
                        import redis
                        raise redis.exceptions.ConnectionError("cut")
                return await real(request)

            store.driver._io = failing
            results = await asyncio.gather(
                store.enqueue("ws", "a", job_id="c0"),
                *(store.enqueue("ws", "a", job_id=f"c{i}") for i in range(1, 4)),
                return_exceptions=True)
            store.driver._io = real
            assert results[0].job_id == "c0"
            assert all(isinstance(r, StoreUnavailable) for r in results[1:]), results
            # Enqueued again with their ids: each comes back created (nothing was written).
            again = await asyncio.gather(*(store.enqueue("ws", "a", job_id=f"c{i}")
                                           for i in range(1, 4)))
            assert [j.job_id for j in again] == ["c1", "c2", "c3"]

    run(main())


def test_a_batch_re_sent_after_a_lost_reply_recognises_each_job(redis_url):
    async def main():
        async with jobstore.aio.open(redis_url, "dual") as store:
            await store.get("warm", workspace_id="ws")
            real = store.driver._io
            count = [0]

            async def resent(request):  # the batch's reply lost: redis-py sends it again
                if isinstance(request, One):
                    count[0] += 1
                    if count[0] == 2:
                        await real(request)
                return await real(request)

            store.driver._io = resent
            jobs = await asyncio.gather(*(store.enqueue("ws", "a", job_id=f"r{i}")
                                          for i in range(5)))
            assert [j.job_id for j in jobs] == [f"r{i}" for i in range(5)] and count[0] == 2
            store.driver._io = real
            taken = []
            while (got := await store.dequeue(timeout=0)) is not None:
                taken.append(got.job_id)
            assert sorted(taken) == [f"r{i}" for i in range(5)]  # each queued once

    run(main())


def test_cancelling_one_caller_cancels_nor_loses_the_others(redis_url):
    async def main():
        async with jobstore.aio.open(redis_url, "workspace") as store:
            await store.get("warm", workspace_id="ws")
            # A waiting caller cancelled before its batch is sent: left out of it.
            tasks = await started(store.enqueue("ws", "a", job_id=f"w{i}") for i in range(4))
            tasks[2].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[2], asyncio.CancelledError)
            assert [r.job_id for r in results if isinstance(r, jobstore.Job)] == ["w0", "w1", "w3"]
            assert await store.get("w2", workspace_id="ws") is None

            # The caller whose own call is in flight cancelled: the others' batch still goes.
            tasks = await started(store.enqueue("ws", "a", job_id=f"x{i}") for i in range(4))
            tasks[0].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError)
            assert [r.job_id for r in results[1:]] == ["x1", "x2", "x3"]

            # A waiting caller cancelled while its batch is in flight: the batch is answered to
            # the others; the cancelled caller's job was sent, and is enqueued.
            real = store.driver._io
            calls = [0]

            async def cancel_during_batch(request):
                if isinstance(request, One):
                    calls[0] += 1
                    if calls[0] == 2:
                        tasks[1].cancel()
                return await real(request)

            store.driver._io = cancel_during_batch
            tasks = await started(store.enqueue("ws", "a", job_id=f"y{i}") for i in range(4))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            store.driver._io = real
            assert isinstance(results[1], asyncio.CancelledError)
            assert [results[0].job_id, results[2].job_id, results[3].job_id] == ["y0", "y2", "y3"]
            assert (await store.get("y1", workspace_id="ws")).status.value == "pending"
            taken = set()
            while (got := await store.dequeue(timeout=0)) is not None:
                taken.add(got.job_id)
            assert taken == {"w0", "w1", "w3", "x1", "x2", "x3", "y0", "y1", "y2", "y3"} | (
                {"x0"} if await store.get("x0", workspace_id="ws") else set())

    run(main())
