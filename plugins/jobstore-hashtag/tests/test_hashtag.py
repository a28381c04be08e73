"""The hashtag schema, installed through its entry point, behaves as a jobstore schema."""

import jobstore
from jobstore_hashtag import HashTagSchema


def test_registered_through_the_entry_point():
    info = {row.name: row for row in jobstore.strategies()}["hashtag"]
    assert info.plugin == "jobstore-hashtag" and info.kind == "schema"


def test_keys_carry_the_workspace_hash_tag():
    schema = HashTagSchema("ai")
    assert schema.job_key("ws1", "j1") == "ai:{ws1}:job:j1"
    assert schema.parse_key("ai:{ws1}:job:j1") == ("ws1", "j1")
    assert schema.parse_key("ai:job:ws1:j1") is None


def test_store_and_dual_migration_target():
    store = jobstore.open("memory://", "dual", target="hashtag")
    job = store.enqueue("ws1", "a", job_id="j1")
    assert store.client.exists("ai:jobs:j1", "ai:{ws1}:job:j1") == 2
    assert store.get("j1", workspace_id="ws1") == job
    assert store.get("j1", workspace_id="ws2") is None
