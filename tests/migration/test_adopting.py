"""Taking over a running deployment: the replaced queue class and jobstore side by side.

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
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

import jobstore
from jobstore import JobStatus, MigrationRefused
from jobstore.testing import FakeClock
from tests.support.old_queue import QUEUE, SimpleQueue

ROOT = Path(__file__).resolve().parents[2]


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


# -- the runbook, with a jobstore worker killed at every step ------------------------------------

LEASE = 0.3
PAST = LEASE + 0.25  # sleep this long for a lease to run out


@pytest.fixture(params=["memory", "redis"])
def standalone(request) -> str:
    """The backends ``legacy_queue`` runs on (it is refused on Cluster)."""
    if request.param == "memory":
        return f"memory://adopting-{uuid.uuid4().hex}"
    return request.getfixturevalue("redis_url")


class Ledger:
    """Every job enqueued, and every outcome that counted: the test's view of exactly once."""

    def __init__(self):
        self.enqueued: list[str] = []
        self.completed: Counter[str] = Counter()
        self.killed: list[jobstore.Job] = []

    def work(self, store, most: int = 1_000) -> None:
        """A live worker: runs jobs until none is left (or ``most`` of them)."""
        for _ in range(most):
            job = store.dequeue()
            if job is None:
                return
            store.extend(job)  # its heartbeat, once
            store.update_status(job.job_id, "completed", workspace_id=job.workspace_id,
                                result={"attempt": job.attempts}, claim=job.claim)
            self.completed[job.job_id] += 1

    def kill(self, store, lease: float | None = None) -> jobstore.Job:
        """A worker that takes a job and dies: no extend, no update; its lease runs out."""
        job = store.dequeue(lease=lease)
        assert job is not None, "nothing to kill a worker on"
        self.killed.append(job)
        return job


def test_the_runbook_with_a_worker_killed_at_every_step_completes_every_job_once(standalone):
    url = standalone
    clock = FakeClock(tick=0)
    client = jobstore.open(url, "legacy").client
    migration = jobstore.Migration(client, clock=clock, wait=clock.wait)
    ledger = Ledger()

    def produce(n: int, *producers) -> None:
        for i in range(n):
            for producer in producers:
                if isinstance(producer, SimpleQueue):
                    ledger.enqueued.append(producer.enqueue(f"ws{i % 3}", "a", {"i": i}))
                else:
                    ledger.enqueued.append(producer.enqueue(f"ws{i % 3}", "a", {"i": i}).job_id)

    # 1. The phase first; only the old system runs.
    migration.set_phase("off")
    old = SimpleQueue(client)
    produce(4, old)
    old_ran = old.dequeue()  # an old worker runs one the old way
    old.update_status(old_ran, "completed", "ws0", result={"by": "old"})
    ledger.completed[old_ran] += 1
    # 2. jobstore rolls out with the old list; one of its workers dies on a bare id.
    shared = jobstore.open(url, "dual", legacy_queue=QUEUE, lease=LEASE)
    produce(3, old, shared)
    ledger.kill(shared)
    ledger.work(shared, most=2)
    # 3. The migration, old processes still running (their flag on); a worker dies in each phase.
    old.new_schema = True
    migration.set_phase("dual-write")
    time.sleep(PAST)
    ledger.work(shared, most=1)  # takes step 2's job over first
    produce(3, old, shared)
    ledger.kill(shared)
    migration.backfill()
    verify_until_clean(migration)
    migration.set_phase("read-target")
    produce(2, old, shared)
    ledger.kill(shared)
    last_shared = ledger.kill(shared, lease=3600)  # runs out only after the source is gone
    # 4. No old process remains: leave the old list; the next deploy has no JOBSTORE_LEGACY_QUEUE.
    assert shared.leave_legacy_queue(batch=2)["remaining"] == 0
    plain = jobstore.open(url, "dual", lease=LEASE)
    time.sleep(PAST)
    produce(2, plain)
    ledger.work(plain, most=2)  # the read-target worker's job, taken from the old list, first
    ledger.kill(plain)
    # 5. Finish the migration; a worker dies in target-only too.
    migration.backfill()
    verify_until_clean(migration)
    migration.set_phase("target-only")
    produce(2, plain)
    ledger.kill(plain)
    migration.cleanup()
    assert not client.keys("ai:jobs:*")
    client.zadd(plain.keys.leases, {last_shared.claim: 0}, xx=True)  # its lease runs out now
    time.sleep(PAST)
    ledger.work(plain)

    assert len(ledger.killed) == 6 and len(set(ledger.enqueued)) == len(ledger.enqueued) > 20
    assert {job.attempts for job in ledger.killed} == {1}
    assert sorted(ledger.completed) == sorted(ledger.enqueued)  # none lost, none stuck
    assert [job for job, n in ledger.completed.items() if n != 1] == []  # none completed twice
    for job_id in ledger.enqueued:  # every job reads back completed, from the target alone
        found = [job for ws in ("ws0", "ws1", "ws2")
                 if (job := plain.get(job_id, workspace_id=ws)) is not None]
        assert [job.status for job in found] == [JobStatus.COMPLETED], (job_id, found)
    for dead in ledger.killed:  # the dead workers' claims ended: nothing of theirs counts
        with pytest.raises(jobstore.LeaseLost):
            plain.update_status(dead.job_id, "failed", workspace_id=dead.workspace_id,
                                claim=dead.claim)
    assert client.zrange(plain.keys.leases, 0, -1) == [] and plain.dead_letters() == []


def test_a_bare_id_left_in_a_dead_dequeue_s_claim_list_goes_to_a_store_without_the_old_list(
        standalone):
    # A jobstore worker's dequeue moved a bare id from the shared list into its claim list and
    # died before claiming it; the fleet then left the old list and dropped the option.
    from jobstore.scripts import LEASE_LIST
    from jobstore.steps import Batch, Command, Script

    shared = jobstore.open(standalone, "dual", phase="dual-write", legacy_queue=QUEUE)
    job_id = SimpleQueue(shared.client, new_schema=True).enqueue("acme", "a", {})
    claim_list = shared.keys.claim("dead-worker")

    def died_between_the_move_and_the_claim():
        yield Batch((Script(LEASE_LIST, (shared.keys.leases,), (claim_list, 200)),
                     Command(("LMOVE", QUEUE, claim_list, "LEFT", "LEFT"))))

    shared.driver.run(died_between_the_move_and_the_claim())
    assert shared.leave_legacy_queue() == {"moved": 0, "dropped": 0, "remaining": 0}
    plain = jobstore.open(standalone, "dual", phase="dual-write")
    time.sleep(0.3)  # the claim list's lease runs out

    taken = plain.dequeue()

    assert taken is not None and (taken.job_id, taken.attempts) == (job_id, 1)
    assert plain.dead_letters() == []
    plain.update_status(job_id, "completed", workspace_id="acme", claim=taken.claim)


@pytest.mark.cluster
def test_a_bare_id_job_s_lease_is_taken_over_after_the_move_to_a_cluster(redis_url, cluster_url):
    # Adopt on standalone, leave the old list, then move to a Cluster (adopting.md): a job a
    # jobstore worker took from the old list as a bare id, and died with, is still found there.
    shared = jobstore.open(redis_url, "dual", phase="dual-write", legacy_queue=QUEUE, lease=0.3)
    job_id = SimpleQueue(shared.client, new_schema=True).enqueue("acme", "a", {})
    held = shared.dequeue()
    assert held.job_id == job_id
    shared.leave_legacy_queue()
    target = jobstore.open(cluster_url, "dual", phase="target-only")
    raw = redis.Redis.from_url(redis_url)  # DUMP's payload is bytes
    for key in (f"ai:jobs:{job_id}", f"ai:job:acme:{job_id}", shared.keys.leases):
        target.client.restore(key, 0, raw.dump(key), replace=True)  # the move, key by key
    time.sleep(0.55)  # the dead worker's lease runs out

    again = target.dequeue()

    assert again is not None and (again.job_id, again.attempts) == (job_id, 2)
    with pytest.raises(jobstore.LeaseLost):
        target.update_status(job_id, "completed", workspace_id="acme", claim=held.claim)
    target.update_status(job_id, "completed", workspace_id="acme", claim=again.claim)
    assert target.client.zrange(target.keys.leases, 0, -1) == []
