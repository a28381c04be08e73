"""What a store works out once instead of on every call (a script's SHA-1, a routing's touched
schemas, the statuses a move starts from), and the fast paths of the checks every call runs:
each gives the answer the slow way gave, and follows what it depends on (a phase switch)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

import jobstore
from jobstore import JobStatus, scripts


@pytest.fixture
def memory_url() -> str:
    return f"memory://per-call-{uuid.uuid4().hex}"


def test_a_script_s_sha_is_the_sha1_of_its_source():
    for lua in scripts.ALL:
        assert lua.sha == hashlib.sha1(lua.source.encode("utf-8")).hexdigest()


def test_calls_do_not_hash_the_scripts_again(memory_url, monkeypatch):
    store = jobstore.open(memory_url, "legacy")
    store.enqueue("ws", "a", {})
    store.enqueue("ws", "b", {})
    hashed: list[bytes] = []

    class Counting:
        @staticmethod
        def sha1(data: bytes):
            hashed.append(data)
            return hashlib.sha1(data)

    monkeypatch.setattr(scripts, "hashlib", Counting)
    job = store.dequeue()
    assert job is not None
    store.enqueue("ws", "c", {})
    nxt = store.finish(job)
    assert nxt is not None and nxt.status is JobStatus.RUNNING
    assert store.get(job.job_id, workspace_id="ws").status is JobStatus.COMPLETED
    assert hashed == []
