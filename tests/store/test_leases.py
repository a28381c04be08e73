"""Leases: a dequeued job belongs to a live worker, or goes back.

A worker that dies mid-job (OOM-killed, a lost host) used to leave its job ``running`` for ever.
Now every dequeue leases the job for a time (server time, never a client's clock); a worker
renews it with ``extend``; when it runs out, the next dequeue hands the job out again under a
new claim (``attempts`` + 1), and the old worker's ``update_status(claim=...)`` is refused with
``LeaseLost``. After ``max_attempts`` hand-outs the job fails, with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import jobstore
from jobstore import Job, JobStatus, LeaseLost
from jobstore.events import Events
from jobstore.steps import Batch, Command, Script
from tests.support.aio import FLAVOURS
from jobstore.testing import FakeClock

# The core real-Redis tests: .ci/run runs them on every supported server build too.
pytestmark = pytest.mark.core

LEASE = 0.3
PAST = LEASE + 0.25  # sleep this long for a lease to run out

# On the asyncio store too (behind the synchronous face of tests/support/aio.py), a subset that
# covers each part of a lease's life: a claim and its lease, a take-over and the loser fenced,
# max attempts, every step re-sent, a delete, every final status. The rest is the same
# operation code, driven by the same driver core.
both = pytest.mark.parametrize("flavour", FLAVOURS)


class Seen(Events):
    def __init__(self):
        super().__init__()
        self.expired: list[tuple[str, str]] = []

    def lease_expired(self, workspace_id, outcome):
        self.expired.append((workspace_id, outcome))


def leases(store) -> list[str]:
    return store.client.zrange(store.keys.leases, 0, -1)


@pytest.fixture
def leased(make_store):
    """``leased(strategy="legacy", **options)``: a store with short leases."""

    def factory(strategy="legacy", **options):
        options.setdefault("lease", LEASE)
        return make_store(strategy, **options)

    return factory


@both
@pytest.mark.parametrize("strategy", ["legacy", "workspace", "dual"])
def test_a_dequeued_job_carries_its_claim_and_attempt(leased, strategy):
    store = leased(strategy)
    job = store.enqueue("acme", "summarise", {"doc": 1})
    assert (job.attempts, job.claim) == (0, None)
    assert store.get(job.job_id, workspace_id="acme") == job  # nothing stored for them yet

    claimed = store.dequeue()

    assert (claimed.status, claimed.attempts) == (JobStatus.RUNNING, 1)
    assert claimed.claim and job.job_id in claimed.claim
    assert store.get(job.job_id, workspace_id="acme") == claimed
    assert leases(store) == [claimed.claim]
    done = store.update_status(job.job_id, "completed", workspace_id="acme", claim=claimed.claim)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 1)
    assert leases(store) == []  # finishing ends the claim and its lease


@both
@pytest.mark.parametrize("strategy", ["legacy", "workspace", "dual"])
def test_a_job_whose_lease_ran_out_goes_to_the_next_dequeue_and_the_old_worker_is_fenced(
        leased, strategy):
    events = Seen()
    store = leased(strategy, events=events)
    job = store.enqueue("acme", "a")
    later = store.enqueue("acme", "b")
    first = store.dequeue()
    assert first.job_id == job.job_id
    time.sleep(PAST)  # the worker died: nobody extends

    second = store.dequeue()

    # Handed out again, before the pending job, under a new claim.
    assert (second.job_id, second.attempts, second.status) == (job.job_id, 2, JobStatus.RUNNING)
    assert second.claim != first.claim
    assert events.expired == [("acme", "reclaimed")]
    with pytest.raises(LeaseLost) as lost:
        store.update_status(job.job_id, "completed", workspace_id="acme", result="late",
                            claim=first.claim)
    assert lost.value.holder_attempt == 2 and lost.value.job_id == job.job_id
    with pytest.raises(LeaseLost):
        store.extend(first)
    assert store.get(job.job_id, workspace_id="acme") == second  # nothing written by the loser
    done = store.update_status(job.job_id, "completed", workspace_id="acme", result="ok",
                               claim=second.claim)
    assert done.result == "ok"
    # Even a late worker's "failed" cannot overwrite the holder's outcome.
    with pytest.raises(LeaseLost):
        store.update_status(job.job_id, "failed", workspace_id="acme", claim=first.claim)
    assert store.dequeue().job_id == later.job_id
    assert store.dequeue() is None


def test_extend_keeps_the_job(leased):
    store = leased()
    store.enqueue("acme", "a")
    job = store.dequeue()
    for _ in range(4):
        time.sleep(LEASE / 2)
        store.extend(job)
        assert store.dequeue() is None  # still this worker's
    store.extend(job, seconds=5)
    time.sleep(PAST)
    assert store.dequeue() is None
    store.update_status(job.job_id, "completed", workspace_id="acme", claim=job.claim)
    with pytest.raises(LeaseLost):
        store.extend(job)  # the claim ended with the job


def test_a_lease_that_ran_out_is_still_renewed_until_someone_takes_the_job_over(leased):
    store = leased()
    store.enqueue("acme", "a")
    job = store.dequeue()
    time.sleep(PAST)
    store.extend(job, seconds=5)  # late, but no other dequeue came
    assert store.dequeue() is None
    store.update_status(job.job_id, "completed", workspace_id="acme", claim=job.claim)


@pytest.mark.parametrize("strategy", ["legacy", "dual"])
def test_after_max_attempts_the_job_fails_with_the_reason(leased, strategy):
    events = Seen()
    store = leased(strategy, max_attempts=2, events=events)
    job = store.enqueue("acme", "poison")
    assert store.dequeue().attempts == 1
    time.sleep(PAST)
    assert store.dequeue().attempts == 2
    time.sleep(PAST)

    assert store.dequeue() is None

    failed = store.get(job.job_id, workspace_id="acme")
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 2)
    assert "lease expired on attempt 2 of 2" in failed.error and "max_attempts" in failed.error
    assert events.expired == [("acme", "reclaimed"), ("acme", "failed")]
    assert leases(store) == []
    if strategy == "dual":  # every copy agrees
        for key in (f"ai:jobs:{job.job_id}", f"ai:job:acme:{job.job_id}"):
            assert store.client.hget(key, "status") == "failed"


def test_exactly_one_of_many_racing_dequeues_takes_an_expired_job_over(leased):
    store = leased(max_attempts=10)
    jobs = {store.enqueue("acme", "a").job_id for _ in range(5)}
    held = [store.dequeue() for _ in jobs]
    assert {job.job_id for job in held} == jobs
    time.sleep(PAST)
    got: list[Job] = []
    errors: list[BaseException] = []  # a thread's exception fails the test, never just a thread
    lock = threading.Lock()

    def worker():
        try:
            while True:
                job = store.dequeue(lease=30)
                if job is None:
                    return
                with lock:
                    got.append(job)
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(job.job_id for job in got) == sorted(jobs)  # each exactly once
    assert {job.attempts for job in got} == {2}


def test_cancel_by_an_operator_ends_the_claim(leased):
    store = leased()
    store.enqueue("acme", "a")
    job = store.dequeue()
    store.update_status(job.job_id, "cancelled", workspace_id="acme")  # no claim: an operator
    assert leases(store) == []
    with pytest.raises(jobstore.InvalidTransition):  # the worker's claim stands, the move not
        store.update_status(job.job_id, "completed", workspace_id="acme", claim=job.claim)
    time.sleep(PAST)
    assert store.dequeue() is None


def test_a_claim_on_a_job_never_leased_is_refused(leased):
    store = leased()
    job = store.enqueue("acme", "a")
    with pytest.raises(LeaseLost):
        store.update_status(job.job_id, "cancelled", workspace_id="acme", claim="x:acme:y:1")
    assert store.get(job.job_id, workspace_id="acme").status is JobStatus.PENDING


def test_bad_lease_arguments_name_the_argument(leased, make_store):
    store = leased()
    for bad in (0, -1, float("nan"), float("inf"), True, "5"):
        with pytest.raises(jobstore.InvalidArgument, match="lease"):
            store.dequeue(lease=bad)
        with pytest.raises(jobstore.ConfigError, match="lease"):
            make_store("legacy", lease=bad)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(jobstore.ConfigError, match="max_attempts"):
            make_store("legacy", max_attempts=bad)
    store.enqueue("acme", "a")
    with pytest.raises(jobstore.InvalidArgument, match="job"):
        store.extend(store.get("nope", workspace_id="acme"))
    job = store.dequeue()
    with pytest.raises(jobstore.InvalidArgument, match="seconds"):
        store.extend(job, seconds=-1)
    with pytest.raises(jobstore.InvalidArgument, match="claim"):
        store.update_status(job.job_id, "completed", workspace_id="acme", claim="")


def test_the_store_options_come_from_the_environment(backend):
    env = {"JOBSTORE_REDIS_URL": backend, "JOBSTORE_LEASE": "2.5", "JOBSTORE_MAX_ATTEMPTS": "7"}
    with jobstore.JobStore.from_env(env) as store:
        assert (store.lease, store.max_attempts) == (2.5, 7)
    with pytest.raises(jobstore.ConfigError, match="JOBSTORE_LEASE"):
        jobstore.JobStore.from_env({**env, "JOBSTORE_LEASE": "soon"})


def test_lease_times_are_the_servers_not_the_workers(leased):
    # A worker whose clock runs an hour ahead (or behind) gets the lease it asked for.
    store = leased()
    store.context.clock = FakeClock(start=time.time() + 3600, tick=0)  # the servers run on this host's
    store.enqueue("acme", "a")
    job = store.dequeue(lease=5)
    score = store.client.zscore(store.keys.leases, job.claim)
    assert abs(score / 1000 - (time.time() + 5)) < 2


# -- a worker process killed mid-job ----------------------------------------------------------

WORKER = """
import sys, time, jobstore
store = jobstore.open(sys.argv[1], sys.argv[2], lease=float(sys.argv[3]), allow_eviction=True)
job = store.dequeue(timeout=5)
print(job.job_id, job.claim, flush=True)
time.sleep(60)  # "working": killed before it finishes
"""


@pytest.mark.parametrize("strategy", ["legacy", "dual"])
def test_a_killed_worker_s_job_is_run_again(backend, strategy):
    if backend.startswith("memory://"):
        pytest.skip("an embedded store lives in one process")
    store = jobstore.open(backend, strategy)
    job = store.enqueue("acme", "a")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, backend, strategy, "0.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        job_id, claim = worker.stdout.readline().split()
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert job_id == job.job_id
    assert store.dequeue() is None  # the lease has not run out yet
    time.sleep(0.8)

    again = store.dequeue()

    assert (again.job_id, again.attempts) == (job.job_id, 2) and again.claim != claim
    store.update_status(job.job_id, "completed", workspace_id="acme", claim=again.claim)
    with pytest.raises(LeaseLost):
        store.update_status(job.job_id, "completed", workspace_id="acme", claim=claim)
    store.close()


# -- a dequeue that dies between taking an entry and claiming its job --------------------------

def test_entries_of_a_dequeue_that_died_mid_way_go_back_to_the_queue(make_store):
    store = make_store("legacy")
    store.context.list_grace = 0.2
    job = store.enqueue("acme", "a")
    claim_list = store.keys.claim("dead-worker")
    # What a blocking dequeue does before its claim script, and then its process dies.
    from jobstore.scripts import LEASE_LIST, TAKE
    if store.driver.cluster:
        store.driver.run(_one(Script(TAKE, (store.keys.queue, claim_list, store.keys.leases), (200,))))
    else:
        store.driver.run(_one(Script(LEASE_LIST, (store.keys.leases,), (claim_list, 200))))
        store.driver.run(_one(Command(("LMOVE", store.keys.queue, claim_list, "RIGHT", "LEFT"))))
    assert store.dequeue() is None  # the entry sits in the dead dequeue's list
    time.sleep(0.3)

    taken = store.dequeue()

    assert taken.job_id == job.job_id and taken.attempts == 1
    assert not store.client.exists(claim_list)
    assert leases(store) == [taken.claim]


def _one(step):
    result = yield Batch((step,))
    return result


# -- the migration: leases are shared like the queue ------------------------------------------

def test_a_lease_survives_phase_switches_and_the_job_is_taken_over_in_a_later_phase(make_store):
    legacy = make_store("legacy")
    clock = FakeClock(tick=0)
    migration = jobstore.Migration(legacy.client, clock=clock, wait=clock.wait)
    migration.set_phase("dual-write")
    dual = make_store("dual", lease=LEASE)
    job = dual.enqueue("acme", "a")
    first = dual.dequeue()
    migration.backfill()
    assert migration.verify().clean  # claim and attempts are copied and compared like any field
    migration.set_phase("read-target")
    time.sleep(PAST)

    second = dual.dequeue()
    assert (second.job_id, second.attempts) == (job.job_id, 2)
    migration.set_phase("target-only", force=True, reason="test")
    with pytest.raises(LeaseLost):
        dual.update_status(job.job_id, "completed", workspace_id="acme", claim=first.claim)
    done = dual.update_status(job.job_id, "completed", workspace_id="acme", claim=second.claim)
    assert done.status is JobStatus.COMPLETED
    assert leases(dual) == []


# -- leases a crash left behind ----------------------------------------------------------------

def test_a_lease_whose_claim_never_took_the_job_is_dropped(leased):
    # A dequeue (on Cluster) leases its claim before the records move; one that died in between
    # leaves a lease naming a claim the record never held.
    store = leased()
    job = store.enqueue("acme", "a")
    entry = store.keys.queue_entry("acme", job.job_id, repr(job.created_at))
    store.client.zadd(store.keys.leases, {f"ghost:{entry}": 0})
    taken = store.dequeue()
    assert (taken.job_id, taken.attempts) == (job.job_id, 1)  # from the queue, not the ghost
    assert leases(store) == [taken.claim]
    assert store.dequeue() is None


def test_a_lease_left_behind_by_a_finished_job_is_dropped_not_handed_out(leased):
    store = leased()
    store.enqueue("acme", "a")
    job = store.dequeue()
    store.update_status(job.job_id, "completed", workspace_id="acme", claim=job.claim)
    store.client.zadd(store.keys.leases, {job.claim: 0})  # a crash before the lease was dropped
    assert store.dequeue() is None
    assert leases(store) == []
    assert store.get(job.job_id, workspace_id="acme").status is JobStatus.COMPLETED


def dequeue_sending_every_step_twice(store):
    """A dequeue whose every Redis step is sent twice (the second reply is the one it sees)."""
    op = store._writes.dequeue(store.context, 0)
    reply = None
    try:
        while True:
            step = op.send(reply)
            if isinstance(step, Batch):
                store.driver._do(step)
            reply = store.driver._do(step)
    except StopIteration as done:
        return done.value


@both
def test_a_dequeue_whose_every_step_is_sent_twice_hands_out_once(leased):
    # redis-py re-sends a command whose reply was lost. The job is handed out once, and the
    # queue keeps every other entry: taken over once, claimed once.
    short = leased()
    jobs = [short.enqueue("acme", "a") for _ in range(4)]
    short.dequeue()
    time.sleep(PAST)
    # The claims from here on must hold until the end, however slow the machine: long leases.
    store = leased(lease=60)
    job = dequeue_sending_every_step_twice(store)
    assert (job.job_id, job.attempts) == (jobs[0].job_id, 2)
    job = dequeue_sending_every_step_twice(store)
    assert (job.job_id, job.attempts) == (jobs[1].job_id, 1)
    rest = [store.dequeue(), store.dequeue(), store.dequeue()]
    assert [j and j.job_id for j in rest] == [jobs[2].job_id, jobs[3].job_id, None]


# -- metrics -----------------------------------------------------------------------------------

def test_expired_leases_and_refused_updates_are_counted(leased):
    from prometheus_client import CollectorRegistry

    from jobstore.metrics import PrometheusEvents

    registry = CollectorRegistry()
    store = leased(max_attempts=2, events=PrometheusEvents(registry=registry))

    def sample(name, **labels):
        return registry.get_sample_value(name, labels) or 0

    assert sample("ai_jobs_leases_expired_total", outcome="failed") == 0  # exists from the start
    job = store.enqueue("acme", "a")
    first = store.dequeue()
    time.sleep(PAST)
    store.dequeue()
    with pytest.raises(LeaseLost):
        store.update_status(job.job_id, "completed", workspace_id="acme", claim=first.claim)
    time.sleep(PAST)
    store.dequeue()

    assert sample("ai_jobs_leases_expired_total", outcome="reclaimed") == 1
    assert sample("ai_jobs_leases_expired_total", outcome="failed") == 1
    assert sample("ai_jobs_operations_total", operation="update_status", strategy="legacy",
                  outcome="LeaseLost") == 1


def test_from_env_turns_metrics_on(backend):
    from jobstore.metrics import PrometheusEvents

    env = {"JOBSTORE_REDIS_URL": backend, "JOBSTORE_METRICS": "on"}
    with jobstore.JobStore.from_env(env) as store:
        assert isinstance(store.events, PrometheusEvents)
    with jobstore.JobStore.from_env({**env, "JOBSTORE_METRICS": "off"}) as store:
        assert not isinstance(store.events, PrometheusEvents)
    with pytest.raises(jobstore.ConfigError, match="JOBSTORE_METRICS"):
        jobstore.JobStore.from_env({**env, "JOBSTORE_METRICS": "maybe"})


def test_a_cancel_that_overtakes_a_claim_between_two_cluster_copies_leaves_them_equal(make_store):
    # On Cluster a claim moves the first copy, then mirrors to the other. A cancel that lands in
    # between reaches the second copy first; the claim's late mirror must still bring the claim
    # and attempt count, or verify finds the copies differing (seen under live traffic).
    store = make_store("dual", phase="dual-write")
    if not store.driver.cluster:
        pytest.skip("standalone writes every copy in one script")
    job = store.enqueue("acme", "a")
    op = store._writes.dequeue(store.context, 0)
    reply, cancelled = None, False
    try:
        while True:
            step = op.send(reply)
            names = [getattr(getattr(c, "lua", None), "name", "") for c in getattr(step, "calls", ())]
            if "mirror" in names and not cancelled:
                store.update_status(job.job_id, "cancelled", workspace_id="acme")
                cancelled = True
            reply = store.driver._do(step)
    except StopIteration as done:
        claimed = done.value
    assert cancelled and claimed.job_id == job.job_id
    source, target = (store.client.hgetall(k) for k in (f"ai:jobs:{job.job_id}",
                                                       f"ai:job:acme:{job.job_id}"))
    assert source["status"] == target["status"] == "cancelled"
    source.pop("_rev"), target.pop("_rev")  # each copy counts its own writes
    assert source == target and source["claim"] == claimed.claim


def test_a_cluster_dequeue_that_dies_after_winning_the_arbiter_does_not_strand_the_job(make_store):
    # Found by benchmarks/soak_leases.py: the dequeue won the job's arbiter, then died before it
    # moved the record. Its entry came back from its claim list, and every later dequeue took
    # the arbiter (held for an hour) for a duplicate and dropped the entry: pending for ever.
    store = make_store("legacy", lease=0.5)
    if not store.driver.cluster:
        pytest.skip("only Redis Cluster arbitrates claims with a key of their own")
    store.context.list_grace = 0.2
    job = store.enqueue("acme", "a")
    op, reply = store._writes.dequeue(store.context, 0), None
    while True:  # run the dequeue until its arbiter step has run, then "kill" it
        step = op.send(reply)
        reply = store.driver._do(step)
        if any(getattr(getattr(c, "lua", None), "name", "") == "arbitrate" for c in step.calls):
            break
    op.close()
    assert store.dequeue() is None  # the entry sits in the dead dequeue's claim list
    time.sleep(0.4)

    taken = store.dequeue()

    assert taken is not None and (taken.job_id, taken.attempts) == (job.job_id, 1)
    assert store.dequeue() is None


@pytest.mark.parametrize("strategy", ["legacy", "dual"])
def test_a_duplicated_entry_is_still_handed_out_once(make_store, strategy):
    # Every backend: standalone's DEQUEUE hands out only a pending job; Cluster's arbiter, once
    # older than list_grace, leaves the decision to the record, which is running.
    store = make_store(strategy)
    store.context.list_grace = 0.2
    job = store.enqueue("acme", "a")
    later = store.enqueue("acme", "b")
    entry = store.client.lindex(store.keys.queue, -1)
    store.client.rpush(store.keys.queue, entry)  # the same entry twice, both next
    first = store.dequeue()
    time.sleep(0.3)  # on Cluster the arbiter is now "old": the record decides
    second = store.dequeue()
    assert first.job_id == job.job_id and second.job_id == later.job_id  # not the first again
    assert store.get(job.job_id, workspace_id="acme") == first  # its holder's, untouched
    assert store.dequeue() is None
    store.update_status(job.job_id, "completed", workspace_id="acme", claim=first.claim)


@both
@pytest.mark.parametrize("strategy", ["legacy", "dual"])
def test_a_worker_whose_last_attempt_failed_gets_lease_lost(leased, strategy):
    store = leased(strategy, max_attempts=1)
    job = store.enqueue("acme", "a")
    held = store.dequeue()
    time.sleep(PAST)
    assert store.dequeue() is None  # fails it: max_attempts
    with pytest.raises(LeaseLost):
        store.update_status(job.job_id, "completed", workspace_id="acme", claim=held.claim)
    with pytest.raises(LeaseLost):
        store.extend(held)
    assert store.get(job.job_id, workspace_id="acme").status is JobStatus.FAILED


def test_a_slow_cluster_claim_keeps_its_lease(make_store):
    # Found by the soak: a dequeue leased its claim, then took longer than the lease to move the
    # record; another dequeue saw the lease run out while the job was still pending and dropped
    # it, and the job then ran with no lease: never taken over if its worker died.
    store = make_store("legacy", lease=0.3)
    if not store.driver.cluster:
        pytest.skip("standalone leases and moves the record in one script")
    job = store.enqueue("acme", "a")
    op, reply = store._writes.dequeue(store.context, 0), None
    while True:  # up to the claim's lease, before the records move
        step = op.send(reply)
        reply = store.driver._do(step)
        if any(getattr(getattr(c, "lua", None), "name", "") == "lease_claim" for c in step.calls):
            break
    time.sleep(0.5)  # slow: the lease ran out
    assert store.dequeue() is None  # another dequeue looks: the job is pending, its lease young
    try:
        while True:
            step = op.send(reply)
            reply = store.driver._do(step)
    except StopIteration as done:
        claimed = done.value
    assert claimed.job_id == job.job_id
    assert leases(store) == [claimed.claim]  # leased afresh


def test_a_take_over_and_a_claim_in_one_dequeue_do_not_share_op_markers(make_store):
    # Found by review: a cluster dequeue that fails a job whose lease ran out (max_attempts) and
    # then claims a duplicate entry of that same job marked both moves with its token: with the
    # job's arbiter gone (deleted in bulk once the job is final), the claim's move found the
    # take-over's marker and answered with the failed record, as if handing the job out.
    store = make_store("legacy", lease=LEASE, max_attempts=1)
    if not store.driver.cluster:
        pytest.skip("standalone takes over and claims in one script, without op markers per move")
    job = store.enqueue("acme", "a")
    (entry,) = store.client.lrange(store.keys.queue, 0, -1)
    held = store.dequeue()
    time.sleep(PAST)
    store.client.lpush(store.keys.queue, entry)  # a duplicate entry of the job
    workspace_id, job_id, stamp = store.keys.parse_queue_entry(entry)
    store.client.delete(store.keys.claimed(workspace_id, job_id, stamp))  # its arbiter, gone
    assert store.dequeue() is None  # fails the job (max_attempts); drops the duplicate
    assert store.get(job.job_id, workspace_id="acme").status is JobStatus.FAILED
    assert held.claim and store.dequeue() is None


# -- leases end with the job --------------------------------------------------------------------

@both
@pytest.mark.parametrize("strategy", ["legacy", "workspace", "dual"])
def test_delete_ends_the_claim_and_its_lease_also_when_the_id_is_enqueued_again(leased, strategy):
    store = leased(strategy, lease=30)
    job = store.enqueue("acme", "a", job_id="j1")
    held = store.dequeue()
    assert leases(store) == [held.claim]

    assert store.delete(job.job_id, workspace_id="acme")

    assert leases(store) == []  # the lease went with the job
    with pytest.raises(LeaseLost):
        store.extend(held)  # the heartbeat stops the deleted job's worker
    assert store.delete(job.job_id, workspace_id="acme") is False
    again = store.enqueue("acme", "a", job_id="j1")  # another incarnation of the id
    with pytest.raises(LeaseLost):
        store.extend(held)
    second = store.dequeue()
    assert (second.job_id, second.attempts, second.created_at) == ("j1", 1, again.created_at)
    with pytest.raises(LeaseLost):
        store.extend(held)
    store.extend(second)
    assert leases(store) == [second.claim]
    with pytest.raises(LeaseLost):
        store.update_status("j1", "completed", workspace_id="acme", claim=held.claim)


@pytest.mark.parametrize("strategy", ["legacy", "dual"])
def test_extend_asks_the_record_not_only_the_leases(leased, strategy):
    # A lease a crash or a race left behind (a delete on Cluster reads the claim, then deletes;
    # a take-over may land in between) must not keep a worker going: the record decides.
    store = leased(strategy, lease=30)
    store.enqueue("acme", "a", job_id="j1")
    held = store.dequeue()
    score = store.client.zscore(store.keys.leases, held.claim)
    store.delete("j1", workspace_id="acme")
    store.client.zadd(store.keys.leases, {held.claim: score})  # left behind
    with pytest.raises(LeaseLost):
        store.extend(held)
    assert leases(store) == []  # and dropped
    store.enqueue("acme", "a", job_id="j1")  # the id again, its lease back by hand
    store.client.zadd(store.keys.leases, {held.claim: score})
    with pytest.raises(LeaseLost):
        store.extend(held)
    assert leases(store) == []
    new = store.dequeue()
    store.update_status("j1", "completed", workspace_id="acme", claim=new.claim)
    store.client.zadd(store.keys.leases, {new.claim: score})  # finished, its lease left behind
    with pytest.raises(LeaseLost):
        store.extend(new)
    assert leases(store) == []


@both
@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
def test_every_final_status_ends_the_claim_with_or_without_the_claim_given(leased, final):
    store = leased("dual", lease=30)
    for given in (True, False):
        job = store.enqueue("acme", "a")
        held = store.dequeue()
        store.update_status(job.job_id, final, workspace_id="acme",
                            claim=held.claim if given else None)
        assert leases(store) == []
        with pytest.raises(LeaseLost):
            store.extend(held)
