"""Every pass and verify across a Redis restart (AOF on, all keys back).

A SCAN cursor means something only on the server that gave it: Redis re-seeds its key order at
every start, and a promoted replica has its own. A pass that carried a cursor over a restart
skipped part of the keyspace and still reported ``finished`` (backfill left ~9% of the records
uncopied; verify could call a missing copy clean). Each test restarts Redis at a random batch of
a pass, either under the running pass (redis-py reconnects and the pass goes on) or between a
crash and the resume, and then checks the whole keyspace, not the report.
"""

from __future__ import annotations

import random
import time

import pytest

import jobstore
from jobstore.migration import Migration
from tests.conftest import keys, need_redis_cli, need_redis_server
from jobstore.testing import FakeClock
from tests.support.servers import RedisCluster, RedisServer, debug_command_args, server_version

JOBS = 2000
BATCH = 50
WORKSPACES = [f"ws{n}" for n in range(5)]
AOF = ["--appendonly", "yes", "--appendfsync", "always", *debug_command_args()]

pytestmark = [pytest.mark.redis, pytest.mark.core]


class Crash(BaseException):
    """Stands for the operator's process dying in the middle of a pass (after a checkpoint)."""


@pytest.fixture(scope="module")
def aof_server():
    need_redis_server()
    server = RedisServer(args=AOF).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def aof_cluster():
    need_redis_cli()
    cluster = RedisCluster(args=AOF).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def target(request):
    """``(url, restart)``: a persistent Redis (or cluster) and how to restart it (one node)."""
    if request.param == "redis":
        server = request.getfixturevalue("aof_server")
        server.client().flushall()
        return server.url, lambda rng: server.restart()
    cluster = request.getfixturevalue("aof_cluster")
    client = cluster.client()
    client.flushall(target_nodes=client.PRIMARIES)
    client.close()

    def restart_every_node(rng):
        # Every node, so that the one whose scan is under way is among them (a pass scans the
        # primaries one after another); then wait, as an operator would, for the cluster to
        # say ok again.
        for server in rng.sample(cluster.servers, len(cluster.servers)):
            server.restart()
        cluster._wait_ok()

    restart_every_node.primaries = len(cluster.servers)  # type: ignore[attr-defined]
    return cluster.url, restart_every_node


def seeded(url):
    legacy = jobstore.open(url, "legacy")
    jobs = legacy.enqueue_many([(WORKSPACES[n % 5], "seed", {"n": n}) for n in range(JOBS)])
    clock = FakeClock(tick=0)
    return legacy, jobs, Migration(legacy.client, clock=clock, wait=clock.wait)


def seeded_in_target_only(url):
    legacy, jobs, migration = seeded(url)
    migration.set_phase("dual-write")
    migration.backfill()
    assert migration.verify().clean
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    return legacy, jobs, migration


def restart_at(restart, rng, batches: int, *, crash: bool):
    """A progress callback that restarts Redis after a random batch (then, with ``crash``,
    stops the pass as a killed process would).

    On a cluster, within the first primary's share of the batches: a pass scans the primaries
    one after another, and a restart that falls between two primaries' scans cuts no scan, so
    no rescan is due and the test would prove nothing (it did, now and then, once enqueues
    stopped leaving marker keys and the scans got shorter)."""
    share = batches // getattr(restart, "primaries", 1)
    at = rng.randrange(2, max(3, share - 2))
    seen = [0]

    def progress(step, done, total, counts):
        seen[0] += 1
        if seen[0] == at:
            restart(rng)
            if crash:
                raise Crash

    return progress


def run_through(pass_, progress):
    """Run a pass that may be cut by the restart; resume it as an operator would. The reports
    of both runs."""
    reports = []
    try:
        reports.append(pass_(batch=BATCH, progress=progress))
    except (Crash, jobstore.StoreUnavailable):
        pass
    if not reports or not reports[-1].finished:
        reports.append(pass_(batch=BATCH))
    assert reports[-1].finished
    return reports


@pytest.mark.parametrize("crash", [False, True], ids=["live", "resumed"])
@pytest.mark.parametrize("seed", range(2))
def test_backfill_across_a_restart_copies_every_record(target, seed, crash):
    url, restart = target
    rng = random.Random(seed)
    legacy, jobs, migration = seeded(url)
    migration.set_phase("dual-write")
    reports = run_through(migration.backfill, restart_at(restart, rng, JOBS // BATCH, crash=crash))
    assert sum(r.rescans for r in reports) >= 1 and any(r.notes for r in reports)
    workspace = jobstore.open(url, "workspace")
    missing = [j.job_id for j in jobs if workspace.get(j.job_id, workspace_id=j.workspace_id) is None]
    assert missing == []
    report = migration.verify()
    assert report.clean and report.checked_source == JOBS, report.as_dict()


@pytest.mark.parametrize("seed", range(2))
def test_verify_across_a_restart_finds_every_missing_copy(target, seed):
    url, restart = target
    rng = random.Random(seed)
    legacy, jobs, migration = seeded(url)
    migration.set_phase("dual-write")
    migration.backfill()
    gone = rng.sample(jobs, 25)
    for job in gone:
        legacy.client.delete(f"ai:job:{job.workspace_id}:{job.job_id}")
    progress = restart_at(restart, rng, JOBS // BATCH, crash=False)
    try:
        report = migration.verify(batch=BATCH, progress=progress)
    except jobstore.StoreUnavailable:
        report = migration.verify(batch=BATCH)
    # Every key looked at exactly once, after the restart too: nothing skipped, nothing twice.
    assert report.checked_source == JOBS and report.missing == 25, report.as_dict()
    assert not report.clean
    assert migration.state().verified_clean == 0
    assert migration.state().contradicted()  # recorded: it keeps read-target and target-only shut


def test_verify_that_cannot_vouch_for_every_key_is_not_clean(redis_url):
    legacy, jobs, migration = seeded(redis_url)
    migration.set_phase("dual-write")
    migration.backfill()
    scan = migration.driver._scan
    calls = [0]

    def flapping(step):  # a server that is another one at every step (restarts, failovers)
        identity, cursor, found = scan(step)
        calls[0] += 1
        return f"{identity}-{calls[0]}", cursor, found

    migration.driver._scan = flapping
    report = migration.verify(batch=BATCH)
    assert not report.complete and not report.clean and report.rescans >= 3
    assert "cannot vouch" in " ".join(report.notes)
    assert migration.state().verified_clean == 0


def test_a_verify_that_gave_up_on_a_changing_server_shuts_the_gate_a_clean_one_opened(redis_url):
    """A verify that spanned a Redis restart was not clean, and target-only was
    accepted on the strength of a clean verify from before the restart."""
    legacy, jobs, migration = seeded(redis_url)
    migration.set_phase("dual-write")
    migration.backfill()
    assert migration.verify(batch=BATCH).clean
    migration.set_phase("read-target")
    scan = migration.driver._scan
    calls = [0]

    def flapping(step):
        identity, cursor, found = scan(step)
        calls[0] += 1
        return f"{identity}-{calls[0]}", cursor, found

    migration.driver._scan = flapping
    assert not migration.verify(batch=BATCH).complete
    migration.driver._scan = scan
    state = migration.state()
    assert state.contradicted() and "could not vouch" in state.verify_failed_note
    with pytest.raises(jobstore.MigrationRefused, match="could not vouch"):
        migration.set_phase("target-only")
    assert migration.verify(batch=BATCH).clean
    migration.set_phase("target-only")


@pytest.mark.parametrize("crash", [False, True], ids=["live", "resumed"])
def test_reverse_sync_across_a_restart_brings_every_job_back(target, crash):
    url, restart = target
    rng = random.Random(7)
    legacy, jobs, migration = seeded_in_target_only(url)
    dual = jobstore.open(url, "dual")
    dual.get("warm", workspace_id="ws0")
    # Written in target-only: in the target alone.
    fresh = dual.enqueue_many([(WORKSPACES[n % 5], "target-only", {"n": n}) for n in range(JOBS // 2)])
    report = migration.cleanup()
    assert report.counts.get("deleted") == JOBS
    reports = run_through(migration.reverse_sync,
                          restart_at(restart, rng, (JOBS + JOBS // 2) // BATCH, crash=crash))
    assert sum(r.rescans for r in reports) >= 1
    migration.set_phase("read-target")  # the rollback is allowed: the source has everything
    source = jobstore.open(url, "legacy")
    missing = [j.job_id for j in jobs + fresh
               if source.get(j.job_id, workspace_id=j.workspace_id) is None]
    assert missing == []


@pytest.mark.parametrize("crash", [False, True], ids=["live", "resumed"])
def test_cleanup_across_a_restart_finishes_only_when_every_record_is_settled(target, crash):
    url, restart = target
    rng = random.Random(11)
    legacy, jobs, migration = seeded_in_target_only(url)
    reports = run_through(migration.cleanup, restart_at(restart, rng, JOBS // BATCH, crash=crash))
    assert sum(r.rescans for r in reports) >= 1
    assert keys(legacy.client, "ai:jobs:*") == []  # finished means every record was looked at
    workspace = jobstore.open(url, "workspace")
    assert all(workspace.get(j.job_id, workspace_id=j.workspace_id) for j in jobs)


def test_a_backfill_resumed_on_a_promoted_replica_scans_again(aof_server):
    """A failover: the pass crashed on the primary; it resumes on the replica promoted in its
    place, which holds the checkpoint (replicated) but not the key order the cursor meant."""
    rng = random.Random(3)
    aof_server.client().flushall()
    legacy, jobs, migration = seeded(aof_server.url)
    migration.set_phase("dual-write")
    with pytest.raises(Crash):
        migration.backfill(batch=BATCH, progress=restart_at(lambda rng: None, rng, JOBS // BATCH,
                                                            crash=True))
    replica = RedisServer(args=["--replicaof", aof_server.host, str(aof_server.port)]).start()
    try:
        client = replica.client(decode_responses=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            client.info("replication").get("master_link_status") != "up"
            or client.dbsize() != aof_server.client().dbsize()
        ):
            time.sleep(0.05)
        client.execute_command("REPLICAOF", "NO", "ONE")
        promoted = jobstore.open(replica.url, "legacy")
        clock = FakeClock(tick=0)
        report = Migration(promoted.client, clock=clock, wait=clock.wait).backfill(batch=BATCH)
        assert report.resumed and report.finished and report.rescans >= 1, report.as_dict()
        workspace = jobstore.open(replica.url, "workspace")
        assert all(workspace.get(j.job_id, workspace_id=j.workspace_id) for j in jobs)
    finally:
        replica.stop()


@pytest.mark.skipif(server_version()[0] == "redis" and server_version()[1] < (7,),
                    reason="Redis before 7.0 has no INFO field that tells a DEBUG RELOAD "
                           "(rdb_last_load_keys_loaded arrived in 7.0): a limit docs/migration.md states")
def test_a_backfill_across_debug_reload_scans_again(aof_server):
    """DEBUG RELOAD reloads the data in the same process: the run id stays, the key order does
    not (a cursor carried over skipped records). The pass sees the load and scans again."""
    rng = random.Random(5)
    aof_server.client().flushall()
    legacy, jobs, migration = seeded(aof_server.url)
    migration.set_phase("dual-write")
    reload = restart_at(lambda rng: aof_server.client().execute_command("DEBUG", "RELOAD"), rng,
                        JOBS // BATCH, crash=False)
    report = migration.backfill(batch=BATCH, progress=reload)
    assert report.finished and report.rescans >= 1
    workspace = jobstore.open(aof_server.url, "workspace")
    assert all(workspace.get(j.job_id, workspace_id=j.workspace_id) for j in jobs)
    assert migration.verify().clean
