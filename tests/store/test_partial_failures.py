"""Partial failures say what happened: a batch that Redis refuses in part names the jobs it
created and the jobs it did not, so that a caller can retry the rest without duplicating any."""

from __future__ import annotations

import pytest

import jobstore
from jobstore import EnqueueIncomplete, RedisCommandError
from tests.conftest import need_redis_server
from tests.support.servers import RedisServer


def test_a_job_redis_refuses_fails_alone_and_is_named(make_store):
    """The workspace index of ws-bad is a key of the wrong type: its jobs cannot be enqueued
    (they would not be listed); every other job of the batch is, and the error says which."""
    store = make_store("dual")
    store.client.set("ai:index:{ws-bad}", "in the way")
    items = [("ws-ok" if n % 2 else "ws-bad", "a", {"n": n}, f"j{n}") for n in range(10)]
    with pytest.raises(EnqueueIncomplete) as caught:
        store.enqueue_many(items)
    error = caught.value
    assert isinstance(error, RedisCommandError)
    assert sorted(error.failed) == [f"j{n}" for n in range(0, 10, 2)]
    assert all("WRONGTYPE" in reason for reason in error.failed.values())
    assert sorted(job.job_id for job in error.created) == [f"j{n}" for n in range(1, 10, 2)]
    for job in error.created:
        assert store.get(job.job_id, workspace_id="ws-ok") == job
    if not store.driver.cluster:  # one script per job: a failed job wrote nothing
        assert all(store.get(job_id, workspace_id="ws-bad") is None for job_id in error.failed)
    # The way out: fix the key, enqueue the failed ones again with their ids (on Cluster this
    # completes the jobs whose last step, the index, failed).
    store.client.delete("ai:index:{ws-bad}")
    again = store.enqueue_many([item for item in items if item[3] in error.failed])
    assert sorted(job.job_id for job in again) == sorted(error.failed)
    assert len(store.list("ws-bad")) == 5 and len(store.list("ws-ok")) == 5
    claimed = []
    while (job := store.dequeue()) is not None:
        claimed.append(job.job_id)
    assert sorted(claimed) == sorted(f"j{n}" for n in range(10))  # each job once


@pytest.mark.redis
def test_out_of_memory_mid_batch_names_what_was_created():
    """The scenario of the report: a batch of 200 under OOM. Some jobs land, the rest are
    refused whole; a caller that retries the failed ones with their ids ends with each job once."""
    need_redis_server()
    server = RedisServer(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).start()
    try:
        store = jobstore.open(server.url, "legacy")
        payload = {"blob": "x" * 20_000}
        items = [("acme", "big", payload, f"j{n}") for n in range(200)]
        with pytest.raises(EnqueueIncomplete) as caught:
            store.enqueue_many(items)
        error = caught.value
        assert error.created and error.failed
        assert all("maxmemory" in reason for reason in error.failed.values())
        created = {job.job_id for job in error.created}
        assert created.isdisjoint(error.failed) and len(created) + len(error.failed) == 200
        client = server.client(decode_responses=True)
        stored = {key.split(":")[-1] for key in client.scan_iter(match="ai:jobs:*", count=1000)}
        assert stored == created  # exactly the jobs it said, each whole
        queued = client.lrange("ai:queue", 0, -1)
        assert sorted(entry.split(":")[1] for entry in queued) == sorted(created)
        client.config_set("maxmemory", "0")
        again = store.enqueue_many([item for item in items if item[3] in error.failed])
        assert len(again) == len(error.failed)
        assert len(list(client.scan_iter(match="ai:jobs:*", count=1000))) == 200
    finally:
        server.stop()


def test_a_batch_cut_by_an_outage_names_the_ids_to_retry_with(make_store, monkeypatch):
    """Which jobs of a batch landed before the connection broke is unknown; their ids are
    known, and retrying with them creates each job once."""
    store = make_store("legacy")
    real_send = store.driver._send
    calls = [0]

    def broken(calls_, *args):
        calls[0] += 1
        real_send(calls_, *args)  # the batch runs...
        raise jobstore.StoreUnavailable("connection lost after the batch ran")  # ...reply lost

    monkeypatch.setattr(store.driver, "_send", broken)
    with pytest.raises(jobstore.StoreUnavailable) as caught:
        store.enqueue_many([("acme", "a", {"n": n}) for n in range(5)])
    monkeypatch.setattr(store.driver, "_send", real_send)
    attempted = caught.value.attempted
    assert len(attempted) == 5
    retry = [(job.workspace_id, job.action, job.params, job.job_id) for job in attempted]
    try:
        created, existed = store.enqueue_many(retry), []
    except jobstore.JobExists as exists:  # those the cut batch had written
        created, existed = exists.created, exists.job_ids
    assert sorted([job.job_id for job in created] + existed) == sorted(j.job_id for j in attempted)
    if not store.driver.cluster:  # one batch, and it ran: every job exists already
        assert not created
    assert sorted(job.job_id for job in store.list("acme")) == sorted(j.job_id for j in attempted)


def test_a_batch_of_several_script_calls_fails_only_the_refused_jobs(make_store):
    """Standalone enqueue_many writes up to ops.ENQUEUE_CHUNK jobs per script call;
    a refused job in any call fails alone, and every other job of every call is enqueued once."""
    from jobstore.ops import ENQUEUE_CHUNK

    store = make_store("dual")
    store.client.set("ai:index:{ws-bad}", "in the way")
    n = 2 * ENQUEUE_CHUNK + 7
    items = [("ws-bad" if i % 37 == 5 else "ws-ok", "a", {"n": i}, f"j{i}") for i in range(n)]
    with pytest.raises(EnqueueIncomplete) as caught:
        store.enqueue_many(items)
    bad = sorted(f"j{i}" for i in range(n) if i % 37 == 5)
    assert sorted(caught.value.failed) == bad
    assert len(caught.value.created) == n - len(bad)
    if not store.driver.cluster:  # (on Cluster the index is the last step: records stay)
        assert all(store.get(job_id, workspace_id="ws-bad") is None for job_id in bad)
    seen = []
    while (job := store.dequeue()) is not None:
        seen.append(job.job_id)
    created = sorted(job.job_id for job in caught.value.created)
    assert len(seen) == len(set(seen))  # each job handed out once
    if store.driver.cluster:  # a failed job's queue step came before its index step
        assert set(created) <= set(seen) <= set(created) | set(bad)
    else:
        assert sorted(seen) == created
