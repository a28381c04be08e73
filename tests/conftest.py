"""Fixtures: stores on fakeredis and on a real redis-server the suite starts itself.

Real-Redis tests skip with a reason when ``redis-server`` is missing, except under ``CI=true``,
where they fail: CI must prove every behaviour on real Redis.
"""

from __future__ import annotations

import os
import uuid

import pytest

import jobstore
from tests.support.aio import open_store as support_open_store
from tests.support.servers import (RedisCluster, RedisSentinel, RedisServer, redis_cli_path,
                                  redis_server_path)

STRATEGIES = ["legacy", "workspace", "dual"]


def keys(client, pattern: str = "*") -> list[str]:
    """Every key matching ``pattern``, on every primary of a cluster too (KEYS asks one node)."""
    return sorted(client.scan_iter(match=pattern, count=1000))


def need_redis_server() -> None:
    if redis_server_path() is None:
        message = "redis-server is not installed; real-Redis tests need it on PATH"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: real-Redis tests may not skip)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server():
    """One private redis-server for the session (flushed by ``redis_url`` before each test)."""
    need_redis_server()
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    redis_server.client().flushall()
    return redis_server.url


def need_redis_cli() -> None:
    """The cluster tests create their cluster with ``redis-cli``: skip without it (fail in CI)."""
    need_redis_server()
    if redis_cli_path() is None:
        message = "redis-cli is not installed; the cluster tests need it to create the cluster"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: real-Redis tests may not skip)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster():
    """One private 3-primary Redis Cluster for the session (flushed by ``cluster_url``)."""
    need_redis_cli()
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster) -> str:
    client = redis_cluster.client()
    client.flushall(target_nodes=client.PRIMARIES)
    client.close()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinel():
    """One private primary, its replica and three sentinels (quorum 2) for the session; the
    primary moves with every failover a test makes (flushed by ``sentinel_url``)."""
    need_redis_server()  # sentinel mode is redis-server's own (--sentinel)
    sentinel = RedisSentinel().start()
    yield sentinel
    sentinel.stop()


@pytest.fixture
def sentinel_url(redis_sentinel) -> str:
    """``redis+sentinel://s1,s2,s3/jobstore`` with the setup settled and its data flushed."""
    primary = redis_sentinel.wait_settled()
    client = primary.client()
    client.flushall()
    client.execute_command("WAIT", 1, 5000)  # the replica is empty too
    return redis_sentinel.url


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def backend(request) -> str:
    """A URL per backend: an embedded fakeredis, a real server, a real 3-node cluster."""
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    if request.param == "cluster":
        return request.getfixturevalue("cluster_url")
    return request.getfixturevalue("redis_url")


@pytest.fixture
def flavour() -> str:
    """Which store the stores below are: "sync" (a JobStore), unless a test parametrizes it over
    both (``@pytest.mark.parametrize("flavour", FLAVOURS)``): "async" is an AsyncJobStore behind
    the synchronous face of tests/support/aio.py."""
    return "sync"


@pytest.fixture
def open_store(flavour):
    """``open_store(url, strategy, **options)``: a store of the test's flavour, closed after it."""
    opened = []

    def factory(url: str, strategy: str = "legacy", **options):
        store = support_open_store(flavour, url, strategy, **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def make_store(backend, open_store):
    """``make_store(strategy, **options)``: stores on one backend, closed after the test."""

    def factory(strategy: str = "legacy", url: str | None = None, **options) -> jobstore.JobStore:
        return open_store(url or backend, strategy, **options)

    return factory


@pytest.fixture(params=STRATEGIES)
def store(request, make_store) -> jobstore.JobStore:
    """A store per built-in strategy and backend."""
    return make_store(request.param)
