"""A re-sent write answers for its own call only.

redis-py re-sends a command whose reply was lost, up to ~40 s later with the default timeouts.
If the job's id was deleted and reused in between (by another workspace, or by a new job), the
re-send used to answer with whatever the key held now: acme's enqueue returned globex's record,
and a re-sent dequeue handed out a job a second worker had already received. Here the first
attempt and its re-send are the same script call, sent twice by hand with the interleaving
writes in between, so the scenario is exact, not timing-dependent.
"""

from __future__ import annotations

import pytest

import jobstore
from jobstore.steps import Batch


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


def test_a_replayed_enqueue_never_answers_with_another_workspaces_job(url):
    acme = jobstore.open(url, "legacy")
    flush(acme)
    job, fields = acme._new_job("acme", "summarise", {"secret": "acme's"}, "j1")
    op, batch = first_batch(acme, acme._writes.enqueue(acme.context, job, fields))
    acme.driver._do(batch)  # the first attempt: applied, its reply lost
    assert acme.delete("j1", workspace_id="acme")
    globex = jobstore.open(url, "legacy").enqueue("globex", "steal", {"secret": "globex's"},
                                                   job_id="j1")
    answered = finish(acme, op, batch)  # redis-py's re-send
    assert answered == job and answered.params == {"secret": "acme's"}
    assert acme.get("j1", workspace_id="globex") == globex  # nothing of globex's changed


def test_a_replayed_dequeue_never_hands_out_a_job_twice(url):
    store = jobstore.open(url, "legacy")
    if store.driver.cluster:
        pytest.skip("one script per claim on standalone; Cluster's claim is several steps, "
                    "its replayed step is the update's (test below)")
    flush(store)
    old = store.enqueue("acme", "first", job_id="j1")
    op, batch = first_batch(store, store._writes.dequeue(store.context, 0))
    store.driver._do(batch)  # worker A's claim: applied, its reply lost
    assert store.delete("j1", workspace_id="acme")
    new = store.enqueue("acme", "second", job_id="j1")
    b_got = jobstore.open(url, "legacy").dequeue()  # worker B claims the new job
    assert b_got.job_id == "j1" and b_got.created_at == new.created_at
    a_got = finish(store, op, batch)  # A's re-send
    assert a_got.created_at == old.created_at and a_got.action == "first"  # what A claimed
    assert a_got.status.value == "running"


def test_a_replayed_update_answers_what_it_did(url):
    store = jobstore.open(url, "legacy")
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
