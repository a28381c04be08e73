"""No client clock and no order of phases changes what the migration keeps.

Which copy of a job is newer is decided by the records' write counts (``_rev``, written by the
scripts themselves), a deleted job's tombstone names the incarnation it deleted, and the times
that gate a switch are the Redis server's. Each test here skews the clock of the process doing
the writes by minutes, in both directions, or switches phases back and forth the way an
operator under pressure would, and checks the jobs, not the reports.
"""

from __future__ import annotations

import time

import pytest

import jobstore
from jobstore import InvalidTransition, MigrationRefused
from jobstore.migration import Migration
from jobstore.phases import Phase, Rollout
from jobstore.testing import FakeClock

SKEWS = [-600, 600]  # an NTP step, either way


@pytest.fixture
def skew(monkeypatch):
    """``skew(seconds)``: this process's wall clock runs that far from the real one."""
    real = time.time

    def set_skew(seconds: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + seconds)

    return set_skew


def fake_clock_migration(client):
    clock = FakeClock(tick=0)
    return Migration(client, clock=clock, wait=clock.wait)


@pytest.mark.parametrize("offset", SKEWS)
def test_a_completion_by_a_skewed_worker_survives_the_reverse_sync(backend, skew, offset):
    """A worker whose clock runs minutes off completes a job in target-only; the reverse sync
    (then a rollback) keeps its completion and result, whatever the clocks say."""
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    migration.set_phase("dual-write")
    job = dual.enqueue("acme", "summarise", {"doc": 1})
    assert dual.dequeue().job_id == job.job_id  # running, in both copies
    migration.backfill()
    assert migration.verify().clean
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    dual.get("warm", workspace_id="acme")  # follows the switch

    skew(offset)
    worker = jobstore.open(backend, "dual")
    worker.update_status(job.job_id, "completed", workspace_id="acme", result={"words": 120})
    skew(0)

    report = migration.reverse_sync()
    assert report.finished and report.counts.get("merged") == 1, report.as_dict()
    migration.set_phase("read-target")  # the rollback is allowed, and loses nothing
    for strategy in ("legacy", "workspace"):
        seen = jobstore.open(backend, strategy).get(job.job_id, workspace_id="acme")
        assert (seen.status.value, seen.result) == ("completed", {"words": 120}), strategy


@pytest.mark.parametrize("offset", [-60, *SKEWS])
def test_a_job_enqueued_again_under_a_deleted_id_by_a_skewed_host_is_not_deleted(backend, skew, offset):
    """Deleted, then enqueued again under the same id by a host whose clock is behind (or ahead):
    the next backfill must not take the new job for the deleted one (Cluster's tombstones)."""
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    migration.set_phase("dual-write")
    dual.enqueue("acme", "first", job_id="j1")
    assert dual.delete("j1", workspace_id="acme")  # both copies, each leaving a tombstone
    migration.set_phase("off")

    skew(offset)  # written to the source alone: the target's tombstone stays
    again = jobstore.open(backend, "dual").enqueue("acme", "second", job_id="j1")
    skew(0)

    migration.set_phase("dual-write")
    report = migration.backfill()
    assert report.counts.get("copied") == 1, report.as_dict()
    migration.verify(repair=True)
    for strategy in ("legacy", "workspace", "dual"):
        seen = jobstore.open(backend, strategy).get("j1", workspace_id="acme")
        assert seen is not None and seen.action == "second", strategy
    claimed = dual.dequeue()  # the deleted job's queue entry is dropped, the new one's taken
    assert (claimed.job_id, claimed.action, claimed.created_at) == ("j1", "second", again.created_at)
    assert dual.dequeue() is None


@pytest.mark.redis
def test_the_switch_rules_use_the_servers_clock_not_the_callers(redis_url, skew):
    """A verify run before dual writes began, from a host whose clock is 10 minutes ahead, must
    not count as 'after dual writes began'."""
    legacy = jobstore.open(redis_url, "legacy")
    legacy.enqueue_many([("acme", "a", {"n": n}) for n in range(20)])
    migration = Migration(legacy.client)  # the server's clock, real waits
    migration.set_phase("off")
    skew(600)
    migration.verify()  # proves nothing about dual writes: they have not begun
    skew(0)
    migration.set_phase("dual-write")
    with pytest.raises(MigrationRefused, match="clean verify"):
        migration.set_phase("read-target")
    migration.set_phase("read-target", force=True, reason="test: skip the gap rule")
    with pytest.raises(MigrationRefused, match="clean verify"):
        migration.set_phase("target-only")
    # And a verify from a host 10 minutes behind, after dual writes began, does count.
    migration.backfill()
    skew(-600)
    assert Migration(legacy.client).verify().clean
    skew(0)
    migration.set_phase("target-only")
    assert migration.state().phase is Phase.TARGET_ONLY


def test_a_job_completed_in_off_is_not_served_stale_after_dual_writes_resume(backend):
    """dual-write -> off (the job completes; the target copy stays pending) -> dual-write:
    read-target is refused until a backfill has brought the stale copy up to date and a
    verify says so; then the completed job reads completed, everywhere."""
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    migration.set_phase("dual-write")
    job = dual.enqueue("acme", "a")
    migration.set_phase("off")  # always allowed
    # A store opened now follows 'off' at once (the fake clock does not wait the second that
    # running stores take to follow; on Cluster nothing fences a store that has not yet).
    off = jobstore.open(backend, "dual")
    assert off.dequeue().job_id == job.job_id
    off.update_status(job.job_id, "completed", workspace_id="acme", result=42)
    migration.set_phase("dual-write")

    with pytest.raises(MigrationRefused, match="missed the writes"):
        migration.set_phase("read-target")
    before = migration.verify()
    assert not before.clean and before.differing == 1, before.as_dict()
    report = migration.backfill()
    assert report.counts.get("refreshed") == 1, report.as_dict()
    assert migration.verify().clean
    migration.set_phase("read-target")
    assert not migration.state().target_gap

    reader = jobstore.open(backend, "dual")
    seen = reader.get(job.job_id, workspace_id="acme")
    assert (seen.status.value, seen.result) == ("completed", 42)
    assert job.job_id not in [j.job_id for j in reader.list("acme", status="pending")]
    with pytest.raises(InvalidTransition):
        reader.update_status(job.job_id, "running", workspace_id="acme")
    target = jobstore.open(backend, "workspace").get(job.job_id, workspace_id="acme")
    assert target.status.value == "completed"


def test_off_and_back_without_a_backfill_is_refused_until_forced(backend):
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    migration.set_phase("dual-write")
    migration.set_phase("off")
    migration.set_phase("dual-write")
    assert migration.state().target_gap
    assert "missed the writes" in migration.status()["next"]["read-target"]
    forced = migration.set_phase("read-target", force=True, reason="operator knows best")
    assert forced.phase is Phase.READ_TARGET
    assert migration.log(1)[0]["forced"] is True


def test_a_rollout_change_does_not_wipe_a_verify_recorded_meanwhile(backend):
    """State changes write only their own fields: a rollout decided from a state read before a
    verify finished must not put the old verified_clean back."""
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    migration.set_phase("dual-write")
    operator = fake_clock_migration(dual.client)
    stale = operator.driver.run(operator._state_and_now())  # read before the verify
    assert migration.verify().clean
    recorded = migration.state().verified_clean
    assert recorded > 0

    operator._state_and_now = lambda: iter_return(stale)
    operator.set_rollout(percent=40)
    after = migration.state()
    assert after.verified_clean == recorded and after.rollout == Rollout(40.0)


def iter_return(value):
    """A step generator that sends nothing and returns ``value`` (stands for a read made earlier)."""
    return value
    yield  # pragma: no cover


def test_a_first_stored_phase_that_writes_both_starts_dual_since(backend):
    """No phase stored yet (dual behaves as read-target): the README's first command,
    ``migrate phase dual-write``, must start the clock that target-only's rule checks."""
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    assert not migration.state().stored and migration.state().phase is Phase.READ_TARGET
    state = migration.set_phase("dual-write")
    assert state.dual_since > 0
    migration.backfill()
    assert migration.verify().clean
    migration.set_phase("read-target")
    migration.set_phase("target-only")


def in_target_only_after_a_reverse_sync(backend):
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    migration.set_phase("dual-write")
    job = dual.enqueue("acme", "a")
    migration.backfill()
    assert migration.verify().clean
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    assert migration.reverse_sync().finished
    late = jobstore.open(backend, "dual").enqueue("acme", "late")  # in the target alone
    return migration, job, late


def test_target_only_goes_back_only_through_read_target(backend):
    """A reverse sync in target-only does not cover writes made after it: going straight back
    to a phase that reads the source would lose them (the job enqueued late vanished)."""
    migration, _, late = in_target_only_after_a_reverse_sync(backend)
    for phase in ("off", "dual-write"):
        with pytest.raises(MigrationRefused, match="source missed"):
            migration.set_phase(phase)
    migration.set_phase("read-target")
    with pytest.raises(MigrationRefused, match="source missed"):
        migration.set_phase("dual-write")
    with pytest.raises(MigrationRefused, match="cannot shrink"):
        migration.set_rollout(percent=0)  # workspaces taken out would read the stale source
    with pytest.raises(MigrationRefused, match="cannot shrink"):
        migration.set_rollout(deny=["acme"])
    assert migration.reverse_sync().finished  # in read-target: closes the gap
    migration.set_phase("dual-write")
    seen = jobstore.open(backend, "legacy").get(late.job_id, workspace_id="acme")
    assert seen is not None and seen.action == "late"


def test_a_rollout_change_needs_a_stored_phase(backend):
    """Else it would store the default phase (read-target) as a side effect: after a lost state
    that switches the fleet; on a fresh Redis it left the README's path without dual_since."""
    migration = fake_clock_migration(jobstore.open(backend, "dual").client)
    with pytest.raises(MigrationRefused, match="no phase is stored"):
        migration.set_rollout(percent=50)
    assert not migration.state().stored


def test_records_without_write_counts_are_ordered_by_status(backend):
    """Records written before counts existed (or by other tools) count 0 on both sides: the
    copy whose status is further along wins, never the stale one, in every phase."""
    dual = jobstore.open(backend, "dual")
    migration = fake_clock_migration(dual.client)
    migration.set_phase("dual-write")
    migration.backfill()
    assert migration.verify().clean
    migration.set_phase("read-target")
    client = dual.client
    base = {"job_id": "old", "workspace_id": "acme", "action": "a", "params": "{}", "error": "",
            "created_at": "1.0"}
    client.hset("ai:jobs:old", mapping={**base, "status": "completed", "result": "1",
                                        "updated_at": "3.0"})
    client.hset("ai:job:acme:old", mapping={**base, "status": "pending", "result": "",
                                            "updated_at": "9.0"})  # a later clock, an older state
    report = migration.backfill()
    assert report.counts.get("refreshed") == 1, report.as_dict()
    for key in ("ai:jobs:old", "ai:job:acme:old"):
        assert client.hget(key, "status") == "completed"
    client.hset("ai:jobs:old", "status", "running")  # now the source is the stale one
    migration.verify(repair=True)
    for key in ("ai:jobs:old", "ai:job:acme:old"):
        assert client.hget(key, "status") == "completed", key


@pytest.mark.redis
def test_a_pass_that_cannot_read_the_servers_identity_stops(redis_server, redis_url):
    """An ACL user without INFO cannot tell a restart: the pass refuses to run blind, rather
    than carry a cursor over a restart it could not see."""
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "blind", "on", ">pw", "~*", "&*", "+@all", "-info")
    try:
        url = redis_url.replace("redis://", "redis://blind:pw@")
        migration = fake_clock_migration(jobstore.open(url, "legacy", allow_eviction=True).client)
        migration.allow_eviction = True
        migration.set_phase("dual-write")
        jobstore.open(url, "legacy", allow_eviction=True).enqueue("acme", "a")
        with pytest.raises(jobstore.JobStoreError, match="(?i)noperm|permission"):
            migration.backfill()
    finally:
        admin.execute_command("ACL", "DELUSER", "blind")


def test_passes_on_an_unstored_migration_store_no_phase_as_a_side_effect(backend):
    migration = fake_clock_migration(jobstore.open(backend, "dual").client)
    assert migration.verify().clean
    migration.reverse_sync()
    assert not migration.state().stored  # the fleet's phase was not decided by a verify


@pytest.mark.cluster
def test_on_a_cluster_the_switch_times_are_the_state_nodes(cluster_url, skew):
    """The TIME that gates the switches comes from the node holding the migration state."""
    store = jobstore.open(cluster_url, "dual")
    migration = Migration(store.client, wait=lambda seconds: None)
    skew(-600)
    state = migration.set_phase("dual-write")
    skew(0)
    assert abs(state.dual_since - (time.time() + 1.0)) < 30  # the server's, not the skewed caller's
    assert abs(migration.now() - time.time()) < 30
