"""Bad input is refused, naming the argument, before any Redis call.

The store here points at a port nothing listens on: if a check let anything through to Redis,
the test would see StoreUnavailable instead of the input error.
"""

from __future__ import annotations

import pytest

import jobstore
from jobstore import InvalidArgument, InvalidIdentifier, PayloadTooLarge

BAD_IDS = ["", "a" * 129, "a:b", "a*b", "a?b", "a[b]", "{tag}", "a b", "tab\t", "nl\n", "é", "a/b", None, 7]


@pytest.fixture
def dead_store():
    with jobstore.open("redis://127.0.0.1:1/0", "dual", max_record_bytes=2048) as store:
        yield store


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_identifiers_name_the_argument(dead_store, bad):
    for call, argument in [
        (lambda: dead_store.enqueue(bad, "a"), "workspace_id"),
        (lambda: dead_store.enqueue("ws", "a", job_id=bad if bad is not None else ""), "job_id"),
        (lambda: dead_store.get(bad, workspace_id="ws"), "job_id"),
        (lambda: dead_store.get("j", workspace_id=bad), "workspace_id"),
        (lambda: dead_store.update_status(bad, "running", workspace_id="ws"), "job_id"),
        (lambda: dead_store.delete("j", workspace_id=bad), "workspace_id"),
        (lambda: dead_store.list(bad), "workspace_id"),
    ]:
        with pytest.raises(InvalidIdentifier) as info:
            call()
        assert info.value.argument == argument and argument in str(info.value)
        assert isinstance(info.value, ValueError)


def test_longest_and_widest_valid_identifier_is_accepted():
    from jobstore import validation

    ok = "A-Za-z0_9." + "x" * 118
    assert validation.identifier("job_id", ok) == ok


@pytest.mark.parametrize("bad", ["", "x" * 257, "line\nbreak", "bell\x07", None, 3])
def test_bad_action(dead_store, bad):
    with pytest.raises(InvalidArgument, match="action"):
        dead_store.enqueue("ws", bad)


@pytest.mark.parametrize("bad", [{"f": object()}, {"nan": float("nan")}, ["not", "a", "dict"], "str"])
def test_bad_params(dead_store, bad):
    with pytest.raises(InvalidArgument, match="params"):
        dead_store.enqueue("ws", "a", bad)


def test_bad_result_status_error_limit_timeout(dead_store):
    with pytest.raises(InvalidArgument, match="result"):
        dead_store.update_status("j", "completed", workspace_id="ws", result={1, 2})
    with pytest.raises(InvalidArgument, match="status"):
        dead_store.update_status("j", "done", workspace_id="ws")
    with pytest.raises(InvalidArgument, match="error"):
        dead_store.update_status("j", "failed", workspace_id="ws", error=RuntimeError("x"))
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(InvalidArgument, match="limit"):
            dead_store.list("ws", limit=bad)
    with pytest.raises(InvalidArgument, match="status"):
        dead_store.list("ws", status="finished")
    for bad in (-1, "1", float("nan")):
        with pytest.raises(InvalidArgument, match="timeout"):
            dead_store.dequeue(timeout=bad)


def test_payload_too_large(dead_store):
    with pytest.raises(PayloadTooLarge) as info:
        dead_store.enqueue("ws", "a", {"blob": "x" * 4096})
    assert info.value.limit == 2048 and info.value.size > 2048
    with pytest.raises(PayloadTooLarge):
        dead_store.update_status("j", "completed", workspace_id="ws", result="y" * 4096)
    with pytest.raises(PayloadTooLarge):
        dead_store.enqueue_many([("ws", "a"), ("ws", "b", {"blob": "x" * 4096})])


def test_default_limit_is_one_mebibyte():
    store = jobstore.open("memory://", "legacy")
    store.enqueue("ws", "a", {"blob": "x" * (1024 * 1024 - 1000)})
    with pytest.raises(PayloadTooLarge):
        store.enqueue("ws", "a", {"blob": "x" * (1024 * 1024)})


def test_all_errors_derive_from_jobstore_error():
    for name in jobstore.errors.__all__ if hasattr(jobstore.errors, "__all__") else dir(jobstore.errors):
        obj = getattr(jobstore.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, jobstore.JobStoreError)


def test_valid_input_does_reach_redis(dead_store):
    """The guard above is meaningful: a valid call on this store fails only at the network."""
    with pytest.raises(jobstore.StoreUnavailable):
        dead_store.get("j", workspace_id="ws")
