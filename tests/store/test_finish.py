"""``finish``: a worker's final update and its next claim, with everything the two calls it
replaces (``update_status(..., claim=job.claim)`` then ``dequeue(timeout=0)``) guarantee: the
claim fences the move, a lost reply re-sent neither moves the job twice nor claims a second job,
many workers never run a job twice nor lose one, and on standalone Redis it is one round trip."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

import pytest
import redis

import jobstore
from jobstore import InvalidArgument, InvalidTransition, JobStatus, LeaseLost
from jobstore.ops import finish as ops_finish
from jobstore.events import Events
from jobstore.steps import Batch
from tests.support.aio import FLAVOURS
from jobstore.testing import FakeClock
from tests.support.old_queue import QUEUE, SimpleQueue
from tests.support.proxy import FaultProxy
from tests.support.servers import free_port
from tests.store.test_roundtrips import CONFIGS, counted, round_trips

STRATEGIES = ["legacy", "workspace", "dual"]

# On the asyncio store too (behind the synchronous face of tests/support/aio.py): a subset, each
# part of finish once (what it does, LeaseLost, dead letters and take-overs, lost replies, one
# round trip, phases, the compatible queue); not the many workers (threads, the longest test),
# nor bad input (tests/aio/test_aio.py) and the refusals the first tests' twins cover.
both = pytest.mark.parametrize("flavour", FLAVOURS)


def leases(store) -> list[str]:
    return store.client.zrange(store.keys.leases, 0, -1)


def expire(store, job) -> None:
    """``job``'s lease runs out now (its worker stopped renewing it)."""
    store.client.zadd(store.keys.leases, {job.claim: 0})


class Seen(Events):
    def __init__(self):
        super().__init__()
        self.operations: list[tuple[str, str | None, str]] = []
        self.letters: list[str] = []

    def operation(self, name, strategy, workspace_id, outcome, seconds):
        self.operations.append((name, workspace_id, outcome))

    def dead_letter(self, letter):
        self.letters.append(letter.entry)


def finish_op(store, job, status=JobStatus.COMPLETED, changes=None, take_next=True, lease_ms=None):
    return ops_finish.finish(store.context, job, status, changes or {}, take_next, lease_ms)


def resend(store, op, step):
    """Send ``step`` (again: redis-py's re-send of a call whose reply was lost) and drive ``op``
    to its end."""
    try:
        while True:
            step = op.send(store.driver._do(step))
    except StopIteration as done:
        return done.value


def every_step_twice(store, op):
    """Run ``op`` with each of its Redis steps sent twice (the second reply is the one it sees)."""
    reply = None
    try:
        while True:
            step = op.send(reply)
            if isinstance(step, Batch):
                store.driver._do(step)
            reply = store.driver._do(step)
    except StopIteration as done:
        return done.value


# -- what it does ----------------------------------------------------------------------------

@both
def test_finish_moves_the_job_under_its_claim_and_claims_the_next(store):
    first = store.enqueue("acme", "a")
    second = store.enqueue("globex", "b")
    job = store.dequeue()
    assert job.job_id == first.job_id

    taken = store.finish(job, result={"words": 120})

    done = store.get(first.job_id, workspace_id="acme")
    assert (done.status, done.result, done.attempts) == (JobStatus.COMPLETED, {"words": 120}, 1)
    assert (taken.job_id, taken.status, taken.attempts) == (second.job_id, JobStatus.RUNNING, 1)
    assert store.get(second.job_id, workspace_id="globex") == taken
    assert leases(store) == [taken.claim]  # the finished job's lease is gone, the next one's held
    with pytest.raises(LeaseLost):
        store.extend(job)  # the finished claim has ended
    store.extend(taken)

    assert store.finish(taken, "failed", error="boom") is None  # nothing pending
    failed = store.get(second.job_id, workspace_id="globex")
    assert (failed.status, failed.error) == (JobStatus.FAILED, "boom")
    assert leases(store) == []


def test_without_take_next_nothing_is_claimed(store):
    store.enqueue("acme", "a")
    pending = store.enqueue("acme", "b")
    job = store.dequeue()
    assert store.finish(job, "cancelled", take_next=False) is None
    assert store.get(job.job_id, workspace_id="acme").status is JobStatus.CANCELLED
    assert store.get(pending.job_id, workspace_id="acme").status is JobStatus.PENDING
    assert leases(store) == []
    assert store.dequeue().job_id == pending.job_id


@both
def test_the_next_job_is_leased_for_the_lease_given(make_store):
    store = make_store("legacy")  # the store's lease: an hour
    store.enqueue("acme", "a")
    store.enqueue("acme", "b")
    taken = store.finish(store.dequeue(), lease=100)
    ((claim, until),) = store.client.zrange(store.keys.leases, 0, -1, withscores=True)
    assert claim == taken.claim
    seconds, micros = store.client.time()
    left = until - (seconds * 1000 + micros // 1000)
    assert 0 < left <= 100_000  # not the store's hour


def test_an_update_that_is_refused_claims_nothing(store):
    store.enqueue("acme", "a")
    pending = store.enqueue("acme", "b")
    job = store.dequeue()
    store.update_status(job.job_id, "cancelled", workspace_id="acme")  # an operator cancels it
    with pytest.raises(InvalidTransition):  # as update_status with the claim: the claim stands
        store.finish(job)
    assert store.get(job.job_id, workspace_id="acme").status is JobStatus.CANCELLED
    assert store.get(pending.job_id, workspace_id="acme").status is JobStatus.PENDING
    store.delete(job.job_id, workspace_id="acme")
    with pytest.raises(jobstore.JobNotFound):
        store.finish(job)
    assert store.get(pending.job_id, workspace_id="acme").status is JobStatus.PENDING


@both
def test_a_worker_that_was_taken_over_gets_lease_lost_and_changes_nothing(make_store):
    events = Seen()
    worker_a = make_store("dual", events=events)
    worker_b = make_store("dual")
    job = worker_a.enqueue("acme", "a")
    pending = worker_a.enqueue("acme", "b")
    held_by_a = worker_a.dequeue()
    expire(worker_a, held_by_a)
    held_by_b = worker_b.dequeue()  # takes the job over, before the pending one
    assert (held_by_b.job_id, held_by_b.attempts) == (job.job_id, 2)

    with pytest.raises(LeaseLost) as lost:
        worker_a.finish(held_by_a, result="late")

    assert events.operations[-1] == ("finish", "acme", "LeaseLost")
    assert lost.value.holder_attempt == 2
    assert worker_a.get(job.job_id, workspace_id="acme") == held_by_b  # not modified
    assert worker_a.get(pending.job_id, workspace_id="acme").status is JobStatus.PENDING
    assert leases(worker_a) == [held_by_b.claim]  # nothing claimed
    assert worker_b.finish(held_by_b, result="ok").job_id == pending.job_id
    assert worker_a.get(job.job_id, workspace_id="acme").result == "ok"


@both
def test_dead_letters_and_taken_over_leases_are_handled_as_dequeue_does(make_store):
    events = Seen()
    store = make_store("legacy", events=events, max_attempts=1)
    first = store.enqueue("acme", "a")
    abandoned = store.enqueue("acme", "b")
    last = store.enqueue("acme", "c")
    job = store.dequeue()
    dead_worker_s = store.dequeue()
    assert (job.job_id, dead_worker_s.job_id) == (first.job_id, abandoned.job_id)
    expire(store, dead_worker_s)
    store.client.rpush(store.keys.queue, "no-colon")  # the oldest entry now: cannot be parsed

    taken = store.finish(job)

    assert taken.job_id == last.job_id
    failed = store.get(abandoned.job_id, workspace_id="acme")  # its last attempt's lease ran out
    assert failed.status is JobStatus.FAILED and "max_attempts" in failed.error
    assert [letter.entry for letter in store.dead_letters()] == ["no-colon"]
    assert events.letters == ["no-colon"]


@both
def test_a_claim_that_must_look_further_goes_on_as_dequeue_does(make_store):
    """More dropped entries than one script call examines: the take goes on in further calls."""
    store = make_store("dual")
    store.context.dequeue_scan = 2
    job = store.enqueue("acme", "a")
    dropped = [store.enqueue("acme", f"cancelled {n}") for n in range(5)]
    wanted = store.enqueue("acme", "b")
    for cancelled in dropped:
        store.update_status(cancelled.job_id, "cancelled", workspace_id="acme")
    assert store.dequeue().job_id == job.job_id
    assert store.finish(store.get(job.job_id, workspace_id="acme")).job_id == wanted.job_id
    assert store.dequeue() is None and store.client.llen(store.keys.queue) == 0


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, argument", [
    (lambda s, j: s.finish(j, "running"), "status"),
    (lambda s, j: s.finish(j, "pending"), "status"),
    (lambda s, j: s.finish(j, "done"), "status"),
    (lambda s, j: s.finish(None), "job"),
    (lambda s, j: s.finish(j.job_id), "job"),
    (lambda s, j: s.finish(dataclasses.replace(j, claim=None)), "job"),
    (lambda s, j: s.finish(j, take_next="yes"), "take_next"),
    (lambda s, j: s.finish(j, take_next=None), "take_next"),
    (lambda s, j: s.finish(j, lease=0), "lease"),
    (lambda s, j: s.finish(j, lease=True), "lease"),
    (lambda s, j: s.finish(j, lease="60"), "lease"),
    (lambda s, j: s.finish(j, result={"x": object()}), "result"),
    (lambda s, j: s.finish(j, error=42), "error"),
])
def test_bad_input_names_the_argument_before_anything_is_sent(call, argument):
    # Nothing listens there: anything sent would be StoreUnavailable (the asyncio store's bad
    # input: tests/aio/test_aio.py).
    store = jobstore.open(f"redis://127.0.0.1:{free_port()}/0", "dual")
    job = jobstore.open("memory://finish-bad-input", "legacy")
    job.enqueue("acme", "a")
    claimed = job.dequeue()
    with pytest.raises(InvalidArgument) as caught:
        call(store, claimed)
    assert caught.value.argument == argument


# -- lost replies ----------------------------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def standalone(request):
    if request.param == "memory":
        return "memory://finish-replay"
    return request.getfixturevalue("redis_url")


def fresh(open_store, url, strategy="legacy", **options):
    store = open_store(url, strategy, **options)
    store.client.flushall()
    return store


@both
def test_a_resent_finish_whose_first_attempt_claimed_a_job_answers_that_job(open_store, standalone):
    """The claim half: between the first attempt (applied, reply lost) and its re-send, the job
    it claimed is deleted, enqueued again and handed to another worker."""
    store = fresh(open_store, standalone)
    store.enqueue("acme", "a", job_id="j1")
    old = store.enqueue("acme", "b", job_id="j2")
    job = store.dequeue()
    op = finish_op(store, job)
    step = next(op)
    store.driver._do(step)  # the first attempt: applied, its reply lost
    assert store.delete("j2", workspace_id="acme")
    new = store.enqueue("acme", "b again", job_id="j2")
    other = jobstore.open(standalone, "legacy").dequeue()
    assert other.created_at == new.created_at

    taken = resend(store, op, step)

    assert (taken.action, taken.created_at) == ("b", old.created_at)  # what the first took
    assert store.get("j2", workspace_id="acme") == other  # never handed out a second time
    assert store.get("j1", workspace_id="acme").status is JobStatus.COMPLETED


@both
def test_a_resent_finish_does_not_finish_again(open_store, standalone):
    """The update half: between the first attempt and its re-send, the finished job is deleted
    and its id enqueued again (a new job, pending); the re-send answers for its own job."""
    store = fresh(open_store, standalone)
    store.enqueue("acme", "a", job_id="j1")
    store.enqueue("acme", "b", job_id="j2")
    job = store.dequeue()
    op = finish_op(store, job, JobStatus.FAILED, {"error": "first"})
    step = next(op)
    store.driver._do(step)
    assert store.delete("j1", workspace_id="acme")
    again = store.enqueue("acme", "a again", job_id="j1")

    taken = resend(store, op, step)

    assert taken.job_id == "j2" and taken.attempts == 1
    assert store.get("j1", workspace_id="acme") == again  # pending, untouched
    assert store.dequeue().created_at == again.created_at
    assert store.dequeue() is None


@both
def test_a_resent_finish_whose_first_attempt_found_nothing_claims_like_a_new_dequeue(open_store, standalone):
    store = fresh(open_store, standalone)
    store.enqueue("acme", "a", job_id="j1")
    job = store.dequeue()
    op = finish_op(store, job)
    step = next(op)
    store.driver._do(step)  # finished j1; nothing to claim
    store.enqueue("acme", "b", job_id="j2")

    taken = resend(store, op, step)  # not InvalidTransition completed -> completed

    assert taken.job_id == "j2" and store.get("j1", workspace_id="acme").status is JobStatus.COMPLETED
    with pytest.raises(InvalidTransition):  # a new call is a new call
        store.finish(job)


@both
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_finish_whose_every_step_is_sent_twice_finishes_once_and_claims_once(make_store,
                                                                              strategy):
    """Every step: on Cluster the update's and the take's steps each."""
    store = make_store(strategy)
    jobs = [store.enqueue("acme", f"j{n}") for n in range(4)]
    job = store.dequeue()
    rev = store.client.hget(f"ai:jobs:{job.job_id}", "_rev") if strategy != "workspace" else None

    taken = every_step_twice(store, finish_op(store, job))

    assert (taken.job_id, taken.attempts) == (jobs[1].job_id, 1)
    if rev is not None:  # one write, not two
        assert int(store.client.hget(f"ai:jobs:{job.job_id}", "_rev")) == int(rev) + 1
    assert store.get(job.job_id, workspace_id="acme").status is JobStatus.COMPLETED
    assert leases(store) == [taken.claim]
    rest = [store.dequeue(), store.dequeue(), store.dequeue()]
    assert [j and j.job_id for j in rest] == [jobs[2].job_id, jobs[3].job_id, None]


@both
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_reply_lost_on_the_wire_is_resent_and_answered_once(open_store, redis_server, redis_url,
                                                             strategy):
    with FaultProxy(redis_server.host, redis_server.port) as proxy:
        store = open_store(proxy.url, strategy)
        jobs = [store.enqueue("ws", f"j{n}") for n in range(3)]
        job = store.dequeue()
        store.finish(store.dequeue(), take_next=False)  # loads the script: a retry is a re-send
        calls = redis_server.client().info("commandstats")["cmdstat_evalsha"]["calls"]
        proxy.drop_next_reply(b"EVALSHA")

        taken = store.finish(job)

        stats = redis_server.client().info("commandstats")["cmdstat_evalsha"]["calls"]
        assert stats - calls == 2, "the script ran twice: the re-send happened"
        assert taken.job_id == jobs[2].job_id  # not InvalidTransition, not a second claim
        assert store.get(job.job_id, workspace_id="ws").status is JobStatus.COMPLETED
        assert store.dequeue() is None
        store.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_finish_leaves_one_op_marker_and_its_first_attempt_reads_none(open_store, redis_server,
                                                                       redis_url, strategy):
    """What a job costs Redis: one marker answers both halves of a finish (not one each), and a
    first attempt, whose job is still running under its claim, reads no marker at all."""
    store = fresh(open_store, redis_url, strategy)
    store.enqueue_many([("ws", f"j{n}") for n in range(3)])
    job = store.finish(store.dequeue())  # the dequeue's marker is spent: gone with this call
    stats = redis_server.client().info("commandstats")

    store.finish(job)

    after = redis_server.client().info("commandstats")
    assert "cmdstat_get" not in after or after["cmdstat_get"] == stats.get("cmdstat_get")
    assert after["cmdstat_set"]["calls"] - stats["cmdstat_set"]["calls"] == 1
    assert len(store.client.keys(f"{store.keys.prefix}:op:*")) == 1


# -- many workers ----------------------------------------------------------------------------

@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def server_url(request):
    return request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_workers_looping_on_finish_run_each_job_once_and_lose_none(server_url, strategy):
    producer = jobstore.open(server_url, strategy)
    jobs = producer.enqueue_many([(f"ws{n % 3}", "work", {"n": n}) for n in range(150)])
    cancelled = {job.job_id for job in jobs[::10]}
    for job in jobs[::10]:
        producer.update_status(job.job_id, "cancelled", workspace_id=job.workspace_id)
    ran: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker():
        try:
            with jobstore.open(server_url, strategy) as store:
                job = store.dequeue()
                while job is not None:
                    with lock:
                        ran.append(job.job_id)
                    job = store.finish(job, result={"by": threading.get_ident()})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    counts = Counter(ran)
    assert max(counts.values()) == 1
    assert set(counts) == {job.job_id for job in jobs} - cancelled
    for job in jobs:
        stored = producer.get(job.job_id, workspace_id=job.workspace_id)
        assert stored.status is (JobStatus.CANCELLED if job.job_id in cancelled
                                 else JobStatus.COMPLETED)
    assert leases(producer) == [] and producer.dequeue() is None


# -- one round trip --------------------------------------------------------------------------

@both
@pytest.mark.parametrize("strategy, options", CONFIGS, ids=lambda v: str(v))
def test_finish_takes_one_round_trip(open_store, flavour, redis_url, strategy, options):
    store = open_store(redis_url, strategy, **options, client_options=counted(flavour))
    store.enqueue_many([("ws", f"j{n}") for n in range(4)])
    store.finish(store.dequeue(), take_next=False)  # loads the scripts
    job = store.dequeue()

    n, taken = round_trips(lambda: store.finish(job))
    assert n == 1 and taken.status is JobStatus.RUNNING
    n, last = round_trips(lambda: store.finish(taken, "failed", error="x", take_next=False))
    assert n == 1 and last is None
    job = store.dequeue()
    assert round_trips(lambda: store.finish(job)) == (1, None)  # nothing left
    n, _ = round_trips(lambda: pytest.raises(InvalidTransition, store.finish, job))  # twice
    assert n == 1


# -- every phase of a migration, and the compatible queue --------------------------------------

@both
def test_finish_follows_every_phase_switch_and_writes_every_copy(make_store):
    legacy = make_store("legacy")
    clock = FakeClock(tick=0)
    migration = jobstore.Migration(legacy.client, clock=clock, wait=clock.wait)
    migration.set_phase("dual-write")
    events = Seen()
    dual = make_store("dual", events=events)
    jobs = [dual.enqueue("acme", f"j{n}") for n in range(5)]
    job = dual.dequeue()
    job = dual.finish(job)  # dual-write: both copies
    for key in (f"ai:jobs:{jobs[0].job_id}", f"ai:job:acme:{jobs[0].job_id}"):
        assert dual.client.hget(key, "status") == "completed"
    for key in (f"ai:jobs:{jobs[1].job_id}", f"ai:job:acme:{jobs[1].job_id}"):
        assert dual.client.hmget(key, "status", "claim") == ["running", job.claim]
    migration.backfill()
    assert migration.verify().clean
    migration.set_phase("read-target")  # the store's cached phase is now stale: fenced
    job = dual.finish(job)
    assert job.job_id == jobs[2].job_id
    migration.set_phase("target-only", force=True, reason="test")
    job = dual.finish(job)
    assert job.job_id == jobs[3].job_id
    assert dual.client.hget(f"ai:job:acme:{jobs[2].job_id}", "status") == "completed"
    assert dual.client.hget(f"ai:job:acme:{jobs[3].job_id}", "claim") == job.claim
    job = dual.finish(job)
    assert dual.finish(job) is None
    assert [job.status for job in dual.list("acme")] == [JobStatus.COMPLETED] * 5
    assert {name for name, _, outcome in events.operations if outcome == "ok"} == {
        "enqueue", "dequeue", "finish", "list"}


@both
def test_finish_takes_from_the_compatible_queue(open_store, redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    old = SimpleQueue(client)
    store = open_store(redis_url, "legacy", legacy_queue=QUEUE)
    mine = store.enqueue("acme", "a")
    theirs = old.enqueue("globex", "b", {"n": 1})
    job = store.dequeue()
    assert job.job_id == mine.job_id

    taken = store.finish(job)

    assert (taken.job_id, taken.workspace_id, taken.params) == (theirs, "globex", {"n": 1})
    assert store.finish(taken, result={"ok": True}) is None
    assert client.hget(f"ai:jobs:{theirs}", "status") == "completed"
    assert "T" in client.hget(f"ai:jobs:{theirs}", "updated_at")  # the old record's time form
    assert client.llen(QUEUE) == 0 and leases(store) == []


def test_a_finish_re_sent_after_a_switch_touches_other_copies_claims_no_second_job(redis_url,
                                                                                    open_store):
    # The first attempt moves the only copy its phase routes to (target-only) and claims the
    # next job; its reply is lost. A forced rollback routes the re-send to both copies, one of
    # them still running under the claim, as a first attempt would find it: the re-send must
    # still be recognised by its op marker and answer the job it claimed, not claim another.
    store = open_store(redis_url, "dual")
    ages = iter(range(0, 10**6, 10))
    store.driver.core.monotonic = lambda: next(ages)  # every call reads the phase first
    clock = FakeClock(tick=0)
    migration = jobstore.Migration(store.client, clock=clock, wait=clock.wait)
    for phase in ("dual-write", "read-target"):
        migration.set_phase(phase, force=True, reason="test")
    for job_id in ("j1", "j2", "j3"):
        store.enqueue("acme", "a", job_id=job_id)
    job = store.dequeue()
    assert job.job_id == "j1"
    migration.set_phase("target-only", force=True, reason="test")
    store.get("x", workspace_id="acme")  # follows the switch
    op = ops_finish.finish(store.context, job, JobStatus.COMPLETED, {}, True, None)
    step = next(op)
    store.driver._do(step)  # the first attempt lands; its reply is lost
    migration.set_phase("dual-write", force=True, reason="rollback")
    try:
        while True:
            step = op.send(store.driver._do(step))
    except StopIteration as done:
        taken = done.value
    assert taken is not None and taken.job_id == "j2"
    assert store.get("j3", workspace_id="acme").status is JobStatus.PENDING
    assert store.dequeue().job_id == "j3"
