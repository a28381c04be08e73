"""Records holding bytes that are not UTF-8 (old code wrote ``params = b'{"a": "\\xff"}'``).

They used to raise a raw UnicodeDecodeError from redis-py's reply parser: ``get``, ``list`` (with
``errors="skip"`` too: a whole workspace could not be listed) and ``dequeue``, which had already
claimed the job (running, attempts 1, leased) and handed it to nobody, again after every lease.
Now such a record is corrupt like any other (``CorruptRecord`` naming key and field, left out of
``list``, its queue entry dead-lettered before anything is claimed), and the migration passes
copy it byte for byte.
"""

from __future__ import annotations

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobstore
from jobstore import CorruptRecord
from jobstore.job import NOT_UTF8, TEXT_FIELDS, record_problem
from jobstore.migration import Migration
from jobstore.scripts import RECORD_CHECK
from tests.conftest import keys

STRATEGIES = ["legacy", "workspace", "dual"]
OLD = b'{"a": "\xff"}'


def record_keys(store, workspace_id, job_id):
    return [s.job_key(workspace_id, job_id) for s in store.strategy.routing(workspace_id).touched]


def raw(store):
    """A client on the same server that reads bytes as bytes."""
    client = store.client
    if isinstance(client, fakeredis.FakeRedis):
        return fakeredis.FakeRedis(server=client.connection_pool.connection_kwargs["server"])
    if store.driver.cluster:
        return redis.RedisCluster.from_url(
            "redis://{}:{}".format(*client.get_default_node().name.split(":")))
    return redis.Redis(connection_pool=redis.ConnectionPool(
        **{k: v for k, v in client.connection_pool.connection_kwargs.items()
           if k not in ("decode_responses", "encoding_errors", "retry")}))


@pytest.fixture(params=STRATEGIES)
def old(request, make_store):
    """A store with job 'bad' (params of old bytes in every copy, written by old code: no
    '_op', the field of the jobstore enqueue that created a record) and job 'good' after it."""
    store = make_store(request.param)
    store.enqueue("ws", "work", {"a": 1}, job_id="bad")
    store.enqueue("ws", "work", {"a": 2}, job_id="good")
    for key in record_keys(store, "ws", "bad"):
        store.client.hset(key, "params", OLD)
        store.client.hdel(key, "_op")
    return store


def test_get_raises_corrupt_record_naming_key_and_field(old):
    with pytest.raises(CorruptRecord) as caught:
        old.get("bad", workspace_id="ws")
    assert caught.value.key in record_keys(old, "ws", "bad")
    assert (caught.value.field, caught.value.reason) == ("params", NOT_UTF8)
    assert old.get("good", workspace_id="ws").params == {"a": 2}


def test_list_returns_the_other_jobs(old):
    assert [job.job_id for job in old.list("ws")] == ["good"]
    assert [job.job_id for job in old.list("ws", errors="skip")] == ["good"]
    with pytest.raises(CorruptRecord, match="params"):
        old.list("ws", errors="raise")
    assert any(seen.field == "params" for seen in old.events.corrupt_records)


def test_dequeue_sets_the_entry_aside_and_claims_nothing(old):
    before = [raw(old).hgetall(key) for key in record_keys(old, "ws", "bad")]
    assert old.dequeue(timeout=0).job_id == "good"
    assert old.dequeue(timeout=0) is None
    (letter,) = old.dead_letters()
    assert (letter.field, letter.reason) == ("params", NOT_UTF8)
    assert letter.key in record_keys(old, "ws", "bad")
    # Left as it was, byte for byte: not running, no attempt, no claim, no lease.
    assert [raw(old).hgetall(key) for key in record_keys(old, "ws", "bad")] == before
    assert before[0][b"params"] == OLD and before[0][b"status"] == b"pending"


def test_update_status_writes_nothing(old):
    before = [raw(old).hgetall(key) for key in record_keys(old, "ws", "bad")]
    with pytest.raises(CorruptRecord, match="params"):
        old.update_status("bad", "cancelled", workspace_id="ws")
    assert [raw(old).hgetall(key) for key in record_keys(old, "ws", "bad")] == before


@pytest.mark.parametrize("field", ["action", "error", "result", "claim"])
def test_every_field_a_job_is_read_from_is_checked(make_store, field):
    store = make_store("legacy")
    store.enqueue("ws", "work", job_id="j1")
    store.client.hset("ai:jobs:j1", field, b"caf\xe9")
    with pytest.raises(CorruptRecord) as caught:
        store.get("j1", workspace_id="ws")
    assert (caught.value.key, caught.value.field) == ("ai:jobs:j1", field)


def test_a_field_no_job_is_read_from_may_hold_any_bytes(make_store, backend):
    if backend.startswith("memory://"):
        pytest.skip("fakeredis's cjson.encode cannot take bytes that are not UTF-8 (Redis's can): "
                    "the embedded store's dequeue marker fails on such a field")
    store = make_store("legacy")
    store.enqueue("ws", "work", {"x": "é"}, job_id="j1")
    store.client.hset("ai:jobs:j1", "written_by_old_code", b"\xff\xfe")
    assert store.get("j1", workspace_id="ws").params == {"x": "é"}
    assert store.dequeue(timeout=0).job_id == "j1"


@pytest.mark.parametrize("mode", ["backfill", "reverse_sync"])
def test_the_passes_copy_old_bytes_byte_for_byte(make_store, mode):
    """A record of old bytes is copied as it is (never decoded and re-encoded into something
    else), and verify finds the copies equal."""
    legacy = make_store("legacy")
    legacy.enqueue_many([("ws", "work", {"i": i}) for i in range(5)])
    legacy.enqueue("ws", "work", job_id="bad")
    legacy.client.hset("ai:jobs:bad", mapping={"params": OLD, "extra": b"\x80\x81"})
    migration = Migration(legacy.client)
    migration.set_phase("dual-write")
    migration.backfill()
    if mode == "reverse_sync":  # the source copy gone (as a cleanup leaves it), then brought back
        assert migration.verify().clean
        migration.set_phase("read-target")
        migration.set_phase("target-only")
        legacy.client.delete("ai:jobs:bad")
        migration.reverse_sync()
    client = raw(legacy)
    source, target = client.hgetall("ai:jobs:bad"), client.hgetall("ai:job:ws:bad")
    assert source[b"params"] == target[b"params"] == OLD
    assert source[b"extra"] == target[b"extra"] == b"\x80\x81"
    assert source == target
    report = migration.verify()
    assert report.checked_source == 6 and report.problems == 0


def test_a_pass_leaves_keys_of_old_bytes_it_cannot_route_as_they_were(make_store):
    legacy = make_store("legacy")
    legacy.enqueue("ws", "work", job_id="j1")
    legacy.client.hset("ai:jobs:j1", "workspace_id", b"w\xffs")
    migration = Migration(legacy.client)
    migration.set_phase("dual-write")
    migration.backfill()
    assert raw(legacy).hget("ai:jobs:j1", "workspace_id") == b"w\xffs"
    assert keys(legacy.client, "ai:job:*") == []


# -- the rule, in Python and in Lua --------------------------------------------------------------


@pytest.fixture(params=["fakeredis", "redis"])
def bytes_client(request):
    if request.param == "fakeredis":
        client = fakeredis.FakeRedis()
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield client
    client.close()


FULL = {"job_id": "j1", "workspace_id": "ws", "action": "a", "status": "pending",
        "params": "{}", "result": "", "error": "", "created_at": "1.5", "updated_at": "2.5"}
SEQUENCES = [b"\xff", b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
             b"\xf5\x80\x80\x80", b"\xc3", b"\xe2\x82", b"caf\xc3\xa9", b"\xe2\x82\xac",
             b"\xf0\x9f\x98\x80", b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf", b"\xc2\x80"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(TEXT_FIELDS),
       value=st.lists(st.one_of(st.binary(max_size=4), st.sampled_from(SEQUENCES),
                                st.text(max_size=3).map(str.encode)), max_size=5).map(b"".join))
def test_lua_and_python_agree_on_which_bytes_are_text(bytes_client, field, value):
    check = bytes_client.register_script(
        RECORD_CHECK + "local f, r = record_problem(KEYS[1]) if f then return {f, r} end return {}")
    record = {**FULL, field: value}
    bytes_client.delete("case")
    bytes_client.hset("case", mapping=record)
    text = {k: (v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v)
            for k, v in record.items()}
    expected = record_problem(text)
    got = tuple(part.decode() for part in check(keys=["case"])) or None
    assert got == expected, (field, value)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        assert expected is not None  # never taken for text


def test_old_bytes_in_a_record_jobstore_created_are_corrupt_too(make_store, backend):
    """The scripts trust a record with '_op' (jobstore wrote it, and writes only UTF-8); bytes
    other code put there later still never surface as a UnicodeDecodeError: get raises
    CorruptRecord, and dequeue claims the job and raises it (as for a value a codec cannot
    decode: the lease runs out, max_attempts fails the job)."""
    store = make_store("legacy")
    store.enqueue("ws", "work", job_id="j1")
    store.client.hset("ai:jobs:j1", "params", OLD)
    with pytest.raises(CorruptRecord, match="params"):
        store.get("j1", workspace_id="ws")
    if store.driver.cluster:  # a Cluster dequeue checks the record in Python before claiming
        assert store.dequeue(timeout=0) is None
        assert [letter.field for letter in store.dead_letters()] == ["params"]
    elif not backend.startswith("memory://"):  # fakeredis's cjson cannot hold the claimed record
        with pytest.raises(CorruptRecord, match="params"):
            store.dequeue(timeout=0)
    assert raw(store).hget("ai:jobs:j1", "params") == OLD


def test_a_codec_that_encodes_to_lone_surrogates_is_refused_before_anything_is_written(make_store):
    class Escaping(jobstore.JSONCodec):
        name = "escaping"

        def encode(self, field, value):
            return "\udcff" + super().encode(field, value)

    store = make_store("legacy", codec=Escaping())
    with pytest.raises(jobstore.PluginError, match="params.*surrogate"):
        store.enqueue("ws", "work", {"a": 1}, job_id="j1")
    assert keys(store.client) == []
