"""What a store works out once instead of on every call (a script's SHA-1, a routing's touched
schemas, the statuses a move starts from), and the fast paths of the checks every call runs:
each gives the answer the slow way gave, and follows what it depends on (a phase switch)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

import jobstore
from jobstore import InvalidArgument, JobStatus, scripts, validation
from jobstore.errors import CorruptRecord
from jobstore.job import NOT_UTF8, Job
from jobstore.ops.records import _ALLOWED_BEFORE
from jobstore.testing import FakeClock
from jobstore.job import statuses_allowed_before


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


@pytest.mark.parametrize("phase, touched", [
    ("off", ("legacy",)),
    ("dual-write", ("legacy", "workspace")),
    ("read-target", ("workspace", "legacy")),
    ("target-only", ("workspace",)),
    ("off", ("legacy",)),  # and back: nothing of the phase before stays
])
def test_the_schemas_a_call_touches_follow_the_phase(memory_url, phase, touched):
    store = jobstore.open(memory_url, "dual")
    ages = iter(range(0, 10**6, 10))
    store.driver.core.monotonic = lambda: next(ages)  # every call reads the phase first
    clock = FakeClock(tick=0)
    migration = jobstore.Migration(store.client, clock=clock, wait=clock.wait)
    for now in ("off", "dual-write", "read-target", "target-only", phase):
        migration.set_phase(now, force=True, reason="test")
        store.get("j", workspace_id="ws")  # follows the switch
        routing = store.strategy.routing("ws")
        assert routing.touched is routing.touched
        assert routing.touched == tuple(dict.fromkeys(routing.reads + routing.writes))
        assert routing.untouched == tuple(s for s in routing.known if s not in routing.touched)
    assert tuple(s.name for s in store.strategy.routing("ws").touched) == touched
    assert tuple(s.name for s in store.strategy.routing(None).touched) == touched


def test_the_statuses_a_move_starts_from_are_the_allowed_moves():
    for status in JobStatus:
        assert _ALLOWED_BEFORE[status] == tuple(s.value for s in statuses_allowed_before(status))


class Named(str):
    """A str subclass, as an application's own status names may be."""


@pytest.mark.parametrize("value", ["completed", JobStatus.COMPLETED, Named("completed")])
def test_a_status_is_taken_by_value_whatever_str_it_is(value):
    assert validation.status(value) is JobStatus.COMPLETED


@pytest.mark.parametrize("value", ["done", "COMPLETED", "", None, 3, ["completed"], b"completed"])
def test_anything_else_is_refused_naming_the_status(value):
    with pytest.raises(InvalidArgument) as raised:
        validation.status(value)
    assert raised.value.argument == "status"


RECORD = {"job_id": "j", "workspace_id": "ws", "action": "a", "status": "running",
          "params": '{"i":1}', "result": "", "error": "", "created_at": "1700000000.5",
          "updated_at": "1700000001.25", "attempts": "2", "claim": "c:ws:j:1700000000.5",
          "_rev": "3", "_op": "tok"}


def test_a_record_reads_into_the_same_job_field_by_field():
    assert Job.from_hash(RECORD) == Job(
        job_id="j", workspace_id="ws", action="a", status=JobStatus.RUNNING, params={"i": 1},
        result=None, error=None, created_at=1700000000.5, updated_at=1700000001.25,
        attempts=2, claim="c:ws:j:1700000000.5")


def test_text_beyond_ascii_reads_and_a_field_that_is_not_utf8_is_named():
    job = Job.from_hash({**RECORD, "error": "échec", "other": "ünread"})
    assert job.error == "échec"
    # Lone surrogates: bytes that were not UTF-8 in Redis. Fields jobstore does not read may
    # hold any; the first field it reads that holds them is named.
    assert Job.from_hash({**RECORD, "other": "\udcff"}).job_id == "j"
    with pytest.raises(CorruptRecord) as raised:
        Job.from_hash({**RECORD, "other": "\udcff", "error": "\udcfe", "claim": "\udcfd"})
    assert (raised.value.field, raised.value.reason) == ("error", NOT_UTF8)


def test_a_value_that_is_not_text_in_a_field_jobstore_does_not_read_is_ignored():
    assert Job.from_hash({**RECORD, "other": 5}).attempts == 2
