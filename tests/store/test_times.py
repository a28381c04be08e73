"""Records whose times are ISO 8601 text, as the code jobstore replaces writes them.

`get`/`list` used to fail on them (CorruptRecord: created_at not a decimal number). Now either
form is read, on every backend and by the migration passes, and an update keeps the form the
record has, so that old readers still read it.
"""

from __future__ import annotations

import datetime

import pytest

import jobstore
from jobstore.job import parse_time


def old_record(client, job_id: str, workspace_id: str, created: str, **extra) -> None:
    """What the replaced code writes: one HSET, ISO times, no updated_at, no jobstore index."""
    client.hset(f"ai:jobs:{job_id}", mapping={
        "job_id": job_id, "workspace_id": workspace_id, "action": "summarise",
        "status": "pending", "params": '{"doc": 1}', "result": "", "created_at": created, **extra})


@pytest.mark.parametrize("strategy", ["legacy", "dual"])
def test_records_with_iso_times_read_and_update_in_their_own_form(make_store, strategy):
    store = make_store(strategy)
    old_record(store.client, "old1", "acme", "2025-10-17T12:34:56.250000")
    job = store.get("old1", workspace_id="acme")
    assert job.created_at == job.updated_at == 1760704496.25
    assert (job.params, job.status) == ({"doc": 1}, jobstore.JobStatus.PENDING)

    moved = store.update_status("old1", "cancelled", workspace_id="acme")

    stored = store.client.hget("ai:jobs:old1", "updated_at")
    assert "T" in stored and parse_time(stored) == pytest.approx(moved.updated_at)
    assert store.client.hget("ai:jobs:old1", "created_at") == "2025-10-17T12:34:56.250000"
    datetime.datetime.fromisoformat(stored)  # what the old readers call


def test_a_zone_is_honoured_and_no_zone_is_utc(make_store):
    store = make_store("legacy")
    old_record(store.client, "z", "acme", "2025-10-17T14:34:56+02:00")
    old_record(store.client, "u", "acme", "2025-10-17T12:34:56")
    assert (store.get("z", workspace_id="acme").created_at
            == store.get("u", workspace_id="acme").created_at == 1760704496.0)


def test_a_store_can_write_iso_times(make_store):
    store = make_store("legacy", time_format="iso")
    job = store.enqueue("acme", "a")
    created = store.client.hget(f"ai:jobs:{job.job_id}", "created_at")
    assert created.endswith("+00:00") and parse_time(created) == pytest.approx(job.created_at)
    assert store.get(job.job_id, workspace_id="acme") == job
    claimed = store.dequeue()
    assert "T" in store.client.hget(f"ai:jobs:{job.job_id}", "updated_at")
    assert claimed.job_id == job.job_id
    with pytest.raises(jobstore.ConfigError, match="time_format"):
        make_store("legacy", time_format="rfc2822")


def test_the_migration_carries_iso_records_with_their_order(make_store):
    legacy = make_store("legacy")
    for i, day in enumerate(["2025-10-15", "2025-10-17", "2025-10-16"]):
        old_record(legacy.client, f"j{i}", "acme", f"{day}T08:00:00")
    migration = jobstore.Migration(legacy.client)
    migration.set_phase("dual-write")
    report = migration.backfill()
    assert report.counts.get("copied") == 3
    assert migration.verify().clean
    dual = jobstore.JobStore(legacy.client, "dual")
    # The index scores come from the ISO times: newest first.
    assert [job.job_id for job in dual.list("acme")] == ["j1", "j2", "j0"]
    assert legacy.client.hget("ai:job:acme:j0", "created_at") == "2025-10-15T08:00:00"
