"""Retention: a finished job's records expire after its ttl on every copy (set with the final
move, once), pending and running jobs never do, migrations carry the remaining time, verify
takes expiring copies for what they are and reports copies that expire apart
(test_retention_pruning: what expired records leave behind). Expiries are read with PTTL; the
few tests that need a record to really expire use ttls of a fraction of a second."""

from __future__ import annotations

import time

import pytest

import jobstore
from jobstore import ConfigError, InvalidArgument, JobStatus
from jobstore.migration import Migration
from jobstore.ops import calls
from jobstore.steps import Batch
from jobstore.testing import FakeClock
from tests.support.aio import FLAVOURS

both = pytest.mark.parametrize("flavour", FLAVOURS)  # the sync store and the asyncio one
WS = "acme"
HOUR = 3600.0
# Every layout a job can have copies in: (strategy, options)
LAYOUTS = [("legacy", {}), ("workspace", {}),
           *(("dual", {"phase": phase}) for phase in ("off", "dual-write", "read-target",
                                                       "target-only"))]


def copies(store, job_id: str, workspace_id: str = WS) -> list[str]:
    """The keys of the job's records that exist."""
    known = store.strategy.routing(workspace_id).known
    return [key for key in (s.job_key(workspace_id, job_id) for s in known)
            if store.client.exists(key)]


def pttls(store, job_id: str) -> list[int]:
    return [store.client.pttl(key) for key in copies(store, job_id)]


def gone(store, job_id: str) -> None:
    """The job's records expire now."""
    for key in copies(store, job_id):
        store.client.pexpire(key, 1)
    deadline = time.monotonic() + 5
    while copies(store, job_id) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not copies(store, job_id)


def within(values: list[int], seconds: float) -> bool:
    """Every copy expires within ``seconds``, and not a minute before."""
    return bool(values) and all(seconds * 1000 - 60_000 < v <= seconds * 1000 for v in values)


# -- every copy, in every layout and phase ---------------------------------------------------

@both
@pytest.mark.parametrize("strategy, options", LAYOUTS, ids=lambda v: str(v))
def test_a_final_move_expires_every_copy_and_other_moves_never_do(make_store, strategy, options):
    store = make_store(strategy, finished_ttl=HOUR, **options)
    store.enqueue(WS, "a", job_id="j1")
    held = len(copies(store, "j1"))
    assert held == (2 if options.get("phase") in ("dual-write", "read-target") else 1)
    assert pttls(store, "j1") == [-1] * held
    job = store.dequeue()
    assert job.job_id == "j1" and pttls(store, "j1") == [-1] * held  # running: never
    store.extend(job)
    assert pttls(store, "j1") == [-1] * held
    store.finish(job, result={"ok": 1}, take_next=False)
    assert within(pttls(store, "j1"), HOUR) and len(copies(store, "j1")) == held
    # every copy expires at the same moment
    assert max(pttls(store, "j1")) - min(pttls(store, "j1")) < 1000


def following_store(make_store, **options) -> tuple[jobstore.JobStore, Migration]:
    """A ``dual`` store that reads the stored phase before every call, in ``dual-write``, and
    the migration that switches it."""
    store = make_store("dual", **options)
    ages = iter(range(0, 10**6, 10))
    store.driver.core.monotonic = lambda: next(ages)  # every call reads the phase first
    clock = FakeClock(tick=0)
    migration = Migration(store.client, clock=clock, wait=clock.wait)
    migration.set_phase("dual-write", force=True, reason="test")
    return store, migration


@pytest.mark.parametrize("how", ["update_status", "finish"])
@pytest.mark.parametrize("switch", ["target-only", "off"])
def test_a_final_move_that_updates_one_copy_expires_the_other_too(make_store, switch, how):
    # Both copies are running (dual-write); a forced switch routes the final move to one of
    # them (target-only: the target, a rollback to off: the source). The other one must not
    # outlive it: it would hold the id forever (enqueue, list, verify --repair).
    store, migration = following_store(make_store)
    store.enqueue(WS, "a", job_id="j1")
    job = store.dequeue()
    assert job.job_id == "j1" and pttls(store, "j1") == [-1, -1]
    migration.set_phase(switch, force=True, reason="test")
    if how == "finish":
        store.finish(job, result={"ok": 1}, ttl=HOUR)
    else:
        store.update_status("j1", "completed", workspace_id=WS, claim=job.claim, ttl=HOUR)
    assert len(copies(store, "j1")) == 2
    assert within(pttls(store, "j1"), HOUR)
    assert max(pttls(store, "j1")) - min(pttls(store, "j1")) < 1000


@both
@pytest.mark.parametrize("switch", ["target-only", "off"])
def test_a_job_failed_at_max_attempts_in_a_phase_that_reads_one_copy_expires_both(make_store,
                                                                                 switch):
    # Both copies are running (dual-write) when the phase switches to one that reads one of
    # them; the job's last lease then runs out and a dequeue fails it: that final move updates
    # one copy, and the other must expire with it, as after update_status and finish.
    store = make_store("dual", phase="dual-write", max_attempts=1)
    store.enqueue(WS, "a", job_id="j1", ttl=HOUR)
    job = store.dequeue()
    assert job.job_id == "j1" and pttls(store, "j1") == [-1, -1]
    after = make_store("dual", phase=switch, max_attempts=1)
    store.client.zadd(store.keys.leases, {job.claim: 0})  # its last lease ran out
    assert after.dequeue() is None
    assert after.get("j1", workspace_id=WS).status is JobStatus.FAILED
    assert len(copies(store, "j1")) == 2
    assert within(pttls(store, "j1"), HOUR)
    assert max(pttls(store, "j1")) - min(pttls(store, "j1")) < 1000


def test_the_copy_step_keeps_a_sooner_expiry_and_leaves_others_records_alone(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.enqueue("other", "a", job_id="j2")
    store.client.pexpire("ai:jobs:j1", 60_000)
    (now_s, now_us) = store.client.time()
    at = now_s * 1000 + now_us // 1000 + 3_600_000
    steps = [calls.expire_copy(record=key, workspace_id=WS, expiry=at)
             for key in ("ai:jobs:j1", "ai:job:acme:j1", "ai:jobs:j2", "ai:jobs:none")]
    assert store.driver._do(Batch(tuple(steps))) == [0, 1, 0, 0]
    assert store.driver._do(Batch(tuple(steps))) == [0, 0, 0, 0]  # re-sent: nothing more
    assert 0 < store.client.pttl("ai:jobs:j1") <= 60_000
    assert 3_500_000 < store.client.pttl("ai:job:acme:j1") <= 3_600_000
    assert store.client.pttl("ai:jobs:j2") == -1


@both
@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_every_final_status_expires_and_pending_to_running_does_not(make_store, status):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1", ttl=HOUR)
    store.update_status("j1", "running", workspace_id=WS, ttl=60)  # not final: no expiry
    assert pttls(store, "j1") == [-1, -1]
    store.update_status("j1", status, workspace_id=WS)
    assert within(pttls(store, "j1"), HOUR)


@both
def test_without_any_ttl_a_finished_job_is_kept(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.update_status("j1", "cancelled", workspace_id=WS)
    assert pttls(store, "j1") == [-1, -1]


@both
def test_which_ttl_wins(make_store):
    store = make_store("legacy", finished_ttl=10 * HOUR)
    store.enqueue(WS, "a", job_id="store")
    store.enqueue(WS, "a", job_id="enqueue", ttl=5 * HOUR)
    store.enqueue(WS, "a", job_id="update", ttl=5 * HOUR)
    for job_id in ("store", "enqueue"):
        store.update_status(job_id, "cancelled", workspace_id=WS)
    store.update_status("update", "cancelled", workspace_id=WS, ttl=HOUR)
    assert within(pttls(store, "store"), 10 * HOUR)
    assert within(pttls(store, "enqueue"), 5 * HOUR)
    assert within(pttls(store, "update"), HOUR)
    # the enqueue's ttl is the record's, whichever store finishes it
    other = make_store("legacy")
    other.enqueue(WS, "a", job_id="kept", ttl=2 * HOUR)
    other.update_status("kept", "cancelled", workspace_id=WS)
    assert within(pttls(other, "kept"), 2 * HOUR)


@both
def test_finish_takes_a_ttl(make_store):
    store = make_store("dual", phase="read-target", finished_ttl=10 * HOUR)
    store.enqueue(WS, "a", job_id="j1")
    store.enqueue(WS, "a", job_id="j2")
    nxt = store.finish(store.dequeue(), ttl=HOUR)
    assert within(pttls(store, "j1"), HOUR) and pttls(store, nxt.job_id) == [-1, -1]
    store.finish(nxt, "failed", error="boom", take_next=False)
    assert within(pttls(store, "j2"), 10 * HOUR)


@both
def test_a_job_failed_when_its_last_lease_runs_out_expires(make_store):
    store = make_store("dual", phase="dual-write", finished_ttl=HOUR, max_attempts=1)
    store.enqueue(WS, "a", job_id="j1")
    job = store.dequeue()
    store.client.zadd(store.keys.leases, {job.claim: 0})  # the worker stopped renewing it
    assert store.dequeue() is None
    assert store.get("j1", workspace_id=WS).status is JobStatus.FAILED
    assert within(pttls(store, "j1"), HOUR)


def test_a_job_failed_in_one_copy_when_its_last_lease_runs_out_expires_the_other_on_cluster(
        make_store, backend):
    # Only Redis Cluster's dequeue (one step per copy) gives the copy it did not fail the same
    # expiry; the standalone dequeue script leaves it (docs/retention.md).
    if not backend.startswith("redis+cluster"):
        pytest.skip("Redis Cluster only")
    store, migration = following_store(make_store, finished_ttl=HOUR, max_attempts=1)
    store.enqueue(WS, "a", job_id="j1")
    job = store.dequeue()
    migration.set_phase("target-only", force=True, reason="test")
    store.client.zadd(store.keys.leases, {job.claim: 0})  # the worker stopped renewing it
    assert store.dequeue() is None
    assert store.get("j1", workspace_id=WS).status is JobStatus.FAILED
    assert len(copies(store, "j1")) == 2 and within(pttls(store, "j1"), HOUR)


def each_step_sent_twice(store, op, keys: list[str], far: int) -> object:
    """Run ``op`` sending each step twice (redis-py re-sends a call whose reply was lost);
    between the two sends, those of ``keys`` that expire are given the far expiry ``far``: a
    re-send that expired them afresh would bring them back to their ttl. Its result."""
    reply = None
    try:
        while True:
            step = op.send(reply)
            reply = store.driver._do(step)
            if isinstance(step, Batch):
                for key in keys:
                    if store.client.pttl(key) > 0:
                        store.client.pexpire(key, far)
                reply = store.driver._do(step)
    except StopIteration as done:
        return done.value


@both
def test_a_resent_update_does_not_set_a_fresh_expiry(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    far = 10 ** 9
    op = store._writes.update_status(store.context, "j1", WS, JobStatus.CANCELLED, {},
                                     None, 3_600_000)
    job = each_step_sent_twice(store, op, ["ai:jobs:j1", "ai:job:acme:j1"], far)
    assert job.status is JobStatus.CANCELLED
    assert len(pttls(store, "j1")) == 2 and all(v > far - 60_000 for v in pttls(store, "j1"))


@both
def test_the_enqueue_records_the_ttl_in_the_record(make_store):
    store = make_store("legacy")
    store.enqueue(WS, "a", job_id="j1", ttl=1.5)
    assert store.client.hget("ai:jobs:j1", "_ttl") == "1500"
    assert store.get("j1", workspace_id=WS).status is JobStatus.PENDING  # still reads


@both
@pytest.mark.parametrize("bad", [0, -1, "60", True, float("nan")])
def test_a_bad_ttl_is_refused_before_anything_is_sent(make_store, bad):
    store = make_store("legacy")
    with pytest.raises(InvalidArgument, match="ttl"):
        store.enqueue(WS, "a", job_id="j1", ttl=bad)
    with pytest.raises(InvalidArgument, match="ttl"):
        store.update_status("j1", "cancelled", workspace_id=WS, ttl=bad)
    assert not store.client.exists("ai:jobs:j1")
    with pytest.raises(ConfigError, match="finished_ttl"):
        make_store("legacy", finished_ttl=bad)


def test_from_env_reads_the_retention_options(backend):
    store = jobstore.JobStore.from_env({"JOBSTORE_REDIS_URL": backend,
                                        "JOBSTORE_FINISHED_TTL": "90",
                                        "JOBSTORE_DEAD_LETTER_TTL": "86400"})
    with store:
        assert store.context.finished_ttl_ms == 90_000
        assert store.context.dead_letter_ttl_ms == 86_400_000


@both
def test_a_record_really_expires(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1", ttl=0.2)
    store.update_status("j1", "cancelled", workspace_id=WS)
    time.sleep(0.5)
    assert copies(store, "j1") == [] and store.get("j1", workspace_id=WS) is None


# -- migration ---------------------------------------------------------------------------------

def test_backfill_copies_the_remaining_time_not_a_fresh_one(make_store):
    off = make_store("dual", phase="off")
    off.enqueue(WS, "a", job_id="fresh")
    off.update_status("fresh", "cancelled", workspace_id=WS, ttl=HOUR)
    both = make_store("dual", phase="dual-write")
    both.enqueue(WS, "a", job_id="refreshed")
    off.update_status("refreshed", "cancelled", workspace_id=WS, ttl=HOUR)  # the target missed it
    for job_id in ("fresh", "refreshed"):
        off.client.pexpire(f"ai:jobs:{job_id}", 1_000_000)  # less than the ttl: remaining time
    clock = FakeClock(tick=0)
    migration = Migration(off.client, clock=clock, wait=clock.wait)
    migration.backfill()
    for job_id in ("fresh", "refreshed"):
        target = off.client.pttl(f"ai:job:acme:{job_id}")
        assert 900_000 < target <= off.client.pttl(f"ai:jobs:{job_id}") + 100, job_id


def test_reverse_sync_carries_the_remaining_time(make_store):
    target_only = make_store("dual", phase="target-only")
    target_only.enqueue(WS, "a", job_id="j1")
    target_only.update_status("j1", "cancelled", workspace_id=WS, ttl=HOUR)
    target_only.client.pexpire("ai:job:acme:j1", 1_000_000)
    clock = FakeClock(tick=0)
    Migration(target_only.client, clock=clock, wait=clock.wait).reverse_sync()
    assert 900_000 < target_only.client.pttl("ai:jobs:j1") <= 1_000_000


def test_verify_is_clean_with_expiring_copies_and_not_with_a_lasting_one_missing(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.enqueue(WS, "a", job_id="j2")
    store.update_status("j1", "cancelled", workspace_id=WS, ttl=HOUR)
    clock = FakeClock(tick=0)
    migration = Migration(store.client, clock=clock, wait=clock.wait)
    assert migration.verify().clean
    # the target copy expired a moment before the source's, which is about to
    store.client.delete("ai:job:acme:j1")
    store.client.pexpire("ai:jobs:j1", 1000)
    assert migration.verify().clean
    # a copy that lasts an hour more is missing, expiry or not
    store.client.pexpire("ai:jobs:j1", 3_600_000)
    report = migration.verify()
    assert not report.clean and report.missing == 1


@pytest.mark.parametrize("source_ms, target_ms, fixed", [
    (3_600_000, -1, "target"),              # the target copy lives on without an expiry
    (-1, 3_600_000, "source"),              # the source copy does
    (3_600_000, 36_000_000, "target"),      # both expire, nine hours apart: the sooner wins
    (36_000_000, 3_600_000, "source"),
])
def test_verify_reports_copies_that_expire_apart_and_repair_carries_the_sooner(
        make_store, source_ms, target_ms, fixed):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.enqueue(WS, "a", job_id="kept")
    store.update_status("j1", "cancelled", workspace_id=WS)
    source, target = "ai:jobs:j1", "ai:job:acme:j1"
    for key, ms in ((source, source_ms), (target, target_ms)):
        if ms > 0:
            store.client.pexpire(key, ms)
    clock = FakeClock(tick=0)
    migration = Migration(store.client, clock=clock, wait=clock.wait)
    report = migration.verify()
    assert not report.clean and report.differing == 1 and report.missing == 0
    assert report.examples["differing"][0]["fields"] == ["expiry"]
    assert report.examples["differing"][0]["key"] == source
    assert migration.verify(repair=True).repaired == 1
    sooner = min(ms for ms in (source_ms, target_ms) if ms > 0)
    assert 0 < store.client.pttl(source if fixed == "source" else target) <= sooner
    assert abs(store.client.pttl(source) - store.client.pttl(target)) < 5000
    assert migration.verify().clean
    assert store.client.pttl("ai:jobs:kept") == store.client.pttl("ai:job:acme:kept") == -1


def test_verify_takes_copies_expiring_within_the_grace_for_the_same(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.update_status("j1", "cancelled", workspace_id=WS, ttl=HOUR)
    store.client.pexpire("ai:job:acme:j1", 3_600_000 - 3000)  # written 3 s after the source
    clock = FakeClock(tick=0)
    assert Migration(store.client, clock=clock, wait=clock.wait).verify().clean


def test_the_asyncio_store_takes_the_same_ttls_and_sweeps(backend):
    import asyncio

    import jobstore.aio

    async def main():
        async with jobstore.aio.open(backend, "legacy", finished_ttl=HOUR) as store:
            await store.enqueue(WS, "a", job_id="j1", ttl=2 * HOUR)
            await store.enqueue(WS, "a", job_id="j2")
            await store.update_status("j1", "cancelled", workspace_id=WS)
            job = await store.dequeue()
            await store.finish(job, take_next=False, ttl=3 * HOUR)
            return await store.sweep(batch=10)

    totals = asyncio.run(main())
    store = jobstore.open(backend, "legacy")
    try:
        assert within(pttls(store, "j1"), 2 * HOUR) and within(pttls(store, "j2"), 3 * HOUR)
        assert totals["entries"] >= 2
    finally:
        store.close()


def test_concurrent_asyncio_enqueues_each_keep_their_own_ttl(redis_url):
    """Enqueues awaited together go to Redis in one script call (jobstore.aio.coalesce): each
    job keeps the ttl its own call gave (or none), not its batch neighbour's."""
    import asyncio

    import jobstore.aio
    from tests.aio.test_aio import script_calls

    ttls = [None, HOUR, 2 * HOUR, None, 3 * HOUR]

    async def main():
        async with jobstore.aio.open(redis_url, "dual", phase="dual-write") as store:
            await store.get("warm", workspace_id=WS)  # the server check, the routing state
            before = script_calls(redis_url)
            await asyncio.gather(*(store.enqueue(WS, "a", job_id=f"j{i}", ttl=ttl)
                                   for i, ttl in enumerate(ttls)))
            assert script_calls(redis_url) - before == 2  # the first alone, the rest together
            for i in range(len(ttls)):
                await store.update_status(f"j{i}", "cancelled", workspace_id=WS)

    asyncio.run(main())
    store = jobstore.open(redis_url, "dual", phase="dual-write")
    try:
        for i, ttl in enumerate(ttls):
            if ttl is None:
                assert pttls(store, f"j{i}") == [-1, -1]
            else:
                assert len(pttls(store, f"j{i}")) == 2 and within(pttls(store, f"j{i}"), ttl)
    finally:
        store.close()
