"""The bucketed schema, installed through its entry point: keys, a store, and a migration to it
and back with jobs pending, running and finished."""

import zlib

import jobstore
from jobstore_bucketed import BucketedSchema


def test_registered_through_the_entry_point():
    info = {row.name: row for row in jobstore.strategies()}["bucketed"]
    assert info.plugin == "jobstore-bucketed" and info.kind == "schema"


def test_keys_are_bucketed_by_workspace():
    schema = BucketedSchema("ai")
    bucket = f"{zlib.crc32(b'Acme') % 16:02x}"
    assert schema.job_key("Acme", "j1") == f"ai:tb:{bucket}:Acme:j1"
    assert schema.parse_key(f"ai:tb:{bucket}:Acme:j1") == ("Acme", "j1")
    wrong = "00" if bucket != "00" else "01"
    assert schema.parse_key(f"ai:tb:{wrong}:Acme:j1") is None  # not a key it would make
    assert schema.parse_key("ai:job:Acme:j1") is None


def test_a_migration_to_it_and_back_keeps_every_job():
    legacy = jobstore.open("memory://bucketed-journey", "legacy")
    jobs = [legacy.enqueue(f"Ws{i % 3}", "a", {"i": i}) for i in range(30)]
    running = legacy.dequeue()
    migration = jobstore.Migration(legacy.client, target="bucketed")
    store = jobstore.JobStore(legacy.client, "dual", target="bucketed")
    migration.set_phase("dual-write")
    late = store.enqueue("Ws1", "late")
    assert migration.backfill().counts.get("copied", 0) >= 30
    assert migration.verify().clean
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    assert migration.cleanup().counts.get("deleted", 0) >= 30
    assert not legacy.client.keys("ai:jobs:*")

    # Every pending job is handed out from the computed keys, the old entries included.
    handed = []
    while (job := store.dequeue()) is not None:
        handed.append(job.job_id)
    assert sorted(handed) == sorted(j.job_id for j in [*jobs, late] if j.job_id != running.job_id)
    done = store.update_status(running.job_id, "completed", workspace_id=running.workspace_id,
                               claim=running.claim)
    assert done.status is jobstore.JobStatus.COMPLETED

    # And back: reverse sync, then legacy again.
    back_copied = migration.reverse_sync().counts
    assert back_copied.get("copied", 0) >= 31, back_copied
    migration.set_phase("read-target")
    migration.reverse_sync()  # the writes made while the fleet left target-only
    migration.set_phase("dual-write")
    assert migration.verify().clean
    migration.set_phase("off")
    back = jobstore.JobStore(legacy.client, "legacy")
    assert back.get(late.job_id, workspace_id="Ws1").status is jobstore.JobStatus.RUNNING
