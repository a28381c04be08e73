"""``Migration.plan`` and ``jobstore migrate plan`` on real Redis: counts, bytes, workspaces,
memory against maxmemory (and the dual-write switch it refuses), the cluster's spread, the JSON
report, and that a plan writes nothing."""

from __future__ import annotations

import json

import pytest
import redis

import jobstore
from jobstore.cli import main as cli
from jobstore.errors import InvalidArgument, MigrationRefused
from jobstore.migration.plan import key_slot
from tests.support.cli import cli_runner

SIZES = {"ws-big": 1500, "ws-mid": 900, "ws-small": 300}


def seed(url: str, strategy: str = "legacy") -> list:
    store = jobstore.open(url, strategy)
    jobs = []
    for ws, n in SIZES.items():
        for start in range(0, n, 500):
            jobs += store.enqueue_many([(ws, "summarise", {"n": i, "text": "x" * (i % 90)})
                                        for i in range(start, min(n, start + 500))])
    store.close()
    return jobs


def writes(client) -> int:
    """The server's count of changes since its last save (every write bumps it)."""
    return int(client.info("persistence")["rdb_changes_since_last_save"])


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.config_set("maxmemory", "0")
    c.close()


def test_counts_bytes_and_workspaces_come_close_to_the_truth(redis_url, client):
    seed(redis_url)
    migration = jobstore.open_migration(redis_url)
    report = migration.plan(sample=800, timed=200, seed=1)
    assert report.records == sum(SIZES.values())  # a full scan: exact
    assert report.sampled == 800
    assert not report.workspaces_exact  # legacy keys do not name the workspace
    assert [w["workspace_id"] for w in report.top_workspaces] == list(SIZES)
    for entry in report.top_workspaces:
        assert entry["records"] == pytest.approx(SIZES[entry["workspace_id"]], rel=0.2)
    truth = sum(int(client.memory_usage(k, samples=0)) for k in client.scan_iter("ai:jobs:*"))
    assert report.source_bytes == pytest.approx(truth, rel=0.2)
    assert report.backfill_seconds and report.verify_seconds
    migration.set_phase("off", wait=False)
    migration.set_phase("dual-write")
    before = int(client.info("memory")["used_memory"])
    assert migration.backfill().counts == {"copied": sum(SIZES.values())}
    grown = int(client.info("memory")["used_memory"]) - before
    assert report.extra_memory == pytest.approx(grown, rel=0.2)


def test_workspaces_are_counted_exactly_when_the_keys_name_them(redis_url):
    seed(redis_url, "workspace")
    report = jobstore.open_migration(redis_url, source="workspace", target="legacy").plan(
        sample=50, timed=0, top=2)
    assert report.workspaces_exact and report.workspaces == 3
    assert report.top_workspaces == [{"workspace_id": "ws-big", "records": 1500},
                                     {"workspace_id": "ws-mid", "records": 900}]
    assert report.backfill_seconds is None  # timed=0: nothing timed


def test_a_plan_measures_time_on_the_migration_s_timer(redis_url):
    seed(redis_url)
    migration = jobstore.open_migration(redis_url)
    readings = []
    migration.timer = lambda: readings.append(1) or 1000.0  # a timer that stands still
    report = migration.plan(sample=50, timed=20, seed=1)
    assert readings and report.seconds == 0.0
    assert report.rates == {"scan": 0.0, "copy_dry_run": 0.0, "compare": 0.0,
                            "timed_records": 20.0}
    assert report.backfill_seconds == 0.0 and report.verify_seconds == 0.0


def test_a_plan_writes_nothing(redis_url, client):
    seed(redis_url)
    jobstore.open_migration(redis_url).plan(sample=100, timed=100)  # scripts loaded
    keys, size, changes = sorted(client.scan_iter()), client.dbsize(), writes(client)
    jobstore.open_migration(redis_url).plan(sample=3000, timed=3000, rate=50_000)
    assert (sorted(client.scan_iter()), client.dbsize(), writes(client)) == (keys, size, changes)


def test_a_rate_bounds_the_backfill_time(redis_url):
    seed(redis_url)
    report = jobstore.open_migration(redis_url).plan(rate=100, sample=100, timed=100)
    assert report.rate == 100
    assert report.backfill_seconds >= sum(SIZES.values()) / 100


def test_dual_write_is_refused_when_the_target_does_not_fit_unless_forced(redis_url, client):
    seed(redis_url)
    migration = jobstore.open_migration(redis_url)
    migration.set_phase("off", wait=False)
    need = migration.plan(timed=0).extra_memory
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + need // 2))
    report = migration.plan(timed=0)
    assert not report.fits and not report.nodes[0].fits
    assert report.nodes[0].maxmemory and "does not fit" in report.refusal()
    fresh = jobstore.open_migration(redis_url)  # no memory check kept from before
    with pytest.raises(MigrationRefused, match="does not fit in memory"):
        fresh.set_phase("dual-write", wait=False)
    assert fresh.state().phase.value == "off"
    fresh.set_phase("dual-write", force=True, reason="more memory on its way", wait=False)
    entry = fresh.log(1)[0]
    assert entry["to"] == "dual-write" and entry["forced"] is True
    assert "does not fit in memory" in entry["refusal"]
    assert entry["reason"] == "more memory on its way"


def test_dual_write_is_not_refused_when_the_target_fits(redis_url, client):
    seed(redis_url)
    migration = jobstore.open_migration(redis_url)
    migration.set_phase("off", wait=False)
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) * 4))
    assert migration.plan(timed=0).fits
    migration.set_phase("dual-write", wait=False)
    assert migration.log(1)[0]["forced"] is False


def test_cli_plan_json_and_the_refused_switch(redis_url, client):
    seed(redis_url)
    runner = cli_runner()
    result = runner.invoke(cli, ["migrate", "plan", "--url", redis_url, "--json", "--sample",
                                 "300", "--rate", "2000", "--top", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["records"] == sum(SIZES.values()) and data["sampled"] == 300
    assert data["fits"] is True and data["rate"] == 2000
    assert isinstance(data["backfill_seconds"], float) and isinstance(data["verify_seconds"], float)
    assert [w["workspace_id"] for w in data["top_workspaces"]] == ["ws-big", "ws-mid"]
    (node,) = data["nodes"]
    assert set(node) == {"node", "target_records", "target_bytes", "slots", "used_memory",
                         "maxmemory", "fits", "after"}
    assert {"scan", "copy_dry_run", "compare", "timed_records"} <= set(data["rates"])
    assert data["extra_memory"] == node["target_bytes"] > data["target_bytes"] > 0
    # Half the room the target copies need: the plan refuses, while the forced switch's own
    # small writes (the state, its log entry, the script cache) still fit under noeviction.
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"])
                                       + data["extra_memory"] // 2))
    result = runner.invoke(cli, ["migrate", "plan", "--url", redis_url, "--no-timing"])
    assert result.exit_code == 1 and "DOES NOT FIT" in result.stdout
    result = runner.invoke(cli, ["migrate", "phase", "dual-write", "--url", redis_url])
    assert result.exit_code == 4 and "does not fit in memory" in result.stderr
    result = runner.invoke(cli, ["migrate", "phase", "dual-write", "--url", redis_url, "--force",
                                 "--yes", "--reason", "r", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forced"] is True


def test_bad_arguments_are_refused_before_redis_is_asked():
    migration = jobstore.open_migration("redis://127.0.0.1:1/0")  # nothing listens there
    for kwargs, name in (({"rate": 0}, "rate"), ({"sample": 0}, "sample"), ({"top": -1}, "top"),
                         ({"timed": True}, "timed"), ({"batch": 0}, "batch"),
                         ({"keys_per_call": 0}, "keys_per_call")):
        with pytest.raises(InvalidArgument, match=name):
            migration.plan(**kwargs)


def test_key_slot_is_redis_clusters():
    from redis.crc import key_slot as redis_slot

    for key in ("ai:job:ws:1", "ai:jobs:{ws}:2", "{}x", "a{b}c{d}", "{", "x{}y{z}", "é"):
        assert key_slot(key) == redis_slot(key.encode())


@pytest.mark.cluster
def test_cluster_spread_of_the_target_keys(cluster_url, redis_cluster):
    seed(cluster_url)
    client = redis_cluster.client()
    try:
        migration = jobstore.open_migration(cluster_url)
        report = migration.plan(sample=5000, timed=100)  # every record sampled: exact spread
        assert report.cluster and report.records == sum(SIZES.values())
        truth: dict[str, int] = {}
        slots: dict[str, set] = {}
        target = jobstore.plugins.get_registry().schema("workspace", "ai")
        for key in client.scan_iter("ai:jobs:*"):
            ws = client.hget(key, "workspace_id")
            other = target.job_key(ws, key.rsplit(":", 1)[1])
            node = client.get_node_from_key(other).name
            truth[node] = truth.get(node, 0) + 1
            slots.setdefault(node, set()).add(client.keyslot(other))
        assert {n.node: n.target_records for n in report.nodes} == truth
        assert {n.node: n.slots for n in report.nodes} == {k: len(v) for k, v in slots.items()}
        assert len(report.nodes) == 3 and all(n.used_memory for n in report.nodes)
        assert all(n.target_records for n in report.nodes)  # spread over every primary
        assert sum(n.target_bytes for n in report.nodes) == report.extra_memory
    finally:
        client.close()
