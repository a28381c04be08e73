"""The migration engine: phases, rollout, backfill, verify, cleanup."""

from __future__ import annotations

import time

import pytest

import jobstore
from tests.conftest import keys
from jobstore import MigrationRefused
from jobstore.migration import Migration, MigrationInterrupted
from jobstore.phases import Phase, Rollout, refusal
from jobstore.testing import FakeClock

# The core real-Redis tests: .ci/run runs them on every supported server build too.
pytestmark = pytest.mark.core


@pytest.fixture
def env(make_store):
    """A legacy store with 40 jobs, a dual store over it, and its Migration on a fake clock."""

    class Env:
        legacy = make_store("legacy")
        jobs = legacy.enqueue_many([(f"ws{i % 4}", "a", {"i": i}) for i in range(40)])
        clock = FakeClock(tick=0)
        migration = Migration(legacy.client, clock=clock, wait=clock.wait)

        @staticmethod
        def dual(**options):
            return jobstore.JobStore(Env.legacy.client, "dual", **options)

        @staticmethod
        def to(*phases):
            for phase in phases:
                Env.migration.set_phase(phase)

    return Env


def source_and_target_keys(store):
    client = store.client
    return keys(client, "ai:jobs:*"), keys(client, "ai:job:*")


def snapshot(client):
    return {key: client.dump(key) for key in keys(client)}


# -- phases ------------------------------------------------------------------------------------


def test_dual_default_phase_is_read_target_until_one_is_stored(env):
    assert env.migration.state().phase is Phase.READ_TARGET and not env.migration.state().stored
    store = env.dual()
    store.get("x", workspace_id="ws0")
    assert store.strategy.phase is Phase.READ_TARGET


def test_running_stores_follow_a_switch_within_a_second_without_restart(backend):
    store = jobstore.open(backend, "dual")
    migration = store.migration()
    store.enqueue("ws", "a", job_id="before")
    assert store.client.exists("ai:job:ws:before")  # read-target writes both
    migration.set_phase("off")  # returns once every store has had time to follow
    store.enqueue("ws", "a", job_id="after")
    assert store.strategy.phase is Phase.OFF
    assert store.client.exists("ai:jobs:after") and not store.client.exists("ai:job:ws:after")


def test_skipping_phases_is_refused(env):
    env.to("off")
    with pytest.raises(MigrationRefused, match="skips phases"):
        env.migration.set_phase("read-target")
    assert env.migration.state().phase is Phase.OFF


def test_target_only_needs_a_clean_verify_after_dual_writes_began(env):
    env.to("off")
    env.migration.verify()  # clean or not, it ran before dual writes: it proves nothing
    env.to("dual-write")
    with pytest.raises(MigrationRefused, match="clean verify"):
        env.migration.set_phase("read-target")  # the target missed the writes made in 'off'
    env.migration.set_phase("read-target", force=True, reason="test")
    with pytest.raises(MigrationRefused, match="clean verify"):
        env.migration.set_phase("target-only")
    env.migration.backfill()
    assert env.migration.verify().clean
    env.to("target-only")


def test_target_only_needs_the_whole_rollout(env):
    env.to("off", "dual-write")
    env.migration.backfill()
    env.migration.verify()
    env.to("read-target")
    env.migration.set_rollout(percent=100, deny=["ws1"])
    with pytest.raises(MigrationRefused, match="rollout"):
        env.migration.set_phase("target-only")


def test_leaving_target_only_needs_a_reverse_sync(env):
    env.to("off", "dual-write")
    env.migration.backfill()
    env.migration.verify()
    env.to("read-target", "target-only")
    new = env.dual().enqueue("ws0", "written-in-target-only")
    assert not env.legacy.client.exists(f"ai:jobs:{new.job_id}")
    with pytest.raises(MigrationRefused, match="reverse sync"):
        env.migration.set_phase("read-target")
    report = env.migration.reverse_sync()
    assert report.counts.get("copied") == 1
    env.to("read-target")
    with pytest.raises(MigrationRefused, match="missed the writes"):
        env.migration.set_phase("dual-write")
    env.migration.reverse_sync()
    env.to("dual-write", "off")
    assert env.legacy.get(new.job_id, workspace_id="ws0").action == "written-in-target-only"


def test_a_target_only_job_the_source_layout_cannot_hold_keeps_the_rollback_refused(env):
    """In target-only over legacy, ids are scoped like the target's: a job whose id another
    workspace holds in the legacy layout cannot go back there, and a rollback would lose it."""
    env.to("off", "dual-write")
    env.migration.backfill()
    env.migration.verify()
    env.to("read-target", "target-only")
    taken = env.jobs[0]
    with pytest.raises(jobstore.JobExists):  # while the legacy record stands, its id is taken
        env.dual().enqueue("ws1", "same id, other workspace", job_id=taken.job_id)
    env.migration.cleanup()  # now ws0's job is only in the target, under its workspace
    clash = env.dual().enqueue("ws1", "same id, other workspace", job_id=taken.job_id)
    assert env.dual().get(taken.job_id, workspace_id="ws1") == clash
    report = env.migration.reverse_sync()
    assert report.finished and report.counts.get("foreign") == 1
    with pytest.raises(MigrationRefused, match="could not write 1 target job"):
        env.migration.set_phase("read-target")
    assert env.dual().delete(taken.job_id, workspace_id="ws1")
    assert env.migration.reverse_sync().counts.get("foreign") is None
    env.to("read-target")
    assert env.dual().get(taken.job_id, workspace_id="ws0") == env.legacy.get(taken.job_id, workspace_id="ws0")


@pytest.mark.parametrize("same_content", [True, False])
def test_an_id_held_only_by_the_target_stays_taken_after_the_rollback(env, same_content):
    """Found by the conformance kit on a cluster: a job written in target-only is in the target
    alone; back in read-target, enqueuing its id again must raise JobExists and write nothing."""
    env.to("off", "dual-write")
    env.migration.backfill()
    env.migration.verify()
    env.to("read-target", "target-only")
    env.migration.reverse_sync()
    job = env.dual().enqueue("ws0", "late", job_id="late")  # after the reverse sync: target only
    env.to("read-target")  # allowed: a sync ran in target-only; the source has a gap
    action = "late" if same_content else "other"
    before = snapshot(env.legacy.client)
    with pytest.raises(jobstore.JobExists):
        env.dual().enqueue("ws0", action, job_id="late")
    after = snapshot(env.legacy.client)
    assert {k for k in after if not k.startswith("ai:op:")} == {k for k in before if not k.startswith("ai:op:")}
    assert not env.legacy.client.exists("ai:jobs:late")
    assert env.dual().get("late", workspace_id="ws0") == job


def test_force_switches_loudly_and_is_logged(env):
    env.to("off")
    state = env.migration.set_phase("target-only", force=True, reason="incident 42")
    assert state.phase is Phase.TARGET_ONLY
    entry = env.migration.log(1)[0]
    assert entry["forced"] is True and entry["reason"] == "incident 42" and entry["refusal"]


def test_unknown_phase_is_an_error(env):
    with pytest.raises(jobstore.InvalidArgument, match="sideways") as info:
        env.migration.set_phase("sideways")
    assert info.value.argument == "phase" and isinstance(info.value, (ValueError, jobstore.JobStoreError))
    with pytest.raises(jobstore.ConfigError, match="phase 'sideways'"):  # a strategy option
        jobstore.open("memory://", "dual", phase="sideways")


# -- rollout -----------------------------------------------------------------------------------


def test_rollout_is_sticky_and_only_grows():
    workspaces = [f"w{n}" for n in range(2000)]
    previous: set[str] = set()
    for percent in (0, 1, 5, 25, 50, 90, 100):
        included = {w for w in workspaces if Rollout(percent).includes("legacy:workspace", w)}
        assert previous <= included
        assert abs(len(included) - 20 * percent) <= 100  # about percent% of 2000
        previous = included
    assert Rollout(0, allow=frozenset({"w1"})).includes("m", "w1")
    assert not Rollout(100, allow=frozenset({"w1"}), deny=frozenset({"w1"})).includes("m", "w1")


def test_read_target_routing_follows_the_rollout(env):
    env.to("off", "dual-write")
    env.migration.backfill()
    env.migration.verify()
    env.to("read-target")
    env.migration.set_rollout(percent=0, allow=["ws1"])
    store = env.dual()
    store.enqueue("ws1", "a", job_id="j1")
    store.enqueue("ws2", "a", job_id="j2")
    for job_id, ws in (("j1", "ws1"), ("j2", "ws2")):
        store.client.hset(f"ai:job:{ws}:{job_id}", "action", "target")
    assert store.get("j1", workspace_id="ws1").action == "target"
    assert store.get("j2", workspace_id="ws2").action == "a"  # still reads the source


@pytest.mark.parametrize("call, argument", [
    (lambda m: m.set_rollout(allow="acme"), "allow"),  # a str, not a list: not its letters
    (lambda m: m.set_rollout(deny="acme"), "deny"),
    (lambda m: m.set_rollout(allow=5), "allow"),
    (lambda m: m.set_rollout(percent="abc"), "percent"),
    (lambda m: m.set_rollout(percent="50"), "percent"),
    (lambda m: m.set_rollout(percent=float("nan")), "percent"),
    (lambda m: m.set_rollout(percent=True), "percent"),
    (lambda m: m.log(limit=0), "limit"),
    (lambda m: m.log(limit=-1), "limit"),
    (lambda m: m.log(limit="5"), "limit"),
])
def test_bad_rollout_and_log_arguments_are_refused_before_redis(call, argument):
    # Port 1: nothing listens, so a call that sent anything would raise StoreUnavailable.
    migration = jobstore.open_migration("redis://127.0.0.1:1/0")
    with pytest.raises(jobstore.InvalidArgument, match=argument) as caught:
        call(migration)
    assert caught.value.argument == argument


def test_a_rollout_allows_lists_of_workspaces(env):
    env.to("off", "dual-write")
    state = env.migration.set_rollout(percent=10, allow=("ws1",), deny={"ws2"})
    assert (state.rollout.allow, state.rollout.deny) == ({"ws1"}, {"ws2"})
    assert [entry["event"] for entry in env.migration.log(limit=1)] == ["rollout"]


# -- shadow reads ------------------------------------------------------------------------------


def test_dual_write_shadow_reads_count_mismatches_and_return_the_source(env):
    env.to("off", "dual-write")
    store = env.dual()
    job = store.enqueue("ws0", "a")
    assert store.get(job.job_id, workspace_id="ws0") == job and not store.events.mismatches
    store.client.hset(f"ai:job:ws0:{job.job_id}", "action", "drifted")
    assert store.get(job.job_id, workspace_id="ws0").action == "a"
    (mismatch,) = store.events.mismatches
    assert (mismatch.job_id, mismatch.fields) == (job.job_id, ("action",))


# -- backfill ----------------------------------------------------------------------------------


def test_backfill_copies_every_field_and_ttl_and_is_refused_in_off(env):
    env.to("off")
    with pytest.raises(MigrationRefused, match="dual writes"):
        env.migration.backfill()
    first = env.jobs[0]
    env.legacy.client.hset(f"ai:jobs:{first.job_id}", "written_by", "old-code")
    env.legacy.client.expire(f"ai:jobs:{first.job_id}", 3600)
    env.to("dual-write")
    report = env.migration.backfill(batch=7)
    assert report.finished and report.counts == {"copied": 40}
    assert env.legacy.client.hgetall(f"ai:job:ws0:{first.job_id}") == env.legacy.client.hgetall(
        f"ai:jobs:{first.job_id}"
    )
    assert 3500 < env.legacy.client.ttl(f"ai:job:ws0:{first.job_id}") <= 3600
    again = env.migration.backfill()
    assert again.counts == {"exists": 40} and not again.resumed


def taken_over(client, job):
    """Give ``job`` two copies in the same status that differ by one write: the source's first
    hand-out (2 writes), and the target's take-over by a second worker (3 writes). Only the
    write counts tell which copy is newer: the status ties, and in dual-write the source is the
    copy read first (the authority on a tie)."""
    base = {**client.hgetall(f"ai:jobs:{job.job_id}"), "status": "running"}
    entry = f"{job.workspace_id}:{job.job_id}:{base['created_at']}"
    source = {**base, "attempts": "1", "claim": f"first:{entry}", "_rev": "2"}
    target = {**base, "attempts": "2", "claim": f"second:{entry}", "_rev": "3"}
    client.hset(f"ai:jobs:{job.job_id}", mapping=source)
    client.hset(f"ai:job:{job.workspace_id}:{job.job_id}", mapping=target)
    return target


def test_backfill_never_overwrites_a_newer_target_record(env):
    env.to("off", "dual-write")
    job = env.jobs[0]
    # Newer by one write, and in the same status: the status tie-break cannot decide.
    target = taken_over(env.legacy.client, job)
    report = env.migration.backfill()
    assert report.counts == {"copied": 39, "exists": 1}
    assert env.legacy.client.hgetall(f"ai:job:ws0:{job.job_id}") == target


def test_repair_keeps_the_copy_with_more_writes_in_both(env):
    env.to("off", "dual-write")
    env.migration.backfill()
    job = env.jobs[0]
    target = taken_over(env.legacy.client, job)
    report = env.migration.verify(repair=True)
    assert (report.target_newer, report.repaired) == (1, 1)
    client = env.legacy.client
    assert client.hgetall(f"ai:job:ws0:{job.job_id}") == target
    assert client.hgetall(f"ai:jobs:{job.job_id}") == target
    assert env.migration.verify().clean


def test_update_status_writes_only_the_copies_that_exist(env):
    """A dual store whose phase writes both copies updates the one copy a job has: it never
    creates the other (a copy is the backfill's to make, with the whole record)."""
    client = env.legacy.client
    only_source = env.jobs[0]  # enqueued while the phase was off: no target copy yet
    store = env.dual(phase="read-target")  # writes both copies
    only_target = store.enqueue("ws1", "a", job_id="only-target")
    client.delete("ai:jobs:only-target")  # e.g. cleaned up, or lost
    for job in (only_source, only_target):
        store.update_status(job.job_id, "running", workspace_id=job.workspace_id)
        assert store.get(job.job_id, workspace_id=job.workspace_id).status == "running"
    assert client.hget(f"ai:jobs:{only_source.job_id}", "status") == "running"
    assert not client.exists(f"ai:job:{only_source.workspace_id}:{only_source.job_id}")
    assert client.hget("ai:job:ws1:only-target", "status") == "running"
    assert not client.exists("ai:jobs:only-target")
    # Another workspace's record at the id-keyed key is no copy of this job: left as it was.
    other = store.enqueue("ws2", "a", job_id="shared-id")
    client.delete("ai:job:ws2:shared-id")
    client.hset("ai:job:ws3:shared-id", mapping={**other.to_hash(), "workspace_id": "ws3"})
    before = client.hgetall("ai:jobs:shared-id")
    store.update_status("shared-id", "running", workspace_id="ws3")
    assert client.hgetall("ai:jobs:shared-id") == before
    assert not client.exists("ai:job:ws2:shared-id")
    with pytest.raises(jobstore.JobNotFound):
        store.update_status("shared-id", "running", workspace_id="ws4")
    assert not client.exists("ai:job:ws4:shared-id")


def test_a_copy_never_revives_a_job_deleted_meanwhile(env):
    """The copy script re-reads the source at copy time: a deleted job stays deleted."""
    from jobstore.scripts import SYNC_RECORD

    if env.migration.driver.cluster:
        pytest.skip("one script over both copies: standalone only (see tests/cluster/test_cluster.py)")
    job = env.jobs[0]
    script = env.legacy.client.register_script(SYNC_RECORD.source)
    env.legacy.delete(job.job_id, workspace_id="ws0")
    outcome = script(keys=[f"ai:jobs:{job.job_id}", f"ai:job:ws0:{job.job_id}", "ai:index:{ws0}"],
                     args=["ws0", job.job_id, "copy", "0"])
    assert outcome == "gone" and not env.legacy.client.exists(f"ai:job:ws0:{job.job_id}")


def test_backfill_dry_run_changes_nothing(env):
    env.to("off", "dual-write")
    before = snapshot(env.legacy.client)
    report = env.migration.backfill(dry_run=True)
    assert report.counts == {"copied": 40} and report.dry_run
    assert snapshot(env.legacy.client) == before


def test_backfill_dry_run_is_allowed_before_dual_writes(env):
    assert env.migration.backfill(dry_run=True).counts == {"copied": 40}


def test_backfill_resumes_from_its_checkpoint_after_an_interruption(env):
    env.to("off", "dual-write")
    calls = []

    def crash_once_some_are_copied(step, done, total, counts):
        # (not after a count of batches: on Cluster a node's first SCAN pages may be empty)
        calls.append(done)
        assert total == 40
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        env.migration.backfill(batch=5, progress=crash_once_some_are_copied)
    partial = len(keys(env.legacy.client, "ai:job:*"))
    assert 0 < partial < 40
    report = env.migration.backfill(batch=5)
    assert report.resumed and report.finished
    assert len(keys(env.legacy.client, "ai:job:*")) == 40
    assert sum(report.counts.values()) >= 40 - partial


def test_backfill_rate_is_throttled(env, monkeypatch):
    env.to("off", "dual-write")
    clock = FakeClock(start=time.monotonic(), tick=0)
    env.migration.timer = clock  # what the pace is measured on
    monkeypatch.setattr(time, "sleep", clock.wait)  # a throttle's pause, slept for real
    env.migration.backfill(batch=5, rate=20)
    assert 1.0 < sum(clock.waits) <= 2.001  # 40 records at 20/s: 2 s at most, less the time spent


# -- verify ------------------------------------------------------------------------------------


def test_verify_finds_missing_differing_and_orphaned_records_and_repair_converges(env):
    env.to("off", "dual-write")
    env.migration.backfill()
    a, b, c = env.jobs[:3]
    client = env.legacy.client
    client.delete(f"ai:job:{a.workspace_id}:{a.job_id}")                    # missing
    client.hset(f"ai:job:{b.workspace_id}:{b.job_id}", "action", "edited")  # differing
    client.delete(f"ai:jobs:{c.job_id}")                                    # orphaned
    report = env.migration.verify(examples=5)
    assert (report.missing, report.differing, report.orphaned) == (1, 1, 1)
    assert not report.clean and report.problems == 3
    assert report.examples["missing"][0]["job_id"] == a.job_id
    assert report.examples["differing"][0]["fields"] == ["action"]
    assert report.examples["orphaned"][0]["job_id"] == c.job_id
    repaired = env.migration.verify(repair=True)
    assert repaired.repaired == 3
    final = env.migration.verify()
    assert final.clean and final.checked_source == 40 and final.same == 40
    assert client.exists(f"ai:jobs:{c.job_id}")  # nothing is deleted by a repair


def test_verify_sample(env):
    env.to("off", "dual-write")
    report = env.migration.verify(sample=5)
    assert report.sampled and report.checked_source == 5 and report.missing == 5


def test_a_sampled_verify_does_not_allow_target_only(env):
    env.to("off", "dual-write")
    env.migration.backfill()
    assert env.migration.verify(sample=5).clean
    env.migration.set_phase("read-target", force=True, reason="test")  # a sample proves nothing
    with pytest.raises(MigrationRefused):
        env.migration.set_phase("target-only")


def test_unroutable_legacy_records_are_reported(env):
    env.legacy.client.hset("ai:jobs:orphan-no-ws", mapping={"job_id": "orphan-no-ws", "status": "pending"})
    env.to("off", "dual-write")
    assert env.migration.backfill().counts["unroutable"] == 1
    report = env.migration.verify()
    assert report.unroutable == 1 and report.problems == 1
    assert report.examples["unroutable"] == [{
        "workspace_id": None, "job_id": "orphan-no-ws", "key": "ai:jobs:orphan-no-ws",
        "other_key": None, "fields": ["workspace_id"]}]


@pytest.mark.parametrize("damage", ["removed", "unusable"])
def test_a_record_that_lost_its_workspace_after_the_backfill_is_one_problem(env, damage):
    """4 faults, 5 problems: the target copy of an unroutable record was counted again
    as orphaned, and no key was shown for the unroutable one."""
    env.to("off", "dual-write")
    env.migration.backfill()
    client = env.legacy.client
    a, b, c, d = env.jobs[:4]
    if damage == "removed":
        client.hdel(f"ai:jobs:{a.job_id}", "workspace_id")
    else:
        client.hset(f"ai:jobs:{a.job_id}", "workspace_id", "no spaces allowed")
    client.delete(f"ai:job:{b.workspace_id}:{b.job_id}")                       # missing
    client.hset(f"ai:job:{c.workspace_id}:{c.job_id}", "action", "edited")     # differing
    client.delete(f"ai:jobs:{d.job_id}")                                       # orphaned
    report = env.migration.verify(batch=7)
    assert (report.unroutable, report.missing, report.differing, report.orphaned) == (1, 1, 1, 1)
    assert report.problems == 4
    assert report.examples["unroutable"] == [{
        "workspace_id": None, "job_id": a.job_id, "key": f"ai:jobs:{a.job_id}",
        "other_key": f"ai:job:{a.workspace_id}:{a.job_id}", "fields": ["workspace_id"]}]
    assert [e["key"] for e in report.examples["orphaned"]] == [f"ai:job:{d.workspace_id}:{d.job_id}"]
    # --repair does not guess a workspace: the unroutable record and its copy stay as they are
    repaired = env.migration.verify(repair=True)
    assert repaired.repaired == 3 and repaired.unroutable == 1
    assert client.hget(f"ai:jobs:{a.job_id}", "workspace_id") in (None, "no spaces allowed")
    assert client.exists(f"ai:job:{a.workspace_id}:{a.job_id}")


def test_set_aside_moves_unroutable_records_whole_and_verify_becomes_clean(env):
    """migration.md advised leaving unroutable records in the source, where verify could never
    be clean."""
    client = env.legacy.client
    wide = {"job_id": "no-ws", "status": "pending", "params": "caf\u00e9 \u2603", "extra": "x" * 3000}
    client.hset("ai:jobs:no-ws", mapping=wide)
    client.pexpire("ai:jobs:no-ws", 900_000)
    client.hset("ai:jobs:bad-ws", mapping={"job_id": "bad-ws", "workspace_id": "a b"})
    env.to("off", "dual-write")
    env.migration.backfill()
    assert env.migration.verify().unroutable == 2
    before = snapshot(client)
    dry = env.migration.set_aside(dry_run=True)
    assert dry.counts == {"set-aside": 2} and snapshot(client) == before
    report = env.migration.set_aside(batch=3)
    assert report.counts == {"set-aside": 2} and report.scanned == 42
    moved = {m["key"]: m["to"] for m in report.moved}
    assert sorted(moved) == ["ai:jobs:bad-ws", "ai:jobs:no-ws"]
    assert not client.exists("ai:jobs:no-ws", "ai:jobs:bad-ws")
    assert client.hgetall(moved["ai:jobs:no-ws"]) == wide
    assert 0 < client.pttl(moved["ai:jobs:no-ws"]) <= 900_000
    assert keys(client, "ai:jobs:*") == sorted(f"ai:jobs:{j.job_id}" for j in env.jobs)
    assert env.migration.verify().clean
    env.to("read-target")
    assert env.migration.set_aside().counts == {}  # nothing left to move; nothing moved twice
    listed = env.migration.set_aside_records()
    assert [(r["key"], r["record_key"], r["workspace_id"]) for r in listed] == [
        (moved["ai:jobs:bad-ws"], "ai:jobs:bad-ws", "a b"), (moved["ai:jobs:no-ws"], "ai:jobs:no-ws", None)]
    assert all(isinstance(r["set_aside_at"], float) for r in listed)


def test_a_record_set_aside_can_be_fixed_and_put_back(env):
    client = env.legacy.client
    client.hset("ai:jobs:no-ws", mapping={"job_id": "no-ws", "action": "a", "status": "pending",
                                          "created_at": "1700000000.0"})
    env.to("off", "dual-write")
    (moved,) = env.migration.set_aside().moved
    client.hset("ai:jobs:no-ws", mapping={"job_id": "no-ws", "workspace_id": "ws9"})  # a new one
    with pytest.raises(MigrationRefused, match="holds a record again"):
        env.migration.restore_aside(moved["to"])
    assert client.exists(moved["to"])
    client.delete("ai:jobs:no-ws")
    client.hset(moved["to"], "workspace_id", "ws1")
    assert env.migration.restore_aside(moved["to"]) == "restored"
    assert env.migration.restore_aside(moved["to"]) == "in-place"  # sent again: recognised
    assert env.migration.set_aside_records() == []
    env.migration.backfill()
    assert env.migration.verify().clean
    assert env.dual().get("no-ws", workspace_id="ws1").action == "a"


def test_a_key_set_aside_twice_keeps_both_records(env):
    client = env.legacy.client
    env.to("off", "dual-write")
    client.hset("ai:jobs:twice", mapping={"job_id": "twice", "n": "1"})
    first = env.migration.set_aside().moved[0]["to"]
    client.hset("ai:jobs:twice", mapping={"job_id": "twice", "n": "2"})
    second = env.migration.set_aside().moved[0]["to"]
    assert first != second
    assert (client.hget(first, "n"), client.hget(second, "n")) == ("1", "2")


def test_set_aside_moves_nothing_a_workspace_can_read(env):
    """A record given a usable workspace_id between the scan and the move stays (the script
    checks at that instant); routable records are never touched."""
    client = env.legacy.client
    client.hset("ai:jobs:fixing", mapping={"job_id": "fixing", "status": "pending"})
    env.to("off", "dual-write")
    place = env.migration._place

    def fixed_meanwhile(scan_schema, other, keys, *args, **kwargs):
        placed = yield from place(scan_schema, other, keys, *args, **kwargs)
        if "ai:jobs:fixing" in keys:  # (on a cluster, its primary's scan: not the first, maybe)
            client.hset("ai:jobs:fixing", "workspace_id", "ws1")
        return placed

    env.migration._place = fixed_meanwhile
    assert env.migration.set_aside().counts == {"routable": 1}
    assert client.hgetall("ai:jobs:fixing") == {"job_id": "fixing", "status": "pending",
                                                "workspace_id": "ws1"}
    assert keys(client, "ai:migration:aside:*") == []


@pytest.mark.parametrize("key", ["ai:jobs:x", "ai:migration:aside:{ai:jobs:x}:s:ai:queue",
                                 "ai:migration:aside:{other}:s:ai:jobs:x", 7])
def test_restore_of_a_key_not_set_aside_is_refused_before_redis(env, key):
    with pytest.raises(jobstore.InvalidArgument, match="key"):
        Migration(_unreachable(), clock=env.clock).restore_aside(key)


def _unreachable():
    import redis

    return redis.Redis(port=1, socket_connect_timeout=0.2)


# -- cleanup -----------------------------------------------------------------------------------


def test_cleanup_only_in_target_only_and_only_same_records(env):
    env.to("off", "dual-write")
    with pytest.raises(MigrationRefused, match="target-only"):
        env.migration.cleanup()
    env.migration.backfill()
    env.migration.verify()
    env.to("read-target", "target-only")
    store = env.dual()
    moved_on, tampered = env.jobs[0], env.jobs[1]
    store.update_status(moved_on.job_id, "running", workspace_id=moved_on.workspace_id)
    env.legacy.client.hset(f"ai:job:{tampered.workspace_id}:{tampered.job_id}", "params", "{}")
    before = snapshot(env.legacy.client)
    dry = env.migration.cleanup(dry_run=True)
    assert dry.counts == {"deleted": 39, "kept": 1} and snapshot(env.legacy.client) == before
    report = env.migration.cleanup(batch=6)
    assert report.counts == {"deleted": 39, "kept": 1}
    assert keys(env.legacy.client, "ai:jobs:*") == [f"ai:jobs:{tampered.job_id}"]
    assert store.get(moved_on.job_id, workspace_id=moved_on.workspace_id).status == "running"


def test_status_reports_phase_rules_and_checkpoints(env):
    env.to("off", "dual-write")
    env.migration.backfill()
    assert "clean verify" in env.migration.status()["next"]["read-target"]
    env.migration.verify()
    status = env.migration.status()
    assert status["phase"] == "dual-write" and status["next"]["read-target"] == "allowed"
    backfill = status["checkpoints"]["backfill"]
    assert backfill["finished"] is True and backfill["counts"] == {"copied": 40}
    assert backfill["scanned"] == 40 and backfill["rescans"] == 0
    assert isinstance(backfill["cursors"], dict) and isinstance(backfill["updated_at"], float)
    assert status["verified"] is True and status["verify_failed_at"] is None


# -- gates follow the newest evidence -------------------------------------------------------------


def verified_in_dual_write(env):
    """Backfilled and cleanly verified in dual-write, with the target gap the runbook opens."""
    env.to("off", "dual-write")
    env.migration.backfill()
    assert env.migration.verify().clean


def test_a_verify_that_finds_problems_shuts_the_gates_a_clean_one_opened(env):
    """Records altered, verify said 'not clean', and read-target and target-only were
    both accepted on the strength of the clean verify before it."""
    verified_in_dual_write(env)
    job = env.jobs[0]
    env.legacy.client.hset(f"ai:job:{job.workspace_id}:{job.job_id}", "action", "edited")
    assert env.migration.verify().differing == 1
    with pytest.raises(MigrationRefused, match="newest verify.*not clean.*1 problem"):
        env.migration.set_phase("read-target")
    assert "not clean" in env.migration.status()["next"]["read-target"]
    env.migration.set_phase("read-target", force=True, reason="test")
    with pytest.raises(MigrationRefused, match="newest verify"):
        env.migration.set_phase("target-only")
    # A repair that repaired something is evidence of problems too, until a verify after it.
    assert env.migration.verify(repair=True).repaired == 1
    with pytest.raises(MigrationRefused, match="repaired"):
        env.migration.set_phase("target-only")
    assert env.migration.verify().clean
    env.to("target-only")


def test_a_verify_that_records_problems_while_a_switch_is_decided_stops_the_switch(env):
    """The switch reads the state, decides, then writes: a failing verify recorded between the
    read and the write must stop it, as it would have had it landed first."""
    verified_in_dual_write(env)
    job = env.jobs[0]
    store_state = env.migration._store_state

    def verify_fails_meanwhile(*args, **kwargs):
        env.legacy.client.hset(f"ai:job:{job.workspace_id}:{job.job_id}", "action", "edited")
        assert env.migration.verify().differing == 1
        return store_state(*args, **kwargs)

    env.migration._store_state = verify_fails_meanwhile
    with pytest.raises(MigrationRefused, match="newest verify's verdict, changed"):
        env.migration.set_phase("read-target")
    env.migration._store_state = store_state
    assert env.migration.state().phase.value == "dual-write"
    with pytest.raises(MigrationRefused, match="newest verify.*not clean"):
        env.migration.set_phase("read-target")


def test_a_sample_that_finds_problems_counts_against_and_a_clean_sample_reopens_nothing(env):
    verified_in_dual_write(env)
    job = env.jobs[0]
    target_key = f"ai:job:{job.workspace_id}:{job.job_id}"
    env.legacy.client.delete(target_key)
    assert env.migration.verify(sample=40).missing == 1
    with pytest.raises(MigrationRefused, match="a sample"):
        env.migration.set_phase("read-target")
    env.migration.backfill(restart=True)
    assert env.migration.verify(sample=40).clean  # a sample proves nothing: still shut
    with pytest.raises(MigrationRefused, match="newest verify"):
        env.migration.set_phase("read-target")
    assert env.migration.verify().clean
    env.to("read-target")


def test_a_clean_verify_that_ran_beside_a_failing_one_does_not_count(env):
    """The newest evidence is the failing verify that finished after the clean one started:
    the clean one may have passed a record before it went wrong."""
    verified_in_dual_write(env)
    job = env.jobs[0]
    target_key = f"ai:job:{job.workspace_id}:{job.job_id}"
    side = Migration(env.legacy.client, clock=env.clock, wait=env.clock.wait)
    ran = []

    def meanwhile(step, done, total, counts):
        if not ran:  # while the clean verify runs, another one finds a problem
            ran.append(True)
            env.legacy.client.hset(target_key, "action", "edited")
            assert not side.verify().clean
            env.legacy.client.hset(target_key, "action", "a")

    assert env.migration.verify(batch=5, progress=meanwhile).clean
    assert ran and env.legacy.client.hget(target_key, "action") == "a"
    with pytest.raises(MigrationRefused, match="newest verify"):
        env.migration.set_phase("read-target")
    assert env.migration.verify().clean
    env.to("read-target")


def test_an_interrupted_verify_reports_what_it_found_and_records_it(env):
    verified_in_dual_write(env)
    job = env.jobs[0]
    env.legacy.client.delete(f"ai:job:{job.workspace_id}:{job.job_id}")

    def stop_after_the_source(step, done, total, counts):
        if step == "verify target":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:
        env.migration.verify(batch=50, progress=stop_after_the_source)
    assert isinstance(stopped.value, MigrationInterrupted)
    report = stopped.value.report
    assert report.interrupted and not report.clean and report.missing == 1
    assert report.as_dict()["interrupted"] is True
    with pytest.raises(MigrationRefused, match="interrupted"):
        env.migration.set_phase("read-target")


def test_an_interrupted_verify_that_found_nothing_leaves_the_evidence_as_it_was(env):
    verified_in_dual_write(env)

    def stop(step, done, total, counts):
        raise KeyboardInterrupt

    with pytest.raises(MigrationInterrupted) as stopped:
        env.migration.verify(batch=5, progress=stop)
    assert stopped.value.report.problems == 0 and not stopped.value.report.clean
    env.to("read-target")  # the clean verify before it still counts


def test_a_state_stored_before_failures_were_recorded_still_loads_and_gates(env):
    """An older version's state hash has no verify_failed, verify_failed_note, clean_ticket,
    failed_ticket or verify_ticket: it loads, its clean verify still counts, and the first
    failing verify shuts the gate."""
    verified_in_dual_write(env)
    client = env.legacy.client
    client.hdel(env.migration.state_key, "verify_failed", "verify_failed_note", "clean_ticket",
                "failed_ticket", "verify_ticket")
    state = env.migration.state()
    assert (state.verify_failed, state.clean_ticket, state.failed_ticket) == (0.0, 0, 0)
    assert state.vouched() and refusal(state, Phase.READ_TARGET) is None
    job = env.jobs[0]
    client.hset(f"ai:job:{job.workspace_id}:{job.job_id}", "action", "edited")
    assert not env.migration.verify().clean
    with pytest.raises(MigrationRefused, match="newest verify"):
        env.migration.set_phase("read-target")


def test_a_failure_record_sent_twice_is_the_same_evidence(env):
    """redis-py re-sends a command whose reply was lost: recorded twice, the failure is still
    the newest evidence, and a clean verify started after it opens the gate."""
    verified_in_dual_write(env)
    for _ in range(2):
        env.migration.driver.run(_record_failed(env.migration, "1 problem (missing 1)"))
    state = env.migration.state()
    assert state.contradicted() and state.verify_failed_note == "1 problem (missing 1)"
    with pytest.raises(MigrationRefused, match="missing 1"):
        env.migration.set_phase("read-target")
    assert env.migration.verify().clean
    env.to("read-target")


def _record_failed(migration, note):
    from jobstore.migration import _one
    from jobstore.scripts import RECORD_VERIFY_FAILED
    from jobstore.steps import Batch, Script

    return _one(Batch((Script(RECORD_VERIFY_FAILED, (migration.state_key,),
                              (repr(migration.now()), note)),)))
