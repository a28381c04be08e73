"""redis-py re-sends a command whose reply was lost. Through a TCP proxy that drops the reply
after the server ran the command, every write must answer as if it ran once."""

from __future__ import annotations

import pytest

import jobstore
from jobstore import JobStatus, StoreUnavailable
from tests.support.proxy import FaultProxy

# The core real-Redis tests: .ci/run runs them on every supported server build too.
pytestmark = pytest.mark.core


@pytest.fixture
def proxy(redis_url, redis_server):
    with FaultProxy(redis_server.host, redis_server.port) as p:
        yield p


def evalsha_calls(redis_server) -> int:
    stats = redis_server.client().info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


@pytest.fixture(params=["legacy", "workspace", "dual"])
def store(request, proxy):
    store = jobstore.open(proxy.url, request.param)
    warm = store.enqueue("ws", "warm")  # load every script, so a retry is a plain re-send
    store.update_status(warm.job_id, "cancelled", workspace_id="ws")
    store.dequeue()
    store.delete(warm.job_id, workspace_id="ws")
    yield store
    store.close()


def test_enqueue_reply_lost(store, proxy, redis_server):
    before = evalsha_calls(redis_server)
    proxy.drop_next_reply(b"EVALSHA")
    job = store.enqueue("ws", "a", {"n": 1}, job_id="j1")
    assert evalsha_calls(redis_server) - before == 2, "the script ran twice: the retry happened"
    assert job.job_id == "j1" and job.status is JobStatus.PENDING
    assert store.client.llen("ai:queue") == 1
    assert store.dequeue().job_id == "j1" and store.dequeue() is None


def test_enqueue_request_cut_before_the_server(store, proxy, redis_server):
    before = evalsha_calls(redis_server)
    proxy.cut_next_request(b"EVALSHA")
    job = store.enqueue("ws", "a", job_id="j1")
    assert evalsha_calls(redis_server) - before == 1
    assert store.get("j1", workspace_id="ws") == job and store.client.llen("ai:queue") == 1


def test_update_status_reply_lost(store, proxy, redis_server):
    store.enqueue("ws", "a", job_id="j1")
    before = evalsha_calls(redis_server)
    proxy.drop_next_reply(b"EVALSHA")
    job = store.update_status("j1", "running", workspace_id="ws")
    assert evalsha_calls(redis_server) - before == 2
    assert job.status is JobStatus.RUNNING  # not InvalidTransition running -> running


def test_dequeue_reply_lost_claims_one_job_only(store, proxy, redis_server):
    first = store.enqueue("ws", "a")
    second = store.enqueue("ws", "b")
    before = evalsha_calls(redis_server)
    proxy.drop_next_reply(b"EVALSHA")
    claimed = store.dequeue()
    assert evalsha_calls(redis_server) - before == 2
    assert claimed.job_id == first.job_id and claimed.status is JobStatus.RUNNING
    assert store.get(second.job_id, workspace_id="ws").status is JobStatus.PENDING
    assert store.dequeue().job_id == second.job_id


def test_delete_reply_lost(store, proxy, redis_server):
    store.enqueue("ws", "a", job_id="j1")
    before = evalsha_calls(redis_server)
    proxy.drop_next_reply(b"EVALSHA")
    assert store.delete("j1", workspace_id="ws") is True
    assert evalsha_calls(redis_server) - before == 2
    assert store.get("j1", workspace_id="ws") is None


def test_enqueue_many_reply_lost(store, proxy):
    proxy.drop_next_reply(b"EVALSHA")
    jobs = store.enqueue_many([("ws", "a", None, f"j{i}") for i in range(20)])
    assert [j.job_id for j in jobs] == [f"j{i}" for i in range(20)]
    assert store.client.llen("ai:queue") == 20


def test_blocking_dequeue_reply_lost(store, proxy):
    """The claim list path: a lost BLMOVE reply may move a second entry; it goes back."""
    import threading
    import time

    def later():
        time.sleep(0.3)
        store.enqueue("ws", "a", job_id="j1")
        store.enqueue("ws", "b", job_id="j2")

    proxy.drop_next_reply(b"BLMOVE")
    thread = threading.Thread(target=later)
    thread.start()
    claimed = store.dequeue(timeout=5)
    thread.join()
    assert claimed.job_id == "j1"
    assert store.dequeue().job_id == "j2" and store.dequeue() is None
    assert not [k for k in store.client.keys("ai:claim:*")]


def test_unreachable_server_is_store_unavailable_and_nothing_is_written(redis_server, redis_url, proxy):
    store = jobstore.open(proxy.url, "dual", client_options={"socket_timeout": 0.3, "socket_connect_timeout": 0.3})
    store.client.ping()
    proxy.pause()
    try:
        with pytest.raises(StoreUnavailable):
            store.enqueue("ws", "a", job_id="j1")
    finally:
        proxy.resume()
    proxy.close_all()
    assert redis_server.client().exists("ai:jobs:j1", "ai:job:ws:j1") in (0, 2)
