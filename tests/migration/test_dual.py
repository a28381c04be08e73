"""The dual strategy: before any phase is stored it behaves as read-target (write both, read
the target first, fall back to the source), and each fixed phase."""

from __future__ import annotations

import pytest

import jobstore
from tests.conftest import keys as all_keys
from jobstore import JobNotFound, JobStatus

# The core real-Redis tests: .ci/run runs them on every supported server build too.
pytestmark = pytest.mark.core

def keys(store, ws, job_id):
    return {s.name: s.job_key(ws, job_id) for s in store.strategy.schemas}


def test_default_is_read_target_over_legacy_and_workspace(make_store):
    store = make_store("dual")
    assert store.strategy.describe() == {
        "strategy": "dual", "source": "legacy", "target": "workspace", "phase": "read-target"
    }


def test_enqueue_writes_both_layouts_in_one_step(make_store):
    store = make_store("dual")
    job = store.enqueue("ws1", "a", job_id="j1")
    assert store.client.hgetall("ai:jobs:j1") == store.client.hgetall("ai:job:ws1:j1")
    assert store.client.hgetall("ai:job:ws1:j1")["status"] == "pending"
    assert store.get("j1", workspace_id="ws1") == job


def test_legacy_only_job_is_read_through_the_fallback(make_store):
    legacy = make_store("legacy")
    old = legacy.enqueue("ws1", "old", job_id="old1")
    dual = jobstore.JobStore(legacy.client, "dual")
    assert dual.get("old1", workspace_id="ws1") == old
    assert not dual.client.exists("ai:job:ws1:old1")


def test_fallback_never_returns_another_workspaces_legacy_job(make_store):
    legacy = make_store("legacy")
    legacy.enqueue("ws-a", "secret", job_id="shared-id")
    dual = jobstore.JobStore(legacy.client, "dual")
    assert dual.get("shared-id", workspace_id="ws-b") is None
    with pytest.raises(JobNotFound):
        dual.update_status("shared-id", "cancelled", workspace_id="ws-b")
    assert dual.delete("shared-id", workspace_id="ws-b") is False
    assert legacy.get("shared-id", workspace_id="ws-a").status is JobStatus.PENDING


def test_target_record_wins_over_source(make_store):
    store = make_store("dual")
    store.enqueue("ws1", "a", job_id="j1")
    store.client.hset("ai:job:ws1:j1", "action", "from-target")
    assert store.get("j1", workspace_id="ws1").action == "from-target"


def test_update_touches_the_workspace_key_only_where_it_exists(make_store):
    legacy = make_store("legacy")
    legacy.enqueue("ws1", "old", job_id="old1")
    dual = jobstore.JobStore(legacy.client, "dual")
    both = dual.enqueue("ws1", "new", job_id="new1")
    dual.update_status("old1", "running", workspace_id="ws1")
    assert not dual.client.exists("ai:job:ws1:old1")  # no orphan created
    assert dual.client.hget("ai:jobs:old1", "status") == "running"
    dual.update_status(both.job_id, "cancelled", workspace_id="ws1")
    assert dual.client.hget("ai:jobs:new1", "status") == "cancelled"
    assert dual.client.hget("ai:job:ws1:new1", "status") == "cancelled"


def test_delete_clears_both_layouts(make_store):
    store = make_store("dual")
    store.enqueue("ws1", "a", job_id="j1")
    assert store.delete("j1", workspace_id="ws1") is True
    assert store.client.exists("ai:jobs:j1", "ai:job:ws1:j1") == 0


def test_enqueue_collides_with_a_legacy_id_of_any_workspace(make_store):
    """The legacy layout holds one job per id, so dual must refuse the second."""
    store = make_store("dual")
    store.enqueue("ws-a", "a", job_id="j1")
    with pytest.raises(jobstore.JobExists):
        store.enqueue("ws-b", "b", job_id="j1")
    assert store.get("j1", workspace_id="ws-b") is None


def test_dequeue_sees_jobs_of_either_era_and_marks_both_records(make_store):
    legacy = make_store("legacy")
    legacy.enqueue("ws1", "old", job_id="old1")
    dual = jobstore.JobStore(legacy.client, "dual")
    dual.enqueue("ws1", "new", job_id="new1")
    assert dual.dequeue().job_id == "old1"
    second = dual.dequeue()
    assert second.job_id == "new1" and second.status is JobStatus.RUNNING
    assert dual.client.hget("ai:jobs:new1", "status") == "running"
    assert dual.client.hget("ai:job:ws1:new1", "status") == "running"


@pytest.mark.parametrize(
    "phase, written, read_from",
    [
        ("off", {"legacy"}, "legacy"),
        ("dual-write", {"legacy", "workspace"}, "legacy"),
        ("read-target", {"legacy", "workspace"}, "workspace"),
        ("target-only", {"workspace"}, "workspace"),
    ],
)
def test_phase_routing(make_store, phase, written, read_from):
    store = make_store("dual", phase=phase)
    store.enqueue("ws1", "a", job_id="j1")
    present = {name for name, key in keys(store, "ws1", "j1").items() if store.client.exists(key)}
    assert present == written
    for name, key in keys(store, "ws1", "j1").items():
        if store.client.exists(key):
            store.client.hset(key, "action", f"via-{name}")
    assert store.get("j1", workspace_id="ws1").action == f"via-{read_from}"


def test_dual_takes_any_registered_schema_as_source_or_target(make_store):
    store = make_store("dual", source="workspace", target="legacy", phase="read-target")
    store.enqueue("ws1", "a", job_id="j1")
    assert store.strategy.describe()["source"] == "workspace"
    assert store.client.exists("ai:jobs:j1", "ai:job:ws1:j1") == 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"phase": "sideways"}, "phase 'sideways'"),
        ({"source": "nope"}, "unknown strategy 'nope'"),
        ({"source": "legacy", "target": "legacy"}, "same schema"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_dual_options_are_config_errors(make_store, options, message):
    with pytest.raises(jobstore.ConfigError, match=message):
        make_store("dual", **options)


def test_prefix_is_followed_by_every_key(make_store):
    store = make_store("dual", prefix="svc:ai")
    store.enqueue("ws1", "a", job_id="j1")
    assert sorted(k for k in all_keys(store.client) if ":op:" not in k) == [
        "svc:ai:index:{ws1}", "svc:ai:job:ws1:j1", "svc:ai:jobs:j1", "svc:ai:queue",
    ]
