"""Retention: a finished job's records expire after its ttl on every copy (set with the final
move, once), pending and running jobs never do, migrations carry the remaining time, verify
takes expiring copies for what they are, and the index, queue and dead letters are pruned of
what expired records leave behind (list, dequeue, sweep). Expiries are read with PTTL; the few
tests that need a record to really expire use ttls of a fraction of a second."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

import jobstore
from jobstore import ConfigError, InvalidArgument, JobStatus
from jobstore.cli import main
from jobstore.migration import Migration
from jobstore.steps import Batch
from tests.support.aio import FLAVOURS
from tests.support.clock import FakeClock

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


# -- the index, the queue, the dead letters --------------------------------------------------

@both
def test_list_skips_and_prunes_jobs_whose_records_are_gone(make_store):
    store = make_store("dual", phase="read-target")
    for i in range(5):
        store.enqueue(WS, "a", job_id=f"j{i}")
    store.update_status("j1", "cancelled", workspace_id=WS)
    store.update_status("j3", "cancelled", workspace_id=WS)
    gone(store, "j1")
    gone(store, "j3")
    index = store.keys.index(WS)
    assert store.client.zcard(index) == 5
    assert [j.job_id for j in store.list(WS, limit=2)] == ["j4", "j2"]
    assert [j.job_id for j in store.list(WS)] == ["j4", "j2", "j0"]
    assert sorted(store.client.zrange(index, 0, -1)) == ["j0", "j2", "j4"]


@both
def test_list_keeps_the_entry_of_a_job_held_in_a_schema_it_does_not_read(make_store):
    store = make_store("dual", phase="off")  # reads the source only
    store.enqueue(WS, "a", job_id="j1")
    record = store.client.hgetall("ai:jobs:j1")
    store.client.delete("ai:jobs:j1")
    store.client.hset("ai:job:acme:j1", mapping=record)  # only the target holds it
    assert store.list(WS) == []
    assert store.client.zscore(store.keys.index(WS), "j1") is not None


@both
def test_the_prune_spares_a_job_enqueued_again_under_the_id(make_store):
    store = make_store("legacy")
    store.enqueue(WS, "a", job_id="j1")
    store.update_status("j1", "cancelled", workspace_id=WS)
    gone(store, "j1")
    index = store.keys.index(WS)
    old = store.client.zscore(index, "j1")
    from jobstore.ops.retention import _prune

    store.enqueue(WS, "again", job_id="j1")  # a new job, a new score
    assert store.driver.run(_prune(index, [("j1", old)])) == 0
    assert store.client.zscore(index, "j1") is not None
    assert [j.action for j in store.list(WS)] == ["again"]


@both
def test_dequeue_drops_queue_entries_of_expired_jobs(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="cancelled")
    store.enqueue(WS, "a", job_id="next")
    store.update_status("cancelled", "cancelled", workspace_id=WS, ttl=HOUR)
    gone(store, "cancelled")
    assert store.dequeue().job_id == "next"
    assert store.client.llen(store.keys.queue) == 0


def test_sweep_prunes_every_index_in_bounded_steps(make_store):
    store = make_store("dual", phase="read-target", finished_ttl=HOUR)
    for ws in ("w1", "w2"):
        store.enqueue_many([(ws, "a", None, f"{ws}-{i}") for i in range(23)])
    for ws in ("w1", "w2"):
        for i in range(0, 23, 2):
            store.update_status(f"{ws}-{i}", "cancelled", workspace_id=ws)
            for key in copies(store, f"{ws}-{i}", ws):
                store.client.delete(key)  # as if expired
    sizes: list[int] = []
    send = store.driver._send

    def recording(calls, tolerate=False):
        sizes.append(len(calls))
        return send(calls, tolerate)

    store.driver._send = recording  # type: ignore[method-assign]
    totals = store.sweep(batch=5)
    assert totals["pruned"] == 24 and totals["indexes"] == 2
    assert store.client.zcard(store.keys.index("w1")) == 11
    assert store.client.zcard(store.keys.index("w2")) == 11
    # a step reads 5 entries: two commands per copy, two copies each
    assert max(sizes) <= 5 * 2 * 2
    assert store.sweep(batch=5)["pruned"] == 0  # nothing left: a second run changes nothing


@both
def test_sweep_gives_jobs_finished_without_a_ttl_the_store_ttl(make_store):
    old = make_store("dual", phase="dual-write")
    old.enqueue(WS, "a", job_id="before")
    old.enqueue(WS, "a", job_id="own", ttl=2 * HOUR)
    old.enqueue(WS, "a", job_id="pending")
    for job_id in ("before",):
        old.update_status(job_id, "cancelled", workspace_id=WS)
    old.client.persist("ai:jobs:own")
    old.client.persist("ai:job:acme:own")
    old.client.hset("ai:jobs:own", "status", "cancelled")
    old.client.hset("ai:job:acme:own", "status", "cancelled")
    store = make_store("dual", phase="dual-write", finished_ttl=HOUR)
    assert store.sweep()["expiring"] == 4
    assert within(pttls(store, "before"), HOUR)
    assert within(pttls(store, "own"), 2 * HOUR)  # its enqueue's ttl wins
    assert pttls(store, "pending") == [-1, -1]


@both
def test_sweep_drops_dead_letters_older_than_their_ttl(make_store):
    store = make_store("legacy", dead_letter_ttl=HOUR)
    now = time.time()
    old = [json.dumps({"at": now - 2 * HOUR, "entry": f"old{i}", "reason": "r"}) for i in range(3)]
    new = [json.dumps({"at": now, "entry": f"new{i}", "reason": "r"}) for i in range(2)]
    store.client.lpush(store.keys.dead, *old, *new)  # newest first
    assert store.sweep(batch=2)["dead_letters"] == 3
    assert [letter.entry for letter in store.dead_letters()] == ["new1", "new0"]
    kept = make_store("legacy")  # no dead_letter_ttl: nothing dropped
    assert kept.sweep()["dead_letters"] == 0 and len(kept.dead_letters()) == 2


def many_indexes(store, workspaces: int = 6, jobs: int = 7) -> int:
    """Workspaces with pending jobs (nothing for a sweep to remove: every run examines what it
    examines); how many index entries they hold."""
    for w in range(workspaces):
        store.enqueue_many([(f"w{w}", "a", None, f"w{w}-{i}") for i in range(jobs)])
    return workspaces * jobs


@both
def test_a_bounded_sweep_resumes_where_the_last_run_stopped(make_store):
    store = make_store("dual", phase="read-target")
    total = many_indexes(store)
    runs = []
    while not (runs and runs[-1]["complete"]):
        runs.append(store.sweep(batch=3, max_entries=10))
        assert len(runs) < 20
    assert all(run["entries"] <= 10 for run in runs)
    # every entry examined once across the runs: none started again from scratch
    assert sum(run["entries"] for run in runs) == total and len(runs) >= total // 10
    assert not runs[0]["resumed"] and all(run["resumed"] for run in runs[1:])
    again = store.sweep(batch=3, max_entries=10)  # a new cycle begins at the start
    assert not again["resumed"] and again["entries"] == 10


@both
def test_a_bounded_sweep_covers_every_index_and_prunes_them_all(make_store):
    store = make_store("dual", phase="dual-write", finished_ttl=HOUR)
    for w in range(5):
        store.enqueue_many([(f"w{w}", "a", None, f"w{w}-{i}") for i in range(4)])
        for i in range(0, 4, 2):
            store.update_status(f"w{w}-{i}", "cancelled", workspace_id=f"w{w}")
            for key in copies(store, f"w{w}-{i}", f"w{w}"):
                store.client.delete(key)  # as if expired
    pruned = 0
    for _ in range(20):
        run = store.sweep(batch=2, max_entries=3)
        pruned += run["pruned"]
        if run["complete"]:
            break
    assert pruned == 10
    assert all(store.client.zcard(store.keys.index(f"w{w}")) == 2 for w in range(5))


def test_a_sweep_stops_at_its_time_bound_and_resumes(make_store):
    store = make_store("legacy")
    total = many_indexes(store, workspaces=4, jobs=5)
    now, send = [0.0], store.driver._send

    def slow(calls, *args):  # each step of an index takes a second
        now[0] += any(getattr(c, "args", ("",))[0] == "ZRANGE" for c in calls)
        return send(calls, *args)

    store.context.timer = lambda: now[0]
    store.driver._send = slow  # type: ignore[method-assign]
    first = store.sweep(batch=2, max_seconds=3)
    assert first["entries"] == 5  # three steps: the first index (2, 2 and 1 entries)
    assert not first["complete"] and 0 < first["entries"] < total
    rest = store.sweep(batch=2)  # no bound: on to the end of the cycle
    assert rest["resumed"] and rest["complete"]
    assert first["entries"] + rest["entries"] == total


def test_a_sweep_beside_another_never_makes_the_next_cycle_skip(make_store):
    """Sweep A stops at its bound in cycle n; meanwhile B completes cycle n and C begins cycle
    n + 1 and stops early. A's late mark belongs to cycle n and must not land: D resumes where
    C stopped, and covers the rest of the cycle."""
    store = make_store("legacy")
    total = many_indexes(store)
    send, seen, done = store.driver._send, [0], []

    def beside(calls, *args):
        if any(getattr(c, "args", ("",))[0] == "ZRANGE" for c in calls):
            seen[0] += 1
            if seen[0] == 2 and not done:
                other = make_store("legacy")
                done.append(other.sweep(batch=3))  # B: the whole cycle
                done.append(other.sweep(batch=3, max_entries=4))  # C: the next cycle's start
        return send(calls, *args)

    store.driver._send = beside  # type: ignore[method-assign]
    a = store.sweep(batch=3, max_entries=20)
    store.driver._send = send  # type: ignore[method-assign]
    b, c = done
    assert b["complete"] and not c["complete"] and c["entries"] == 4 and not a["complete"]
    d = store.sweep(batch=3)
    assert d["resumed"] and d["complete"] and d["entries"] == total - 4


@both
@pytest.mark.parametrize("bad", [{"max_entries": 0}, {"max_entries": 1.5},
                                 {"max_seconds": 0}, {"max_seconds": "1"}, {"batch": 0}])
def test_bad_sweep_bounds_are_refused_before_anything_is_sent(make_store, bad):
    store = make_store("legacy")
    with pytest.raises(InvalidArgument, match=next(iter(bad))):
        store.sweep(**bad)
    assert not store.client.exists(store.keys.sweep)


def test_the_sweep_command(make_store, backend):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.update_status("j1", "cancelled", workspace_id=WS)
    result = CliRunner().invoke(main, ["sweep", "--url", backend, "--finished-ttl", "60",
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["expiring"] == 2
    assert within(pttls(store, "j1"), 60)
    many_indexes(store, workspaces=3, jobs=4)
    outputs = []
    for _ in range(3):
        result = CliRunner().invoke(main, ["sweep", "--url", backend, "--max-entries", "5"])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "stopped at its bound (the next run resumes here)" in outputs[0]
    assert "resumed" in outputs[1] and "reached the end of every index" in outputs[2]


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
    clock = FakeClock()
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
    clock = FakeClock()
    Migration(target_only.client, clock=clock, wait=clock.wait).reverse_sync()
    assert 900_000 < target_only.client.pttl("ai:jobs:j1") <= 1_000_000


def test_verify_is_clean_with_expiring_copies_and_not_with_a_lasting_one_missing(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.enqueue(WS, "a", job_id="j2")
    store.update_status("j1", "cancelled", workspace_id=WS, ttl=HOUR)
    clock = FakeClock()
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
    clock = FakeClock()
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
    clock = FakeClock()
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
