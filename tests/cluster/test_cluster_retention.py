"""Retention on a real Redis Cluster (docs/retention.md): a job's copies sit in different slots,
so each copy's expiry is set by its own step; these tests break in between those steps (a final
move landing while a pass copies the job, a reply lost and the call re-sent, a record expired
and its id enqueued again) and check that no copy ever lives on without the expiry its
original has, nor gets a fresh one."""

from __future__ import annotations

import pytest

import jobstore
from jobstore.migration import Migration
from tests.store.test_retention import each_step_sent_twice
from jobstore.testing import FakeClock

pytestmark = [pytest.mark.cluster]

WS = "ws"
HOUR = 3600.0


def split_ids(client, n=1):
    """Job ids whose legacy and workspace keys live on different nodes."""
    found, i = [], 0
    while len(found) < n:
        job_id = f"j{i}"
        i += 1
        if (client.get_node_from_key(f"ai:jobs:{job_id}").name
                != client.get_node_from_key(f"ai:job:{WS}:{job_id}").name):
            found.append(job_id)
    return found


def keys_of(job_id):
    return f"ai:jobs:{job_id}", f"ai:job:{WS}:{job_id}"


def migration_of(store):
    clock = FakeClock(tick=0)
    return Migration(store.client, clock=clock, wait=clock.wait)


def before_script(migration, name, action):
    """Run ``action()`` once, just before the first batch that calls the script ``name``
    reaches the cluster (what another process does between a pass's read and its write)."""
    send = migration.driver._send
    armed = [True]

    def hooked(calls, *args):
        if armed[0] and any(getattr(getattr(c, "lua", None), "name", "") == name for c in calls):
            armed[0] = False
            action()
        return send(calls, *args)

    migration.driver._send = hooked
    return armed


@pytest.fixture
def off(cluster_url):
    store = jobstore.open(cluster_url, "dual", phase="off")
    yield store
    store.close()


@pytest.mark.parametrize("step", ["backfill", "verify"])
def test_a_final_move_during_a_copy_gives_the_copy_the_original_expiry(off, step):
    """The pass reads the pending source record, the job is then cancelled with a retention
    (only the source, the target copy does not exist yet), then the copy lands: the catch-up
    that brings the copy level with the original must bring its expiry too."""
    (job_id,) = split_ids(off.client)
    source, target = keys_of(job_id)
    off.enqueue(WS, "a", job_id=job_id)
    migration = migration_of(off)
    armed = before_script(migration, "copy_if_absent",
                          lambda: off.update_status(job_id, "cancelled", workspace_id=WS, ttl=HOUR))
    if step == "backfill":
        migration.backfill()
    else:
        migration.verify(repair=True)
    assert not armed[0]
    assert off.client.hget(target, "status") == "cancelled"
    remaining = off.client.pttl(source)
    assert 0 < off.client.pttl(target) <= remaining + 1000
    assert migration.verify().clean


def test_a_copy_level_with_its_original_but_lasting_is_given_its_expiry(off):
    """The copy and the original hold the same record, but only the original expires (the
    final move landed after the pass's read, and its mirror found the fresh copy too late or
    not at all): the catch-up gives the copy the original's remaining time."""
    (job_id,) = split_ids(off.client)
    source, target = keys_of(job_id)
    off.enqueue(WS, "a", job_id=job_id)
    off.update_status(job_id, "cancelled", workspace_id=WS)  # no retention yet
    migration = migration_of(off)
    before_script(migration, "copy_if_absent", lambda: off.client.pexpire(source, 3_600_000))
    migration.backfill()
    assert 0 < off.client.pttl(target) <= off.client.pttl(source) + 1000


def test_a_record_that_expires_between_the_read_and_its_ttl_read_is_not_copied_for_ever(off):
    """The pass reads a record, then its PTTL in the same pipeline; the record expires between
    the two (PTTL answers -2, as Redis does for a key that is gone). Taken for "no expiry", the
    copy would live for ever; it must expire at once instead."""
    (job_id,) = split_ids(off.client)
    source, target = keys_of(job_id)
    off.enqueue(WS, "a", job_id=job_id)
    off.update_status(job_id, "cancelled", workspace_id=WS, ttl=HOUR)
    migration = migration_of(off)
    send, hit = migration.driver._send, []

    def expired_meanwhile(calls, *args):
        replies = send(calls, *args)
        for i, call in enumerate(calls):
            if getattr(call, "args", None) == ("PTTL", source) and not hit:
                hit.append(i)
                replies = [*replies[:i], -2, *replies[i + 1:]]
                off.client.delete(source)  # it has expired
        return replies

    migration.driver._send = expired_meanwhile
    migration.backfill()
    assert hit
    assert off.client.pttl(target) != -1  # expired already, or about to: never lasting


@pytest.mark.parametrize("phase", ["dual-write", "read-target"])
def test_finished_ttl_expires_both_copies_of_a_dual_write_job(cluster_url, phase):
    store = jobstore.open(cluster_url, "dual", phase=phase, finished_ttl=HOUR)
    try:
        (job_id,) = split_ids(store.client)
        store.enqueue(WS, "a", job_id=job_id)
        job = store.dequeue()
        assert [store.client.pttl(k) for k in keys_of(job_id)] == [-1, -1]
        store.finish(job, result={"n": 1}, take_next=False)
        ttls = [store.client.pttl(k) for k in keys_of(job_id)]
        assert all(HOUR * 1000 - 60_000 < t <= HOUR * 1000 for t in ttls), ttls
        assert abs(ttls[0] - ttls[1]) < 5000
    finally:
        store.close()


def test_a_final_move_resent_after_its_reply_was_lost_keeps_its_expiry(cluster_url):
    """Each step sent twice, as redis-py re-sends a call whose reply was lost; between the two
    sends the copies are given a far expiry: a re-send that set the expiry again would bring
    it back to the ttl."""
    store = jobstore.open(cluster_url, "dual", phase="dual-write")
    try:
        (job_id,) = split_ids(store.client)
        store.enqueue(WS, "a", job_id=job_id)
        far = 10 ** 9
        op = store._writes.update_status(store.context, job_id, WS, jobstore.JobStatus.CANCELLED,
                                         {}, None, 3_600_000)
        job = each_step_sent_twice(store, op, list(keys_of(job_id)), far)
        assert job.status is jobstore.JobStatus.CANCELLED
        ttls = [store.client.pttl(k) for k in keys_of(job_id)]
        assert all(t > far - 60_000 for t in ttls), ttls
    finally:
        store.close()


def test_a_job_enqueued_again_after_its_record_expired(cluster_url):
    """The id of an expired job is free again: enqueued again, the new job is pending, lasts,
    lists and is handed out; the old job's index entry does not take the new one's with it."""
    store = jobstore.open(cluster_url, "dual", phase="dual-write", finished_ttl=HOUR)
    try:
        (job_id,) = split_ids(store.client)
        store.enqueue(WS, "old", job_id=job_id)
        store.update_status(job_id, "cancelled", workspace_id=WS)
        store.client.delete(*keys_of(job_id))  # as if expired
        again = store.enqueue(WS, "new", job_id=job_id)
        assert [store.client.pttl(k) for k in keys_of(job_id)] == [-1, -1]
        assert [j.action for j in store.list(WS)] == ["new"]
        store.sweep()
        assert store.client.zscore(store.keys.index(WS), job_id) is not None
        assert store.dequeue().job_id == again.job_id
        assert store.get(job_id, workspace_id=WS).status is jobstore.JobStatus.RUNNING
        assert migration_of(store).verify().clean
    finally:
        store.close()
