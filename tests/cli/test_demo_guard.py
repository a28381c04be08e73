"""``jobstore demo --url`` refuses a Redis whose prefix is in use, wherever in the keyspace the
prefix's keys are (a guard that looked at the first SCAN page only, and among 100,000
other keys it ran the demo migration on a service's real keys)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import jobstore
from jobstore.demo import run_demo

OTHER_KEYS = 100_000


def fill(client, count: int, chunk: int = 2_000) -> None:
    """``count`` unrelated string keys ``other:<n>``, written in pipelined chunks."""
    for start in range(0, count, chunk):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + chunk, count)):
            pipe.set(f"other:{n}", "x")
        pipe.execute()


def first_page(client, pattern: str) -> list:
    """The keys the old guard saw: the first SCAN page (of every primary, on a cluster)."""
    return list(client.scan(0, match=pattern, count=1000)[1])


def plant(client, names: list[str]) -> list[str]:
    """Write ``names`` (hashes), replacing any that the first SCAN page would show by another
    name, so that the test really hides the prefix's keys past the first page."""
    planted = []
    for name in names:
        for attempt in range(200):
            key = f"{name}-{attempt}"
            client.hset(key, mapping={"job_id": key, "status": "pending"})
            if key not in first_page(client, "demo:*"):
                planted.append(key)
                break
            client.delete(key)
        else:  # pragma: no cover - would take a very unlucky hash seed
            pytest.fail(f"could not hide {name} past the first SCAN page")
    assert first_page(client, "demo:*") == []  # what the old guard saw: nothing
    return planted


def dbsize(client) -> int:
    """Keys in the database; on a cluster, summed over every primary (DBSIZE asks one node)."""
    if hasattr(client, "get_primaries"):
        return client.dbsize(target_nodes=client.PRIMARIES)  # redis-py sums the replies
    return client.dbsize()


def snapshot(client, keys: list[str]) -> dict:
    return {key: client.hgetall(key) for key in keys}


def test_demo_refuses_a_prefix_in_use_past_the_first_scan_page(redis_url):
    client = jobstore.open(redis_url, "legacy").client
    fill(client, OTHER_KEYS)
    planted = plant(client, ["demo:jobs:x1", "demo:jobs:x2", "demo:jobs:x3"])
    before_size, before = dbsize(client), snapshot(client, planted)

    with pytest.raises(jobstore.ConfigError, match="--prefix"):
        run_demo(redis_url, prefix="demo", jobs=10, echo=lambda line: None)
    assert dbsize(client) == before_size == OTHER_KEYS + 3
    assert snapshot(client, planted) == before

    environ = {k: v for k, v in os.environ.items() if k != "JOBSTORE_REDIS_URL"}
    out = subprocess.run([sys.executable, "-m", "jobstore.cli", "demo", "--url", redis_url,
                          "--jobs", "10"], capture_output=True, text=True, env=environ, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--prefix" in out.stderr and not out.stdout
    assert dbsize(client) == before_size
    assert snapshot(client, planted) == before


def test_demo_still_runs_on_a_busy_redis_whose_prefix_is_free(redis_url):
    client = jobstore.open(redis_url, "legacy").client
    fill(client, 20_000)
    numbers = run_demo(redis_url, prefix="demo", jobs=20, echo=lambda line: None)
    assert numbers["lost"] == 0 and numbers["revived"] == 0 and numbers["source_left"] == 0
    assert client.get("other:0") == "x" and client.exists("other:19999")


@pytest.mark.cluster
def test_demo_refuses_a_prefix_in_use_on_any_cluster_primary(cluster_url):
    client = jobstore.open(cluster_url, "legacy").client
    fill(client, 30_000, chunk=5_000)  # about 10,000 per primary
    (planted,) = plant(client, ["demo:jobs:x1"])
    before_size, before = dbsize(client), snapshot(client, [planted])

    with pytest.raises(jobstore.ConfigError, match="--prefix"):
        run_demo(cluster_url, prefix="demo", jobs=10, echo=lambda line: None)
    assert dbsize(client) == before_size == 30_001
    assert snapshot(client, [planted]) == before
