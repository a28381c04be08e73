"""Redis Cluster: faults between the two writes of one operation (docs/cluster.md).

On a cluster the legacy key, the workspace key, the index and the queue sit in different slots,
so a dual write is a sequence of single-slot steps. These tests break that sequence in the
middle, with a real node error (a node out of memory) and with a connection that dies before
the second step, then show that reads stay correct and that verify --repair converges.
"""

from __future__ import annotations

import pytest
import redis

import jobstore
from jobstore.migration import Migration
from jobstore.steps import Script
from jobstore.testing import FakeClock

pytestmark = [pytest.mark.cluster, pytest.mark.core]


def split_ids(client, n=1):
    """Job ids whose legacy and workspace keys live on different nodes."""
    found, i = [], 0
    while len(found) < n:
        job_id = f"j{i}"
        i += 1
        legacy, target = f"ai:jobs:{job_id}", f"ai:job:ws:{job_id}"
        if client.get_node_from_key(legacy).name != client.get_node_from_key(target).name:
            found.append(job_id)
    return found


@pytest.fixture
def cluster(cluster_url):
    store = jobstore.open(cluster_url, "dual")
    clock = FakeClock(tick=0)
    migration = Migration(store.client, clock=clock, wait=clock.wait)
    return store, migration


def cut_before(store, predicate):
    """The next batch for which ``predicate(batch)`` holds fails as a dropped connection does,
    before anything of it reaches Redis."""
    send = store.driver._send
    armed = [True]

    def faulty(calls, *args):
        if armed[0] and predicate(calls):
            armed[0] = False
            raise redis.exceptions.ConnectionError("connection killed by the test")
        return send(calls, *args)

    store.driver._send = faulty
    return armed


def writes_key(prefix):
    return lambda calls: any(isinstance(c, Script) and any(k.startswith(prefix) for k in c.keys)
                             for c in calls)


def test_it_is_a_real_cluster(cluster):
    store, _ = cluster
    assert store.driver.cluster and len(store.client.get_primaries()) == 3


@pytest.mark.parametrize("phase", ["dual-write", "read-target"])
def test_enqueue_cut_between_the_two_records(cluster, phase):
    store, migration = cluster
    migration.set_phase("dual-write")  # the first stored phase: dual writes begin
    if phase == "read-target":
        migration.set_phase("read-target")
    store.get("warm", workspace_id="ws")
    (job_id,) = split_ids(store.client)
    armed = cut_before(store, writes_key("ai:job:"))
    with pytest.raises(jobstore.StoreUnavailable):
        store.enqueue("ws", "a", {"n": 1}, job_id=job_id)
    assert not armed[0]
    # The source copy stands alone: reads are right in every phase.
    assert store.client.exists(f"ai:jobs:{job_id}") and not store.client.exists(f"ai:job:ws:{job_id}")
    assert store.get(job_id, workspace_id="ws").action == "a"
    assert store.get(job_id, workspace_id="other") is None
    # Retrying the same enqueue completes it, queue entry included.
    assert store.enqueue("ws", "a", {"n": 1}, job_id=job_id).job_id == job_id
    # Once complete, the same enqueue again is a second job under a taken id.
    with pytest.raises(jobstore.JobExists):
        store.enqueue("ws", "a", {"n": 1}, job_id=job_id)
    assert store.dequeue().job_id == job_id and store.dequeue() is None
    assert migration.verify().clean


def test_enqueue_interrupted_and_not_retried_is_repaired_by_verify(cluster):
    store, migration = cluster
    migration.set_phase("dual-write")  # the first stored phase: dual writes begin
    store.get("warm", workspace_id="ws")
    (job_id,) = split_ids(store.client)
    cut_before(store, writes_key("ai:job:"))
    with pytest.raises(jobstore.StoreUnavailable):
        store.enqueue("ws", "a", job_id=job_id)
    report = migration.verify()
    assert report.missing == 1 and not report.clean
    assert migration.verify(repair=True).repaired == 1
    assert migration.verify().clean
    assert store.client.hgetall(f"ai:jobs:{job_id}") == store.client.hgetall(f"ai:job:ws:{job_id}")


def test_update_cut_before_the_second_copy_keeps_reads_right(cluster):
    store, migration = cluster
    migration.set_phase("dual-write")  # the first stored phase: dual writes begin
    migration.set_phase("read-target")
    store.get("warm", workspace_id="ws")
    (job_id,) = split_ids(store.client)
    store.enqueue("ws", "a", job_id=job_id)
    # In read-target the target copy takes the move first; the cut hits the source copy.
    cut_before(store, writes_key("ai:jobs:"))
    with pytest.raises(jobstore.StoreUnavailable):
        store.update_status(job_id, "cancelled", workspace_id="ws")
    assert store.get(job_id, workspace_id="ws").status == "cancelled"
    assert store.client.hget(f"ai:jobs:{job_id}", "status") == "pending"
    report = migration.verify()
    assert report.target_newer == 1 and not report.clean  # before target-only, a problem
    migration.verify(repair=True)
    assert migration.verify().clean
    assert store.client.hget(f"ai:jobs:{job_id}", "status") == "cancelled"


def test_delete_cut_between_the_copies_never_comes_back(cluster):
    store, migration = cluster
    migration.set_phase("dual-write")  # the first stored phase: dual writes begin
    store.get("warm", workspace_id="ws")
    (job_id,) = split_ids(store.client)
    store.enqueue("ws", "a", job_id=job_id)
    # The target copy goes first (leaving a tombstone); the cut spares the source.
    cut_before(store, writes_key("ai:jobs:"))
    with pytest.raises(jobstore.StoreUnavailable):
        store.delete(job_id, workspace_id="ws")
    assert not store.client.exists(f"ai:job:ws:{job_id}")
    # A backfill running now must not copy the source back into the target...
    assert migration.backfill().counts.get("deleted") == 1  # ...it completes the delete
    assert store.get(job_id, workspace_id="ws") is None
    assert migration.verify().clean


def test_a_node_error_between_the_writes(cluster):
    """The node holding the target slot refuses writes (out of memory) for a while."""
    store, migration = cluster
    migration.set_phase("dual-write")  # the first stored phase: dual writes begin
    store.get("warm", workspace_id="ws")
    (job_id,) = split_ids(store.client)
    node = store.client.get_node_from_key(f"ai:job:ws:{job_id}")
    target_node = store.client.get_redis_connection(node)
    target_node.config_set("maxmemory-policy", "noeviction")
    target_node.config_set("maxmemory", "1")
    try:
        with pytest.raises(jobstore.JobStoreError, match="OOM|memory"):
            store.enqueue("ws", "a", job_id=job_id)
    finally:
        target_node.config_set("maxmemory", "0")
    assert store.get(job_id, workspace_id="ws").action == "a"  # from the source
    assert migration.verify(repair=True).repaired == 1
    assert migration.verify().clean


@pytest.mark.parametrize("strategy", ["legacy", "workspace", "dual"])
def test_enqueuing_a_pending_jobs_id_again_with_the_same_content_is_refused(cluster, strategy):
    store = jobstore.JobStore(cluster[0].client, strategy)
    job = store.enqueue("ws", "a", {"n": 1}, job_id="j1")
    with pytest.raises(jobstore.JobExists):
        store.enqueue("ws", "a", {"n": 1}, job_id="j1")
    with pytest.raises(jobstore.JobExists) as info:
        store.enqueue_many([("ws", "a", {"n": 1}, "j1"), ("ws", "b", None, "j2")])
    assert [j.job_id for j in info.value.created] == ["j2"]
    assert [store.dequeue(timeout=0).job_id for _ in range(2)] == [job.job_id, "j2"]
    assert store.dequeue(timeout=0) is None


def test_a_delete_by_another_workspace_never_tombstones_a_job(cluster):
    """Found by the conformance kit: after cleanup, ws-c deleting an id only ws-a holds left a
    tombstone on the shared legacy key, and the reverse sync then deleted ws-a's job."""
    store, migration = cluster
    for phase in ("off", "dual-write"):
        migration.set_phase(phase)
    job = jobstore.JobStore(store.client, "dual").enqueue("ws-a", "a", job_id="j1")
    migration.backfill()
    migration.verify()
    for phase in ("read-target", "target-only"):
        migration.set_phase(phase)
    assert migration.cleanup().counts.get("deleted") == 1
    dual = jobstore.JobStore(store.client, "dual")
    assert dual.delete("j1", workspace_id="ws-c") is False
    report = migration.reverse_sync()
    assert report.counts.get("copied") == 1, report.as_dict()
    assert dual.get("j1", workspace_id="ws-a") == job
    assert [j.job_id for j in dual.list("ws-a")] == ["j1"]
    migration.set_phase("read-target")
    assert jobstore.JobStore(store.client, "legacy").get("j1", workspace_id="ws-a") == job


def test_a_duplicated_queue_entry_is_handed_out_once(cluster):
    store, _ = cluster
    job = store.enqueue("ws", "a")
    (entry,) = store.client.lrange("ai:queue", 0, -1)
    assert entry == f"ws:{job.job_id}:{job.created_at!r}"
    store.client.lpush("ai:queue", entry)  # as a re-sent push would leave it
    claimed = [store.dequeue(), store.dequeue(), store.dequeue()]
    assert [j.job_id for j in claimed if j] == [job.job_id]


def test_passes_scan_every_primary(cluster):
    store, migration = cluster
    legacy = jobstore.JobStore(store.client, "legacy")
    jobs = legacy.enqueue_many([(f"ws{i % 5}", "a") for i in range(300)])
    nodes = {store.client.get_node_from_key(f"ai:jobs:{j.job_id}").name for j in jobs}
    assert len(nodes) == 3
    migration.set_phase("dual-write")  # the first stored phase: dual writes begin
    calls = []
    report = migration.backfill(batch=50, progress=lambda *a: calls.append(a))
    assert report.counts == {"copied": 300} and calls[-1][2] == 300
    checkpoint = store.client.hgetall("ai:migration:{legacy:workspace}:backfill")
    import json

    assert set(json.loads(checkpoint["cursors"])) == nodes
    assert migration.verify().clean


class TaggedSchema(jobstore.KeySchema):
    name = "tagged"
    key_format = "${prefix}:tagged:{${workspace_id}}:${job_id}"


class TaggedTooSchema(jobstore.KeySchema):
    name = "tagged2"
    key_format = "${prefix}:tagged2:{${workspace_id}}:${job_id}"


@pytest.fixture
def tagged_schemas():
    import types

    from jobstore import plugins

    @jobstore.hookimpl
    def jobstore_register_schemas(register):
        register(TaggedSchema)
        register(TaggedTooSchema)

    plugins.reset()
    plugins.get_plugin_manager().register(
        types.SimpleNamespace(jobstore_register_schemas=jobstore_register_schemas), name="tagged")
    yield
    plugins.reset()


@pytest.mark.parametrize("strategy, options", [
    ("tagged", {}),
    ("dual", {"source": "tagged", "target": "tagged2", "phase": "dual-write"}),
])
def test_records_sharing_a_hash_tag_each_get_their_own_op_marker(cluster_url, tagged_schemas,
                                                                  strategy, options):
    """Found by the conformance kit: the jobs of one batch (or the two copies of one job) in one
    slot shared an op marker, so every record after the first was taken for a replay and never
    written."""
    store = jobstore.open(cluster_url, strategy, **options)
    jobs = store.enqueue_many([("ws", "a", None, "j0"), ("ws", "b", None, "j1")])
    assert {j.job_id for j in store.list("ws")} == {"j0", "j1"}
    for job in jobs:
        assert store.get(job.job_id, workspace_id="ws") == job
    if strategy == "dual":
        assert store.client.exists("ai:tagged:{ws}:j0", "ai:tagged2:{ws}:j0",
                                   "ai:tagged:{ws}:j1", "ai:tagged2:{ws}:j1") == 4
    store.update_status("j0", "cancelled", workspace_id="ws")
    assert store.dequeue(timeout=0).job_id == "j1"
    assert store.delete("j0", workspace_id="ws") and store.delete("j1", workspace_id="ws")
    assert not store.client.exists("ai:tagged:{ws}:j0", "ai:tagged2:{ws}:j0",
                                   "ai:tagged:{ws}:j1", "ai:tagged2:{ws}:j1")
    store.close()


def test_a_blocking_dequeue_waits_in_slices_shorter_than_the_socket_timeout(cluster_url):
    store = jobstore.open(cluster_url, "legacy", client_options={"socket_timeout": 0.5})
    assert store.dequeue(timeout=1.2) is None  # one 1 s BLMOVE would have hit the 0.5 s timeout
    store.close()


def test_an_enqueue_cut_in_target_only_completes_after_the_rollback(cluster):
    """Cut after its record, in target-only; retried in read-target, where the source is written
    first: the retry completes that job (its own created_at, so its queue entry matches)."""
    store, migration = cluster
    migration.set_phase("target-only", force=True, reason="test")
    store.get("warm", workspace_id="ws")
    armed = cut_before(store, writes_key("ai:queue"))
    with pytest.raises(jobstore.StoreUnavailable):
        store.enqueue("ws", "a", {"n": 1}, job_id="cut")
    assert not armed[0] and store.client.exists("ai:job:ws:cut")
    first = store.client.hget("ai:job:ws:cut", "created_at")
    migration.set_phase("read-target", force=True, reason="test")
    after = jobstore.JobStore(store.client, "dual")
    job = after.enqueue("ws", "a", {"n": 1}, job_id="cut")
    assert repr(job.created_at) == first
    assert store.client.hget("ai:jobs:cut", "created_at") == first
    claimed = after.dequeue(timeout=0)
    assert claimed is not None and claimed.job_id == "cut"
    with pytest.raises(jobstore.JobExists):
        after.enqueue("ws", "a", {"n": 1}, job_id="cut")


def test_script_calls_are_routed_without_asking_the_server_for_their_keys(cluster_url):
    """redis-py's cluster pipeline asked every node ``COMMAND GETKEYS`` for each script call it
    queued: one more round trip per script call, in sequence (a cluster enqueue
    took five round trips for its three steps). The keys of a script call are in the call."""
    store = jobstore.open(cluster_url, "dual", phase="dual-write")
    client = store.client

    def getkeys_calls():
        stats = client.info("commandstats", target_nodes=client.PRIMARIES)
        return sum(node.get("cmdstat_command|getkeys", {}).get("calls", 0)
                   for node in stats.values())

    store.get("warm", workspace_id="ws")
    before = getkeys_calls()
    jobs = store.enqueue_many([("ws", "a", {"n": n}) for n in range(20)])
    store.enqueue("ws", "b")
    job = store.dequeue(timeout=0)
    store.update_status(job.job_id, "completed", workspace_id="ws", claim=job.claim)
    assert getkeys_calls() == before
    assert {j.job_id for j in store.list("ws", limit=50)} >= {j.job_id for j in jobs}
    store.close()


def test_an_enqueue_cut_after_its_record_completes_where_an_expired_job_left_its_entry(
        cluster_url):
    # An earlier job of the id expired (its record gone) and left its index entry, not pruned
    # yet. A new enqueue of the id is cut after its record step: retried, it must complete (the
    # entry under another score is the earlier job's), not call its own record a second job.
    store = jobstore.open(cluster_url, "legacy")
    store.enqueue("ws", "old", job_id="x")
    store.client.delete("ai:jobs:x")  # as an expiry does: the index entry stays
    assert store.client.zscore("ai:index:{ws}", "x") is not None
    armed = cut_before(store, writes_key("ai:queue"))
    with pytest.raises(jobstore.StoreUnavailable):
        store.enqueue("ws", "a", {"n": 1}, job_id="x")
    assert not armed[0]
    assert store.enqueue("ws", "a", {"n": 1}, job_id="x").action == "a"
    with pytest.raises(jobstore.JobExists):  # now it is indexed under its own score
        store.enqueue("ws", "a", {"n": 1}, job_id="x")
    taken = store.dequeue()
    assert (taken.job_id, taken.action) == ("x", "a") and store.dequeue() is None
