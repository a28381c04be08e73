"""Durability that can be chosen: ``wait_replicas=N`` makes every write wait (in the same round
trip) until N replicas confirmed it, against a real primary and replica the test starts."""

from __future__ import annotations

import time

import pytest

import jobstore
from jobstore import ConfigError, NotReplicated, StoreUnavailable
from tests.conftest import need_redis_server
from tests.support.servers import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def pair():
    """A primary and one replica of it, the link up."""
    need_redis_server()
    primary = RedisServer().start()
    replica = RedisServer(args=["--replicaof", primary.host, str(primary.port)]).start()
    probe = replica.client(decode_responses=True)
    deadline = time.monotonic() + 20
    while probe.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.05)
    yield primary, replica
    replica.stop()
    primary.stop()


def test_a_write_returns_once_the_replica_has_it(pair):
    primary, replica = pair
    store = jobstore.open(primary.url, "dual", wait_replicas=1, phase="dual-write")
    job = store.enqueue("acme", "a", {"n": 1})
    copy = replica.client(decode_responses=True)
    # No polling: WAIT returned after the replica confirmed, before enqueue returned.
    assert copy.hget(f"ai:jobs:{job.job_id}", "status") == "pending"
    assert copy.hget(f"ai:job:acme:{job.job_id}", "status") == "pending"
    claimed = store.dequeue()
    assert claimed.job_id == job.job_id
    assert copy.hget(f"ai:job:acme:{job.job_id}", "status") == "running"
    store.update_status(job.job_id, "completed", workspace_id="acme", result=7)
    assert copy.hget(f"ai:jobs:{job.job_id}", "result") == "7"
    assert store.delete(job.job_id, workspace_id="acme")
    assert not copy.exists(f"ai:jobs:{job.job_id}")


def test_too_few_replicas_raise_not_replicated_naming_what_happened(pair):
    primary, _ = pair
    store = jobstore.open(primary.url, "legacy", wait_replicas=2, wait_timeout=0.2)
    with pytest.raises(NotReplicated) as caught:
        store.enqueue("acme", "a", job_id="j1")
    error = caught.value
    assert isinstance(error, StoreUnavailable)
    assert (error.acknowledged, error.wanted) == (1, 2)
    assert "applied on the primary" in str(error)
    assert error.result.job_id == "j1"  # the outcome is not lost with the confirmation
    # Applied on the primary, as it says.
    assert primary.client().exists("ai:jobs:j1")
    with pytest.raises(jobstore.JobExists):
        jobstore.open(primary.url, "legacy").enqueue("acme", "a", job_id="j1")


def test_a_claim_short_of_replicas_is_handed_over_on_the_error(pair):
    """The job a dequeue claimed is running on the primary: the worker must get it, or nobody
    ever runs it."""
    primary, _ = pair
    primary.client().flushall()
    jobstore.open(primary.url, "legacy").enqueue("acme", "a", job_id="claim-me")
    store = jobstore.open(primary.url, "legacy", wait_replicas=2, wait_timeout=0.1)
    with pytest.raises(NotReplicated) as caught:
        store.dequeue()
    claimed = caught.value.result
    assert claimed.job_id == "claim-me" and claimed.status.value == "running"
    assert jobstore.open(primary.url, "legacy").dequeue() is None  # handed out once


def test_reads_do_not_wait(pair):
    primary, _ = pair
    writer = jobstore.open(primary.url, "legacy")
    job = writer.enqueue("acme", "a")
    reader = jobstore.open(primary.url, "legacy", wait_replicas=5, wait_timeout=5)
    started = time.monotonic()
    assert reader.get(job.job_id, workspace_id="acme") == job
    assert reader.list("acme")[0].job_id == job.job_id
    assert time.monotonic() - started < 4  # a WAIT for 5 replicas would have taken 5 s


def test_a_lost_replica_is_reported(pair):
    primary, replica = pair
    replica.stop()
    try:
        store = jobstore.open(primary.url, "legacy", wait_replicas=1, wait_timeout=0.2)
        with pytest.raises(NotReplicated):
            store.enqueue("acme", "a")
    finally:
        replica.start()  # (a fresh replica for any test after this one)


@pytest.mark.parametrize("options", [{"wait_replicas": -1}, {"wait_replicas": 1.5},
                                     {"wait_replicas": True}, {"wait_timeout": 0},
                                     {"wait_replicas": 1, "wait_timeout": "1"}])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError, match="wait_"):
        jobstore.open("memory://", "legacy", **options)


@pytest.mark.cluster
def test_cluster_refuses_wait_replicas_clearly(cluster_url):
    with pytest.raises(ConfigError, match="not supported on Redis Cluster"):
        jobstore.open(cluster_url, "legacy", wait_replicas=1)
