"""The store's operations (enqueue, get, update_status, list, dequeue, delete), for every
built-in strategy, on fakeredis and on real Redis."""

from __future__ import annotations

import inspect
import re
import threading
import time
import uuid

import pytest

import jobstore
from jobstore import InvalidTransition, JobExists, JobNotFound, JobStatus
from jobstore.ops.queue import UNBLOCKED_POLL
from tests.support.aio import FLAVOURS

# The core real-Redis tests: .ci/run runs them on every supported server build too.
pytestmark = pytest.mark.core


def test_enqueue_returns_a_pending_job_that_get_reads_back(store):
    job = store.enqueue("ws1", "summarise", {"doc": 7})
    assert job.status is JobStatus.PENDING
    assert len(job.job_id) == 32 and int(job.job_id, 16) >= 0  # uuid4 hex
    assert job.created_at == job.updated_at > 0
    assert store.get(job.job_id, workspace_id="ws1") == job


def test_enqueue_existing_id_raises_and_changes_nothing(store):
    first = store.enqueue("ws1", "a", {"n": 1}, job_id="same")
    with pytest.raises(JobExists) as info:
        store.enqueue("ws1", "b", {"n": 2}, job_id="same")
    assert info.value.job_id == "same"
    assert store.get("same", workspace_id="ws1") == first
    assert store.dequeue().job_id == "same"
    assert store.dequeue() is None  # no second queue entry


def test_get_missing_returns_none(store):
    assert store.get("nope", workspace_id="ws1") is None


def test_other_workspace_never_reads_updates_or_deletes_a_job(store):
    job = store.enqueue("owner", "a", job_id="j1")
    assert store.get("j1", workspace_id="intruder") is None
    with pytest.raises(JobNotFound):
        store.update_status("j1", "cancelled", workspace_id="intruder")
    assert store.delete("j1", workspace_id="intruder") is False
    assert store.list("intruder") == []
    assert store.get("j1", workspace_id="owner") == job


def test_update_status_follows_the_allowed_moves(store):
    job = store.enqueue("ws1", "a")
    with pytest.raises(InvalidTransition) as info:
        store.update_status(job.job_id, "completed", workspace_id="ws1")
    assert (info.value.current, info.value.requested) == ("pending", "completed")
    running = store.update_status(job.job_id, JobStatus.RUNNING, workspace_id="ws1")
    assert running.status is JobStatus.RUNNING and running.updated_at >= job.updated_at
    done = store.update_status(job.job_id, "completed", workspace_id="ws1", result=[1, "two"])
    assert done.result == [1, "two"] and done.error is None
    for status in JobStatus:
        with pytest.raises(InvalidTransition):
            store.update_status(job.job_id, status, workspace_id="ws1")
    assert store.get(job.job_id, workspace_id="ws1") == done


def test_update_status_never_creates_a_record(store):
    with pytest.raises(JobNotFound):
        store.update_status("ghost", "running", workspace_id="ws1")
    assert store.get("ghost", workspace_id="ws1") is None
    assert store.client.dbsize() == 0


def test_failed_job_keeps_its_error(store):
    job = store.enqueue("ws1", "a")
    store.update_status(job.job_id, "running", workspace_id="ws1")
    failed = store.update_status(job.job_id, "failed", workspace_id="ws1", error="boom")
    assert failed.error == "boom" and failed.status is JobStatus.FAILED


def test_fields_unknown_to_the_library_survive_updates(store):
    job = store.enqueue("ws1", "a")
    keys = [s.job_key("ws1", job.job_id) for s in store.strategy.routing("ws1").writes]
    for key in keys:
        store.client.hset(key, mapping={"priority": "high", "owner_team": "ml"})
    store.update_status(job.job_id, "running", workspace_id="ws1")
    store.update_status(job.job_id, "completed", workspace_id="ws1", result={"ok": 1})
    for key in keys:
        stored = store.client.hgetall(key)
        assert stored["priority"] == "high" and stored["owner_team"] == "ml"
        assert stored["status"] == "completed"


def test_stored_hash_layout(store):
    job = store.enqueue("ws1", "act", {"k": [1]})
    for schema in store.strategy.routing("ws1").writes:
        stored = store.client.hgetall(schema.job_key("ws1", job.job_id))
        # the enqueue call's token (jobstore.rules.OP): how a re-sent enqueue knows its record
        assert re.fullmatch(r"[A-Za-z0-9_-]{12}", stored.pop("_op"))
        assert stored == {
            "job_id": job.job_id, "workspace_id": "ws1", "action": "act", "status": "pending",
            "params": '{"k":[1]}', "result": "", "error": "",
            "created_at": repr(job.created_at), "updated_at": repr(job.updated_at),
            "_rev": "1",  # the record's write count (jobstore.rules)
        }
    store.update_status(job.job_id, "cancelled", workspace_id="ws1")
    for schema in store.strategy.routing("ws1").writes:
        assert store.client.hget(schema.job_key("ws1", job.job_id), "_rev") == "2"


def test_delete(store):
    job = store.enqueue("ws1", "a")
    assert store.delete(job.job_id, workspace_id="ws1") is True
    assert store.get(job.job_id, workspace_id="ws1") is None
    assert store.delete(job.job_id, workspace_id="ws1") is False
    assert store.list("ws1") == []
    assert store.dequeue() is None  # its queue entry is dropped, not handed out


def test_list_newest_first_with_status_filter_and_limit(store):
    jobs = [store.enqueue("ws1", f"a{i}") for i in range(5)]
    store.enqueue("ws2", "other")
    assert [j.job_id for j in store.list("ws1")] == [j.job_id for j in reversed(jobs)]
    assert [j.job_id for j in store.list("ws1", limit=2)] == [jobs[4].job_id, jobs[3].job_id]
    store.update_status(jobs[1].job_id, "cancelled", workspace_id="ws1")
    store.update_status(jobs[3].job_id, "cancelled", workspace_id="ws1")
    cancelled = store.list("ws1", status="cancelled")
    assert [j.job_id for j in cancelled] == [jobs[3].job_id, jobs[1].job_id]
    assert store.list("ws1", status=JobStatus.COMPLETED) == []


def test_list_status_filter_pages_past_the_first_page(store):
    jobs = store.enqueue_many([("ws1", "a") for _ in range(150)])
    store.update_status(jobs[0].job_id, "cancelled", workspace_id="ws1")  # the oldest
    assert [j.job_id for j in store.list("ws1", status="cancelled", limit=5)] == [jobs[0].job_id]


def test_dequeue_is_fifo_marks_running_and_skips_cancelled(store):
    a, b, c = (store.enqueue("ws1", name) for name in "abc")
    store.update_status(b.job_id, "cancelled", workspace_id="ws1")
    first = store.dequeue()
    assert first.job_id == a.job_id and first.status is JobStatus.RUNNING
    assert store.get(a.job_id, workspace_id="ws1").status is JobStatus.RUNNING
    assert store.dequeue().job_id == c.job_id
    assert store.dequeue() is None


@pytest.mark.parametrize("timeout", [0, 5], ids=["at-once", "blocking"])
def test_a_job_enqueued_again_under_a_deleted_id_waits_its_turn(store, timeout):
    store.enqueue("ws1", "first", job_id="x")
    assert store.delete("x", workspace_id="ws1")  # its queue entry stays behind
    older = store.enqueue("ws1", "older", job_id="o")
    again = store.enqueue("ws1", "again", job_id="x")
    claimed = [store.dequeue(timeout=timeout) for _ in range(2)]
    assert [j.job_id for j in claimed] == ["o", "x"], "oldest pending first, the stale entry dropped"
    assert claimed[0] == store.get("o", workspace_id="ws1") and claimed[0].action == older.action
    assert claimed[1].action == again.action == "again"
    assert store.dequeue(timeout=0) is None


def test_a_queue_entry_without_a_stamp_still_dequeues(store):
    """Entries ``workspace:job``, as earlier versions wrote them, match any record of the id."""
    job = store.enqueue("ws1", "a", job_id="j1")
    store.client.delete("ai:queue")
    store.client.lpush("ai:queue", "ws1:j1")
    claimed = store.dequeue(timeout=0)
    assert claimed.job_id == job.job_id and claimed.status is JobStatus.RUNNING
    assert store.dequeue(timeout=0) is None


def test_dequeue_timeout_waits_for_a_job_enqueued_meanwhile(store):
    assert store.dequeue(timeout=0.2) is None

    def later():
        time.sleep(0.3)
        store.enqueue("ws1", "late", job_id="late")

    thread = threading.Thread(target=later)
    thread.start()
    job = store.dequeue(timeout=5)
    thread.join()
    assert job is not None and job.job_id == "late" and job.status is JobStatus.RUNNING
    assert store.dequeue() is None


def test_enqueue_many(store):
    jobs = store.enqueue_many([("ws1", "a", {"n": 1}), ("ws2", "b"), ("ws1", "c", None, "given")])
    assert [j.action for j in jobs] == ["a", "b", "c"] and jobs[2].job_id == "given"
    for job in jobs:
        assert store.get(job.job_id, workspace_id=job.workspace_id) == job
    assert [store.dequeue().job_id for _ in range(3)] == [j.job_id for j in jobs]


def test_enqueue_many_reports_existing_ids_and_enqueues_the_rest(store):
    store.enqueue("ws1", "a", job_id="old")
    with pytest.raises(JobExists) as info:
        store.enqueue_many([("ws1", "x", None, "new1"), ("ws1", "y", None, "old"), ("ws1", "z")])
    assert info.value.job_ids == ["old"]
    assert [j.action for j in info.value.created] == ["x", "z"]
    assert store.get("new1", workspace_id="ws1").action == "x"
    assert store.get("old", workspace_id="ws1").action == "a"


def test_enqueue_many_validates_everything_first(store):
    with pytest.raises(ValueError, match=r"items\[1\]"):
        store.enqueue_many([("ws1", "a", None, "dup"), ("ws1", "b", None, "dup")])
    with pytest.raises(jobstore.InvalidIdentifier, match="workspace_id"):
        store.enqueue_many([("ws1", "a"), ("bad ws", "b")])
    assert store.client.dbsize() == 0


def test_context_manager_closes(backend):
    with jobstore.open(backend, "workspace") as store:
        store.enqueue("ws1", "a")
    assert "strategy" in repr(store)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_waiting_dequeue_on_memory_looks_again_every_50_ms_not_at_once(open_store):
    """fakeredis answers a blocking wait at once: a waiting dequeue on memory:// then looks
    again every 50 ms (it asked again at once, a busy loop that held an asyncio loop)."""
    store = open_store(f"memory://wait-{uuid.uuid4().hex}")
    driver = store.aio.driver if hasattr(store, "aio") else store.driver
    real, sent = driver._io, []

    def counted(request):
        sent.append(type(request).__name__)
        return real(request)

    if inspect.iscoroutinefunction(real):
        async def counted(request):  # noqa: F811 - the asyncio driver's
            sent.append(type(request).__name__)
            return await real(request)

    driver._io = counted
    assert store.dequeue(timeout=0.5) is None
    waits = sent.count("Pause")
    most = 0.5 / UNBLOCKED_POLL  # (at most one pause per poll; fewer when a round is slow)
    assert most / 2 <= waits <= most + 2 and len(sent) <= 6 * (waits + 2), sent  # (busy: hundreds)
