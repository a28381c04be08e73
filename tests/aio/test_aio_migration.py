"""The migration on asyncio (jobstore.migration.aio.AsyncMigration): the whole journey under live
asyncio traffic on the embedded store, a real Redis and a real Redis Cluster; refusals and bad
input as the synchronous migration has them; a backfill cancelled mid-pass that resumes from its
checkpoint; and a pass of many batches that leaves the event loop free."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

import jobstore
import jobstore.aio
from jobstore import InvalidArgument, MigrationRefused
from jobstore.events import Events
from jobstore.migration import MigrationInterrupted, PassReport, VerifyReport
from jobstore.migration.aio import AsyncMigration
from tests.conftest import keys

WORKSPACES = [f"ws{n}" for n in range(4)]
CHECKPOINT = "ai:migration:{legacy:workspace}:backfill"


def run(coro):
    return asyncio.run(coro)


class Recorded(Events):
    """Events that remember what a migration told them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def phase(self, migration: str, phase: str) -> None:
        self.seen.append(("phase", phase))

    def pass_result(self, migration: str, report: PassReport) -> None:
        self.seen.append(("pass", report.step))

    def verify_result(self, migration: str, report: VerifyReport) -> None:
        self.seen.append(("verify", "clean" if report.clean else "not clean"))

    def migration_progress(self, migration, step, done, total, counts) -> None:
        self.seen.append(("progress", step))


class Traffic:
    """A service at work on an asyncio dual store: enqueues, cancels and deletes (a task)."""

    def __init__(self, store: jobstore.aio.AsyncJobStore, seed: int) -> None:
        self.store = store
        self.random = random.Random(seed)
        self.alive: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.operations = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            roll = self.random.random()
            if roll < 0.6 or not self.alive:
                ws = self.random.choice(WORKSPACES)
                job = await self.store.enqueue(ws, "render", {"page": self.random.randint(1, 99)})
                self.alive[job.job_id] = ws
            elif roll < 0.85:
                job_id = self.random.choice(list(self.alive))
                try:
                    await self.store.update_status(job_id, "cancelled",
                                                   workspace_id=self.alive[job_id])
                except (jobstore.InvalidTransition, jobstore.JobNotFound):
                    pass  # a worker claimed it first, or it was cancelled already
            else:
                job_id = self.random.choice(list(self.alive))
                if await self.store.delete(job_id, workspace_id=self.alive.pop(job_id)):
                    self.deleted.add(job_id)
            self.operations += 1
            await asyncio.sleep(0.002)


async def work(store: jobstore.aio.AsyncJobStore, claimed: list[str], stop: asyncio.Event) -> None:
    """Dequeue and complete jobs until ``stop``, then until the queue is empty."""
    while True:
        job = await store.dequeue(timeout=0.05)
        if job is None:
            if stop.is_set():
                return
            continue
        claimed.append(job.job_id)
        try:
            await store.update_status(job.job_id, "completed", workspace_id=job.workspace_id,
                                      claim=job.claim)
        except (jobstore.JobNotFound, jobstore.InvalidTransition, jobstore.LeaseLost):
            pass  # deleted or cancelled by the traffic meanwhile


def test_the_whole_journey_under_live_asyncio_traffic(backend):
    seeded_n = 150 if backend.startswith("memory://") else 400
    events = Recorded()

    async def main():
        async with jobstore.aio.open(backend, "legacy") as legacy, \
                jobstore.aio.open(backend, "dual", events=events) as store, \
                jobstore.aio.open(backend, "dual") as live, \
                jobstore.aio.open(backend, "dual") as worker:
            seeded = await legacy.enqueue_many(
                [(WORKSPACES[n % 4], "seed", {"n": n}) for n in range(seeded_n)])
            migration = store.migration()
            assert isinstance(migration, AsyncMigration)
            await migration.set_phase("off")

            stop_traffic, stop_work = asyncio.Event(), asyncio.Event()
            traffic = Traffic(live, seed=3)
            claimed: list[str] = []
            tasks = [asyncio.create_task(traffic.run(stop_traffic)),
                     asyncio.create_task(work(worker, claimed, stop_work))]

            await migration.set_phase("dual-write")
            seen: list[int] = []
            backfill = await migration.backfill(
                batch=40, progress=lambda step, done, total, counts: seen.append(done))
            assert backfill.finished and backfill.counts.get("copied", 0) > 0
            assert seen and seen == sorted(seen)  # the synchronous progress callback, told
            verify = await migration.verify()
            assert verify.clean, verify.as_dict()
            await migration.set_phase("read-target")
            assert (await migration.set_rollout(percent=50)).rollout.percent == 50
            await migration.set_rollout(percent=100)
            await migration.set_phase("target-only")
            cleanup = await migration.cleanup(batch=40)
            assert cleanup.counts.get("deleted", 0) >= seeded_n // 2
            status = await migration.status()
            assert status["phase"] == "target-only"
            assert status["checkpoints"]["cleanup"]["finished"] is True
            assert [entry["to"] for entry in await migration.log(10)
                    if entry["event"] == "phase"] == ["target-only", "read-target", "dual-write",
                                                      "off"]

            stop_traffic.set()
            await tasks[0]
            stop_work.set()
            await tasks[1]
            assert traffic.operations > 0

            alive = {job.job_id: job.workspace_id for job in seeded}
            alive.update(traffic.alive)
            for job_id in traffic.deleted:
                alive.pop(job_id, None)
            final = await migration.verify()
            assert final.clean and final.checked_source == 0  # the source is empty after cleanup
            return alive, traffic.deleted, claimed

    alive, deleted, claimed = run(main())
    target = jobstore.open(backend, "workspace")
    assert [j for j, ws in alive.items() if target.get(j, workspace_id=ws) is None] == []
    assert [j for j in deleted if any(target.get(j, workspace_id=ws) for ws in WORKSPACES)] == []
    assert [j for j, ws in alive.items()
            if target.get(j, workspace_id=ws).status.value == "pending"] == []
    assert claimed and max(Counter(claimed).values()) == 1  # never handed out twice
    assert keys(target.client, "ai:jobs:*") == []  # no source records are left
    assert ("pass", "backfill") in events.seen and ("pass", "cleanup") in events.seen
    assert ("verify", "clean") in events.seen and ("progress", "backfill") in events.seen
    assert ("phase", "target-only") in events.seen


def test_refusals_and_bad_input_are_the_synchronous_ones(backend):
    async def main():
        async with jobstore.aio.open(backend, "dual") as store:
            await store.enqueue("ws", "a")
            migration = store.migration()
            await migration.set_phase("off", wait=False)
            with pytest.raises(MigrationRefused, match="needs dual writes"):
                await migration.backfill()
            await migration.set_phase("dual-write", wait=False)
            with pytest.raises(MigrationRefused, match="skips phases"):
                await migration.set_phase("target-only", wait=False)
            with pytest.raises(MigrationRefused, match="read-target needs"):
                await migration.set_phase("read-target", wait=False)
            with pytest.raises(MigrationRefused, match="target-only"):
                await migration.cleanup()
            assert (await migration.state()).phase.value == "dual-write"  # nothing switched
            forced = await migration.set_phase("read-target", force=True, reason="test",
                                               wait=False)
            assert forced.phase.value == "read-target"
            assert (await migration.log(1))[0]["forced"] is True

            sent = []
            real = migration.driver._io

            async def counting(request):
                sent.append(request)
                return await real(request)

            migration.driver._io = counting
            for call, argument in [(migration.backfill(batch=0), "batch"),
                                   (migration.reverse_sync(rate=-1), "rate"),
                                   (migration.cleanup(keys_per_call=0), "keys_per_call"),
                                   (migration.verify(sample=0), "sample"),
                                   (migration.set_aside(batch="x"), "batch"),
                                   (migration.set_rollout(percent=101), "percent"),
                                   (migration.restore_aside("ai:jobs:x"), "key")]:
                with pytest.raises(InvalidArgument) as raised:
                    await call
                assert raised.value.argument == argument
            with pytest.raises(ValueError):
                await migration.set_phase("sideways")
            assert sent == []

    run(main())


def test_a_store_without_dual_has_no_migration():
    store = jobstore.aio.open("memory://aio-migration-legacy", "legacy")
    with pytest.raises(jobstore.ConfigError, match="dual"):
        store.migration()


async def seeded_dual_write(url: str, n: int) -> tuple[jobstore.aio.AsyncJobStore, AsyncMigration]:
    legacy = jobstore.aio.open(url, "legacy")
    await legacy.enqueue_many([(WORKSPACES[i % 4], "seed", {"i": i}) for i in range(n)])
    await legacy.close()
    store = jobstore.aio.open(url, "dual")
    migration = store.migration()
    await migration.set_phase("dual-write")
    return store, migration


def test_a_backfill_cancelled_mid_pass_resumes_from_its_checkpoint(backend):
    async def main():
        store, migration = await seeded_dual_write(backend, 600)
        progressed = asyncio.Event()
        told: list[int] = []

        def progress(step, done, total, counts):
            told.append(done)
            if len(told) == 2:
                progressed.set()

        task = asyncio.create_task(migration.backfill(batch=20, progress=progress))
        await progressed.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        checkpoint = await store.client.hgetall(CHECKPOINT)
        checkpoint = {(k.decode() if isinstance(k, bytes) else k):
                      (v.decode() if isinstance(v, bytes) else v) for k, v in checkpoint.items()}
        assert checkpoint["finished"] == "0" and 0 < int(checkpoint["scanned"]) < 600

        report = await migration.backfill(batch=20)
        assert report.resumed and report.finished
        assert report.scanned >= 600  # counted on from the checkpoint: every record once at least
        check = await migration.verify()
        assert check.clean and check.checked_source == check.checked_target == 600
        await store.close()

    run(main())
    legacy, target = jobstore.open(backend, "legacy"), jobstore.open(backend, "workspace")
    for job in legacy.list(WORKSPACES[0], limit=1000):
        assert target.get(job.job_id, workspace_id=job.workspace_id) == job


def test_a_pass_of_many_batches_leaves_the_loop_free(backend):
    """A task of the same loop runs between every two batches of a backfill (and of a verify):
    each step is awaited, none is run to the end in one go."""

    async def main():
        store, migration = await seeded_dual_write(backend, 300)
        ticks = [0]
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks[0] += 1
                await asyncio.sleep(0)

        seen: list[int] = []
        task = asyncio.create_task(ticker())
        report = await migration.backfill(
            batch=20, progress=lambda step, done, total, counts: seen.append(ticks[0]))
        assert report.finished and report.counts == {"copied": 300}
        checked: list[int] = []
        verify = await migration.verify(
            batch=20, progress=lambda step, done, total, counts: checked.append(ticks[0]))
        assert verify.clean
        stop.set()
        await task
        await store.close()
        return seen, checked

    seen, checked = run(main())
    assert len(seen) > 5 and len(checked) > 5
    assert all(later > earlier for earlier, later in zip(seen, seen[1:])), seen
    assert all(later > earlier for earlier, later in zip(checked, checked[1:])), checked


def test_open_migration_and_a_fake_clock(redis_url):
    """``jobstore.aio.open_migration`` opens its own connections (closed by ``async with``);
    an injected clock and plain ``wait`` stand in for the server's time and the real waits."""
    waits: list[float] = []
    now = [1_000_000.0]

    def wait(seconds):
        waits.append(seconds)
        now[0] += seconds

    async def main():
        async with jobstore.aio.open_migration(redis_url) as migration:
            migration.clock, migration.wait = (lambda: now[0]), wait
            state = await migration.set_phase("dual-write")
            assert state.dual_since == 1_000_000.0 + 1.0 and await migration.now() == now[0]
            assert (await migration.backfill()).finished

    run(main())
    assert waits and waits[0] > 1.0  # the switch's wait, on the injected clock


def test_ctrl_c_during_a_pass_reports_what_it_did():
    """A KeyboardInterrupt reaching an asyncio pass raises MigrationInterrupted with its
    report, as the synchronous migration does."""

    async def main():
        store, migration = await seeded_dual_write("memory://aio-migration-ctrl-c", 100)
        told = []

        def progress(step, done, total, counts):
            told.append(done)
            if len(told) == 2:
                raise KeyboardInterrupt

        with pytest.raises(MigrationInterrupted) as raised:
            await migration.backfill(batch=10, progress=progress)
        assert raised.value.report.interrupted and raised.value.report.scanned > 0
        assert (await migration.backfill(batch=10)).resumed
        await store.close()

    run(main())


def test_set_aside_restore_and_reverse_sync_awaited(backend):
    """The calls the journey does not make: an unroutable record set aside, listed and put
    back, and a reverse sync recorded in the state, all awaited."""

    async def main():
        store, migration = await seeded_dual_write(backend, 20)
        await store.client.hset("ai:jobs:no-ws", mapping={"job_id": "no-ws", "status": "pending"})
        await migration.backfill()
        assert (await migration.verify()).unroutable == 1
        report = await migration.set_aside(batch=5)
        assert report.counts == {"set-aside": 1} and report.moved[0]["key"] == "ai:jobs:no-ws"
        (listed,) = await migration.set_aside_records()
        assert listed["record_key"] == "ai:jobs:no-ws" and listed["workspace_id"] is None
        assert (await migration.verify()).clean
        await store.client.hset(listed["key"], "workspace_id", "ws0")
        assert await migration.restore_aside(listed["key"]) == "restored"
        assert await migration.restore_aside(listed["key"]) == "in-place"  # restored already
        assert await store.client.exists("ai:jobs:no-ws") == 1
        synced = await migration.reverse_sync(batch=5)
        assert synced.finished and synced.counts.get("copied-back", 0) == 0
        assert (await migration.state()).reverse_synced > 0
        await store.close()

    run(main())
