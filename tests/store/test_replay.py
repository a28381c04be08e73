"""A re-sent write answers for its own call only.

redis-py re-sends a command whose reply was lost, up to ~40 s later with the default timeouts.
If the job's id was deleted and reused in between (by another workspace, or by a new job), the
re-send used to answer with whatever the key held now: acme's enqueue returned globex's record,
and a re-sent dequeue handed out a job a second worker had already received. Here the first
attempt and its re-send are the same script call, sent twice by hand with the interleaving
writes in between, so the scenario is exact, not timing-dependent.
"""

from __future__ import annotations

import threading

import pytest
import redis

import jobstore
from jobstore.ops import cluster as ops_cluster
from jobstore.ops import finish as ops_finish
from jobstore.scripts import DEQUEUE, FINISH, TAKE
from jobstore.steps import Batch
from tests.conftest import keys
from tests.support.aio import FLAVOURS


# The asyncio store too (behind the synchronous face of tests/support/aio.py): its driver sends
# the same steps, so a re-sent step is recognised by the same markers.
both = pytest.mark.parametrize("flavour", FLAVOURS)


def first_batch(store, op):
    """Start ``op`` (an operation generator of ``store``) and return ``(op, its first batch)``."""
    step = next(op)
    assert isinstance(step, Batch)
    return op, step


def finish(store, op, step):
    """Send ``step`` (again: a re-send) and drive ``op`` to its end."""
    try:
        while True:
            step = op.send(store.driver._do(step))
    except StopIteration as done:
        return done.value


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def url(request):
    if request.param == "memory":
        return "memory://replay"
    return request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")


def flush(store):
    client = store.client
    if store.driver.cluster:
        client.flushall(target_nodes=client.PRIMARIES)
    else:
        client.flushall()


@both
def test_a_replayed_enqueue_never_answers_with_another_workspaces_job(open_store, url):
    acme = open_store(url, "legacy")
    flush(acme)
    job, fields = acme._new_job("acme", "summarise", {"secret": "acme's"}, "j1")
    op, batch = first_batch(acme, acme._writes.enqueue(acme.context, job, fields))
    acme.driver._do(batch)  # the first attempt: applied, its reply lost
    assert acme.delete("j1", workspace_id="acme")
    globex = open_store(url, "legacy").enqueue("globex", "steal", {"secret": "globex's"},
                                                   job_id="j1")
    answered = finish(acme, op, batch)  # redis-py's re-send
    assert answered == job and answered.params == {"secret": "acme's"}
    assert acme.get("j1", workspace_id="globex") == globex  # nothing of globex's changed


@both
def test_a_replayed_dequeue_never_hands_out_a_job_twice(open_store, url):
    store = open_store(url, "legacy")
    if store.driver.cluster:
        pytest.skip("one script per claim on standalone; Cluster's claim is several steps, "
                    "its replayed step is the update's (test below)")
    flush(store)
    old = store.enqueue("acme", "first", job_id="j1")
    op, batch = first_batch(store, store._writes.dequeue(store.context, 0))
    store.driver._do(batch)  # worker A's claim: applied, its reply lost
    assert store.delete("j1", workspace_id="acme")
    new = store.enqueue("acme", "second", job_id="j1")
    b_got = open_store(url, "legacy").dequeue()  # worker B claims the new job
    assert b_got.job_id == "j1" and b_got.created_at == new.created_at
    a_got = finish(store, op, batch)  # A's re-send
    assert a_got.created_at == old.created_at and a_got.action == "first"  # what A claimed
    assert a_got.status.value == "running"


def lost_once(store, op, lost):
    """Drive ``op``; the first step that ``lost(step)`` picks is applied and its reply lost, then
    sent again, as redis-py re-sends it."""
    reply, resent = None, False
    try:
        while True:
            step = op.send(reply)
            if not resent and isinstance(step, Batch) and lost(step):
                store.driver._do(step)
                resent = True
            reply = store.driver._do(step)
    except StopIteration as done:
        assert resent, "no step was picked"
        return done.value


def takes(step):
    """The step that takes the next entry from the queue (Cluster: into the call's claim list)."""
    return any(getattr(call, "lua", None) in (DEQUEUE, FINISH, TAKE) for call in step.calls)


@both
@pytest.mark.parametrize("call", ["dequeue", "finish"])
def test_a_take_whose_reply_was_lost_hands_out_the_job_it_took(open_store, url, call):
    """The re-sent take answers with the entry its first attempt took, at once: not nothing,
    with the job left in the call's claim list until a later dequeue puts it back."""
    store = open_store(url, "dual")
    flush(store)
    store.enqueue("acme", "a", job_id="j1")
    if call == "finish":
        held = store.dequeue(timeout=0)
        store.enqueue("acme", "b", job_id="j2")
        op = ops_finish.finish(store.context, held, jobstore.JobStatus.COMPLETED, {}, True)
    else:
        op = store._writes.dequeue(store.context, 0)

    got = lost_once(store, op, takes)

    wanted = "j2" if call == "finish" else "j1"
    assert got is not None and (got.job_id, got.status.value) == (wanted, "running")
    assert store.get(wanted, workspace_id="acme").claim == got.claim
    assert store.client.zrange(store.keys.leases, 0, -1) == [got.claim]
    assert keys(store.client, "ai:claim:*") == []  # no entry left behind
    assert store.dequeue(timeout=0) is None


@both
def test_a_replayed_update_answers_what_it_did(open_store, url):
    store = open_store(url, "legacy")
    flush(store)
    store.enqueue("acme", "a", job_id="j1")
    op, batch = first_batch(store, store._writes.update_status(store.context, "j1", "acme",
                                                               jobstore.JobStatus.CANCELLED, {}))
    store.driver._do(batch)
    assert store.delete("j1", workspace_id="acme")
    store.enqueue("acme", "again", job_id="j1")  # a new job under the id, pending
    answered = finish(store, op, batch)
    assert answered.status.value == "cancelled" and answered.action == "a"
    assert store.get("j1", workspace_id="acme").status.value == "pending"  # untouched


@both
@pytest.mark.parametrize("strategy, options", [
    ("legacy", {}), ("dual", {"source": "legacy", "target": "workspace", "phase": "dual-write"})])
def test_a_replayed_enqueue_does_not_bring_back_a_job_run_and_deleted_meanwhile(
        open_store, url, strategy, options):
    """No marker key per enqueue any more: the record names the call that made it,
    and a delete keeps that name for the marker ttl. The worst moment for a re-send: its first
    attempt's job was already handed out, run and deleted (standalone: the enqueue is one
    script, so its job is queued at once; Cluster: deleted before its queue step)."""
    store = open_store(url, strategy, **options)
    flush(store)
    job, fields = store._new_job("acme", "once", {"n": 1}, "j1")
    op, batch = first_batch(store, store._writes.enqueue(store.context, job, fields))
    while not any(getattr(call, "lua", None) for call in batch.calls):  # Cluster: reads first
        batch = op.send(store.driver._do(batch))
    store.driver._do(batch)  # the first attempt: applied, its reply lost
    if not store.driver.cluster:
        got = store.dequeue(timeout=0)
        assert got.job_id == "j1"
        store.update_status("j1", "completed", workspace_id="acme", claim=got.claim)
    assert store.delete("j1", workspace_id="acme")
    assert finish(store, op, batch) == job  # the re-send answers for its own call...
    assert store.get("j1", workspace_id="acme") is None  # ...and does not write the job again
    assert store.dequeue(timeout=0) is None
    # A new enqueue of the id is a new job, not a replay.
    again = store.enqueue("acme", "twice", job_id="j1")
    assert store.get("j1", workspace_id="acme") == again


@both
@pytest.mark.parametrize("strategy, options, records", [
    ("legacy", {}, 1), ("dual", {"source": "legacy", "target": "workspace", "phase": "dual-write"}, 2)])
def test_an_enqueue_leaves_no_key_but_its_records(open_store, url, strategy, options, records):
    """An enqueue leaves its records and nothing else: no op-marker key per job (20k enqueues
    would leave 20k keys alive for the marker's ten minutes)."""
    store = open_store(url, strategy, **options)
    flush(store)
    store.get("warm", workspace_id="acme")  # the phase read, when dual
    client = store.client
    scan = ((lambda: list(client.scan_iter("*", target_nodes=client.PRIMARIES)))
            if store.driver.cluster else (lambda: list(client.scan_iter("*"))))
    before = set(scan())
    store.enqueue("acme", "one")
    store.enqueue_many([("acme", "more"), ("acme", "more")])
    new = set(scan()) - before
    shared = {store.keys.queue, store.keys.index("acme")}
    markers = {key for key in new if ":op:" in key}
    if store.driver.cluster:
        # The queue step's markers of the last call stay until the store's next queue step.
        assert len(markers) <= 2
        assert len(new - shared - markers) == 3 * records, sorted(new - shared - markers)
        store.enqueue("acme", "next")
        assert not markers & set(scan())
        for _ in range(5):  # batches: markers never pile up beyond the last call's
            store.enqueue_many([("acme", "batch")] * 20)
            assert sum(":op:" in key for key in scan()) <= 20
        store.enqueue("acme", "next")  # ...and those go with the next queue step
        assert sum(":op:" in key for key in scan()) <= 1
    else:
        assert not markers
        assert len(new - shared) == 3 * records, sorted(new - shared)


@both
def test_a_worker_leaves_no_pile_of_markers(open_store, url):
    """update_status and dequeue keep their answer in an op marker for a re-send; once the call
    has its answer the marker goes (kept for their ttl, at 1,000 jobs/s 600 s of those markers were 1.2
    million keys of about 520 bytes each). Standalone: the store's next call's script deletes
    it. Cluster: each marker sits in its record's slot, so they go in bulk, one Tidy per TIDY_AT
    of them (with the arbiters of the jobs that finished, which lived an hour)."""
    store = open_store(url, "legacy")
    flush(store)
    cluster = store.driver.cluster
    # Standalone: the calls not followed yet. Cluster: what waits for the next Tidy, which
    # starts with the queue-step markers of the enqueue_many below (one per job).
    bound = 2 * ops_cluster.TIDY_AT if cluster else 2
    jobs = 3 * ops_cluster.TIDY_AT if cluster else 50
    store.enqueue_many([("acme", "work", {"n": n}) for n in range(jobs)])
    for _ in range(jobs):
        job = store.dequeue(timeout=0)
        store.update_status(job.job_id, "completed", workspace_id="acme", claim=job.claim)
        assert store.driver.tidier.wait()
        assert len(keys(store.client, "ai:op:*")) <= bound
    assert store.dequeue(timeout=0) is None
    assert store.driver.tidier.wait()
    left = keys(store.client, "ai:op:*") + keys(store.client, "ai:claimed:*")
    assert len(left) <= (ops_cluster.TIDY_AT if cluster else 1), left
    assert len(keys(store.client)) <= jobs + 2 + len(left)  # records, the index, the leases


@pytest.mark.cluster
@pytest.mark.parametrize("failure", [
    redis.exceptions.ConnectionError("the tidy's connection broke"),
    redis.exceptions.SlotNotCoveredError("a slot moved during a failover"),
    redis.exceptions.RedisClusterException("All slots are not covered"),
    "hangs",
])
def test_a_tidy_that_fails_or_hangs_holds_up_nothing(cluster_url, monkeypatch, failure):
    """Deleting spent markers is an extra, on every primary: while it fails (any error) or hangs
    (a primary that stopped answering), every call still answers at once, and the markers
    expire on their own."""
    store = jobstore.open(cluster_url, "legacy")
    flush(store)
    tidied = []
    release = threading.Event()
    caller = threading.current_thread()
    pipeline = store.driver.client.pipeline

    def breaking_unlinks(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        queued = []
        execute_command, execute = pipe.execute_command, pipe.execute

        def queue(*command, **options):
            queued.append(command[0])
            return execute_command(*command, **options)

        def execute_or_break(*args, **kwargs):
            if queued and set(queued) == {"UNLINK"}:
                tidied.append(len(queued))
                if threading.current_thread() is caller:
                    raise AssertionError("the tidy ran on the operation's path")
                if failure == "hangs":
                    release.wait(60)
                else:
                    raise failure
            return execute(*args, **kwargs)

        pipe.execute_command, pipe.execute = queue, execute_or_break
        return pipe

    monkeypatch.setattr(store.driver.client, "pipeline", breaking_unlinks)
    try:
        store.enqueue_many([("acme", "work", {"n": n}) for n in range(ops_cluster.TIDY_AT + 2)])
        for _ in range(ops_cluster.TIDY_AT + 2):
            job = store.dequeue(timeout=0)
            done = store.update_status(job.job_id, "completed", workspace_id="acme", claim=job.claim)
            assert done.status is jobstore.JobStatus.COMPLETED
        if failure == "hangs":
            assert tidied and not release.is_set()  # the calls above answered while it hung
        assert store.driver.tidier.wait(10 if failure != "hangs" else 0.1) is (failure != "hangs")
    finally:
        release.set()
    assert store.driver.tidier.wait()
    assert tidied  # it was tried
    markers = keys(store.client, "ai:op:*")
    if failure != "hangs":  # the hung one went on once released
        assert markers and all(0 < store.client.ttl(m) <= store.context.marker_ttl for m in markers)


class RecordingClient:
    """A client whose UNLINKs are recorded; the keys listed in ``fail`` make it raise."""

    def __init__(self, fail=()):
        self.unlinked, self.fail = [], set(fail)

    def execute_command(self, *args):
        if self.fail & set(args[1:]):
            raise TypeError("not even a Redis error")
        self.unlinked.append(args[1:])


def test_the_tidier_survives_any_failure_and_ends_with_its_store():
    from jobstore.driver import Tidier

    client = RecordingClient(fail={"bad"})
    tidier = Tidier(client, cluster=False)
    tidier.submit(("a", "b"))
    tidier.submit(("bad",))
    tidier.submit(("c",))
    assert tidier.wait()
    assert client.unlinked == [("a", "b"), ("c",)]  # the failure in between stopped nothing
    thread = tidier._thread
    tidier._pid = -1  # as in a forked child: the parent's thread is not there
    tidier.submit(("d",))
    assert tidier.wait() and tidier._thread is not thread and client.unlinked[-1] == ("d",)
    tidier.close()
    tidier._thread.join(5)
    assert not tidier._thread.is_alive()


def test_the_tidier_thread_ends_when_idle_and_comes_back_for_more():
    """A store dropped without close() is not kept alive by its thread for ever."""
    from jobstore.driver import Tidier

    client = RecordingClient()
    tidier = Tidier(client, cluster=False)
    tidier.IDLE = 0.05
    tidier.submit(("a",))
    thread = tidier._thread
    thread.join(5)
    assert not thread.is_alive() and tidier._thread is None and client.unlinked == [("a",)]
    tidier.submit(("b",))
    assert tidier.wait() and client.unlinked == [("a",), ("b",)]
