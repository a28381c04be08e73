"""Taking over a running deployment (issue #15): the replaced queue class and jobstore side by side.

The service jobstore replaces writes ``HSET ai:jobs:<id>`` and ``RPUSH``es the bare id onto its
own list; its workers ``LPOP``. During a rolling deploy, old and jobstore processes both enqueue
and both consume. With ``legacy_queue=`` jobstore shares that list: every job is run exactly once,
by an old worker or a jobstore worker, through the deploy and the whole legacy -> workspace
migration, and the fleet then leaves the old list without losing or repeating a job.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

import jobstore
from jobstore import JobStatus, MigrationRefused
from tests.support.old_queue import QUEUE, SimpleQueue

ROOT = Path(__file__).resolve().parent.parent


class Fleet:
    """Processes of the rolling deploy, each stopped by its own key."""

    def __init__(self, url):
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, role: str, name: str, *args: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tests.support.old_queue", role, self.url, name, *args],
            cwd=ROOT)

    def stop(self, *names: str) -> None:
        for name in names:
            self.client.set(f"rolling:stop:{name}", 1)
        for name in names:
            assert self.procs.pop(name).wait(timeout=30) == 0, f"{name} failed"

    def stop_all(self) -> None:
        self.stop(*list(self.procs))


@pytest.fixture
def fleet(redis_url):
    fleet = Fleet(redis_url)
    yield fleet
    for name in list(fleet.procs):
        fleet.client.set(f"rolling:stop:{name}", 1)
    for proc in fleet.procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def verify_until_clean(migration, tries=20):
    # Old processes write their records with separate HSETs: a verify can catch one half-way.
    for _ in range(tries):
        report = migration.verify(repair=True)
        if migration.verify().clean:
            return
        time.sleep(0.2)
    raise AssertionError(f"verify never clean: {report.as_dict()}")


def test_a_rolling_deploy_and_the_whole_migration_run_every_job_exactly_once(fleet):
    client = fleet.client
    migration = jobstore.open_migration(fleet.url)
    migration.set_phase("off")  # the fleet will run dual; nothing moves yet

    # 1. Only the old system.
    fleet.start("old-producer", "op1", "off")
    fleet.start("old-worker", "ow1", "off")
    fleet.start("old-worker", "ow2", "off")
    time.sleep(1.5)
    # 2. The rolling deploy: jobstore processes join, old ones keep running (the flag turned on).
    fleet.start("new-producer", "np1")
    fleet.start("new-worker", "nw1")
    fleet.stop("op1")
    fleet.start("old-producer", "op2", "on")
    time.sleep(1.5)
    # 3. The migration, with old producers and workers still running.
    migration.set_phase("dual-write")
    fleet.stop("ow1")
    fleet.start("old-worker", "ow3", "on")
    migration.backfill()
    verify_until_clean(migration)
    migration.set_phase("read-target")
    fleet.start("new-worker", "nw2")
    time.sleep(1.5)
    # 4. The last old processes go; the fleet leaves the old queue, then the source.
    fleet.stop("op2", "ow2", "ow3")
    with pytest.raises(MigrationRefused, match="compatible queue"):
        migration.set_phase("target-only")
    store = jobstore.open(fleet.url, "dual", legacy_queue=QUEUE)
    left = store.leave_legacy_queue(batch=50)
    assert left["remaining"] == 0
    migration.backfill()
    verify_until_clean(migration)
    migration.set_phase("target-only")
    time.sleep(1.0)
    migration.cleanup()
    fleet.stop("np1")
    # Drain.
    deadline = time.time() + 30
    while (client.llen(QUEUE) or client.llen("ai:queue")) and time.time() < deadline:
        time.sleep(0.2)
    fleet.stop_all()

    enqueued = client.lrange("rolling:enqueued", 0, -1)
    ran = client.lrange("rolling:ran", 0, -1)
    runs = Counter(entry.split(":", 1)[1] for entry in ran)
    assert len(enqueued) == len(set(enqueued)) > 100
    assert [job for job, n in runs.items() if n > 1] == []  # none run twice
    assert sorted(runs) == sorted(enqueued)  # none lost or stuck
    by = Counter(entry.split(":", 1)[0] for entry in ran)
    assert by["old"] > 10 and by["new"] > 10, by  # both kinds made progress
    assert client.llen("rolling:unreadable") == 0
    final = jobstore.open(fleet.url, "dual")
    for job_id in enqueued[::7]:  # every job reads back completed, from the target alone
        found = [job for ws in ("ws0", "ws1", "ws2", "ws3")
                 if (job := final.get(job_id, workspace_id=ws)) is not None]
        assert [job.status for job in found] == [JobStatus.COMPLETED], (job_id, found)
    assert not client.keys("ai:jobs:*")  # cleanup left only the target


def test_jobstore_pushes_what_old_producers_push_and_takes_what_they_pushed(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    old = SimpleQueue(client)
    store = jobstore.open(redis_url, "legacy", legacy_queue=QUEUE)
    first = old.enqueue("acme", "a", {"n": 1})
    second = store.enqueue("acme", "b", {"n": 2})
    third = old.enqueue("globex", "c", {"n": 3})
    assert client.lrange(QUEUE, 0, -1) == [first, second.job_id, third]  # bare ids, in order
    assert old.dequeue() == first  # an old worker takes jobstore's and the old producers' alike
    taken = store.dequeue()
    assert taken.job_id == second.job_id and taken.status is JobStatus.RUNNING
    third_job = store.dequeue()
    assert (third_job.job_id, third_job.workspace_id, third_job.params) == (third, "globex", {"n": 3})
    # The old record keeps its encoding: ISO times, as its readers expect.
    assert "T" in client.hget(f"ai:jobs:{third}", "updated_at")
    assert store.dequeue() is None and client.llen(QUEUE) == 0


def test_a_blocking_dequeue_waits_on_the_shared_queue(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = jobstore.open(redis_url, "legacy", legacy_queue=QUEUE)
    assert store.dequeue() is None
    old = SimpleQueue(client)
    import threading

    threading.Timer(0.3, lambda: old.enqueue("acme", "late", {})).start()
    started = time.monotonic()
    job = store.dequeue(timeout=3)
    assert job is not None and job.action == "late" and time.monotonic() - started < 2.5


def test_leaving_moves_pending_ids_once_in_order_and_switches_the_fleet(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    old = SimpleQueue(client)
    store = jobstore.open(redis_url, "legacy", legacy_queue=QUEUE)
    other = jobstore.open(redis_url, "legacy", legacy_queue=QUEUE)  # another process
    ids = [old.enqueue("acme", "a", {"i": i}) for i in range(25)]
    client.delete(f"ai:jobs:{ids[3]}")  # deleted meanwhile: dropped, not moved
    report = store.leave_legacy_queue(batch=7)
    assert report == {"moved": 24, "dropped": 1, "remaining": 0}
    after = other.enqueue("acme", "after")  # the other store follows at once
    assert client.llen(QUEUE) == 0
    order = [other.dequeue().job_id for _ in range(25)]
    assert order == [i for i in ids if i != ids[3]] + [after.job_id]
    assert store.leave_legacy_queue() == {"moved": 0, "dropped": 0, "remaining": 0}  # again: no-op


def test_the_compatible_queue_is_refused_where_it_cannot_work(redis_url, make_store):
    with pytest.raises(jobstore.ConfigError, match="own"):
        jobstore.open(redis_url, "legacy", legacy_queue="ai:queue")
    with pytest.raises(jobstore.ConfigError, match="legacy_queue"):
        jobstore.open(redis_url, "legacy", legacy_queue="bad key")
    with pytest.raises(jobstore.ConfigError, match="leave_legacy_queue"):
        jobstore.open(redis_url, "legacy").leave_legacy_queue()
    env = {"JOBSTORE_REDIS_URL": redis_url, "JOBSTORE_LEGACY_QUEUE": QUEUE}
    assert jobstore.JobStore.from_env(env).legacy_queue == QUEUE


@pytest.mark.cluster
def test_the_compatible_queue_is_refused_on_cluster(cluster_url):
    with pytest.raises(jobstore.ConfigError, match="Cluster"):
        jobstore.open(cluster_url, "legacy", legacy_queue=QUEUE)


def test_a_job_taken_from_the_shared_queue_is_leased_like_any_other(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    job_id = SimpleQueue(client).enqueue("acme", "a", {})
    store = jobstore.open(redis_url, "legacy", legacy_queue=QUEUE, lease=0.3)
    first = store.dequeue()
    assert first.job_id == job_id and first.claim
    time.sleep(0.55)
    again = store.dequeue()  # the worker died: taken over by the next dequeue
    assert (again.job_id, again.attempts) == (job_id, 2)
    with pytest.raises(jobstore.LeaseLost):
        store.update_status(job_id, "completed", workspace_id="acme", claim=first.claim)
    store.update_status(job_id, "completed", workspace_id="acme", claim=again.claim)


def test_a_bare_id_that_cannot_be_found_is_set_aside_never_dropped_unseen(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(jobstore.ConfigError, match="keyed by the job id alone"):
        jobstore.open(redis_url, "workspace", legacy_queue=QUEUE)
    job_id = SimpleQueue(client).enqueue("acme", "a", {})
    # A dual store pinned to target-only reads no id-keyed schema: the entry goes to the dead
    # letters, with the reason, for an operator to see.
    store = jobstore.open(redis_url, "dual", phase="target-only", legacy_queue=QUEUE)
    assert store.dequeue() is None
    (letter,) = store.dead_letters()
    assert letter.entry == job_id and "keyed by the job id alone" in letter.reason
    # A record without a workspace: set aside too, naming the field.
    client.hset("ai:jobs:nows", mapping={"job_id": "nows", "status": "pending", "created_at": "1"})
    client.rpush(QUEUE, "nows")
    legacy = jobstore.open(redis_url, "legacy", legacy_queue=QUEUE)
    assert legacy.dequeue() is None
    assert legacy.dead_letters()[0].field == "workspace_id"
