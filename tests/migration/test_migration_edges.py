"""Migration passes on records at the edges, on every backend.

Wide records: a record of thousands of fields went through Lua ``unpack()`` whole, which fails
("too many results to unpack") past a few thousand values. Keys of another type inside the
schemas' namespaces: every pass must finish, count them as ``not_a_record``, and leave them
alone.
"""

from __future__ import annotations

import pytest

import jobstore
from jobstore.migration import Migration
from tests.conftest import keys
from jobstore.testing import FakeClock

EXTRA = 5_000  # fields beyond the job's own


@pytest.fixture
def env(make_store):
    """A legacy store with a few jobs, and its Migration on a fake clock."""

    class Env:
        legacy = make_store("legacy")
        client = legacy.client
        jobs = legacy.enqueue_many([(f"ws{i % 2}", "a", {"i": i}) for i in range(6)])
        clock = FakeClock(tick=0)
        migration = Migration(legacy.client, clock=clock, wait=clock.wait)

        @staticmethod
        def dual():
            """A fresh dual store (it reads the phase now, not a cached one)."""
            return jobstore.JobStore(Env.legacy.client, "dual")

        @staticmethod
        def to(*phases):
            for phase in phases:
                Env.migration.set_phase(phase)

    return Env


def widen(client, key: str, tag: str = "v") -> dict:
    """Add EXTRA fields to the hash at ``key`` (several HSETs: one reply per write is enough)."""
    extra = {f"x{n:04d}": f"{tag}{n}" for n in range(EXTRA)}
    items = list(extra.items())
    for start in range(0, len(items), 1000):
        client.hset(key, mapping=dict(items[start:start + 1000]))
    return extra


# -- wide records ------------------------------------------------------------------------------


def test_wide_records_go_through_every_pass(env):
    client = env.client
    wide = env.legacy.enqueue("ws0", "wide", {"big": True})
    source_key, target_key = f"ai:jobs:{wide.job_id}", f"ai:job:ws0:{wide.job_id}"
    extra = widen(client, source_key)
    assert client.hlen(source_key) > EXTRA
    assert client.hget(source_key, "workspace_id") == "ws0"

    env.to("dual-write")
    report = env.migration.backfill()
    assert report.finished and report.counts == {"copied": 7}, report
    copied = client.hgetall(target_key)
    assert copied == client.hgetall(source_key)  # every field, the 5,000 extra ones included
    assert all(copied[name] == value for name, value in extra.items())

    check = env.migration.verify()
    assert check.clean and check.same == 7, check.as_dict()

    # The target copy drifts (a changed field, a field only it has): verify --repair converges.
    client.hset(target_key, mapping={"x0007": "drifted", "only_in_target": "1"})
    found = env.migration.verify(examples=5)
    assert found.differing == 1 and not found.clean, found.as_dict()
    assert found.examples["differing"][0]["fields"] == ["only_in_target", "x0007"]
    repaired = env.migration.verify(repair=True)
    assert repaired.repaired == 1, repaired.as_dict()
    source, target = client.hgetall(source_key), client.hgetall(target_key)
    assert source == target  # the union, written to both sides
    assert target["only_in_target"] == "1" and target["x0007"] in ("v7", "drifted")
    assert all(target[name] == value for name, value in extra.items() if name != "x0007")
    again = env.migration.verify()
    assert again.clean and again.same == 7, again.as_dict()

    # A wide record written in target-only goes back to the source with the reverse sync.
    env.to("read-target", "target-only")
    late = env.dual().enqueue("ws1", "late-wide")
    late_target, late_source = f"ai:job:ws1:{late.job_id}", f"ai:jobs:{late.job_id}"
    assert not client.exists(late_source)
    widen(client, late_target, tag="late")
    synced = env.migration.reverse_sync()
    assert synced.finished and synced.counts.get("copied") == 1, synced
    assert client.hgetall(late_source) == client.hgetall(late_target)
    assert client.hlen(late_source) > EXTRA

    # Cleanup deletes the wide source records: their target copies are the same records.
    cleaned = env.migration.cleanup()
    assert cleaned.finished and cleaned.counts == {"deleted": 8}, cleaned
    assert keys(client, "ai:jobs:*") == []
    assert client.hlen(target_key) > EXTRA and client.hlen(late_target) > EXTRA
    assert env.dual().get(wide.job_id, workspace_id="ws0").action == "wide"


# -- keys of another type in the namespaces -----------------------------------------------------


def test_keys_of_another_type_are_counted_skipped_and_left_alone(env):
    client = env.client
    client.set("ai:jobs:weird", "not a job")           # in the legacy layout's namespace
    client.rpush("ai:job:ws0:weird2", "a", "b")        # in the workspace layout's namespace

    def untouched():
        assert client.type("ai:jobs:weird") == "string" and client.get("ai:jobs:weird") == "not a job"
        assert client.type("ai:job:ws0:weird2") == "list"
        assert client.lrange("ai:job:ws0:weird2", 0, -1) == ["a", "b"]
        assert not client.exists("ai:job:ws0:weird", "ai:jobs:weird2")  # no copies of them

    env.to("dual-write")
    report = env.migration.backfill()
    assert report.finished and report.counts == {"copied": 6, "not_a_record": 1}, report
    untouched()

    check = env.migration.verify()
    assert check.complete and check.not_records == 2, check.as_dict()
    assert check.clean and check.problems == 0 and check.same == 6, check.as_dict()
    assert (check.checked_source, check.checked_target) == (6, 6), check.as_dict()
    untouched()

    env.to("read-target", "target-only")  # the clean verify above allows it
    synced = env.migration.reverse_sync()
    assert synced.finished, synced
    # Counted once, as a key that is not a record. Its name differs by where it is noticed:
    # 'not_a_record' when the pass reads a legacy key's workspace_id (backfill, cleanup),
    # 'wrong_type' when the sync script meets it (reverse sync of a workspace-layout key).
    assert synced.counts.get("not_a_record", 0) + synced.counts.get("wrong_type", 0) == 1, synced
    assert "error" not in synced.counts and "copied" not in synced.counts, synced
    untouched()

    cleaned = env.migration.cleanup()
    assert cleaned.finished and cleaned.counts == {"deleted": 6, "not_a_record": 1}, cleaned
    assert keys(client, "ai:jobs:*") == ["ai:jobs:weird"]
    untouched()
