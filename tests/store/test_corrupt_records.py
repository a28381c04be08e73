"""Records and queue entries jobstore cannot decode, on every backend.

A record whose ``created_at`` is not a number, whose status is outside the enum, or which has no
``job_id`` or ``workspace_id`` is reported as ``CorruptRecord`` (naming its key and field) by
``get``; ``list`` leaves it out and reports it (or raises, with ``errors="raise"``);
``update_status`` refuses it before writing anything; ``dequeue`` moves its queue entry to the
dead letters and hands out the next job, leaving the record as it was. A queue entry that cannot
be parsed is dead-lettered too. The Lua form of the decoding rule is checked against the Python
one (standalone Redis decides in Lua, Redis Cluster and every reader in Python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fakeredis
import pytest
import redis
from prometheus_client import CollectorRegistry

import jobstore
from jobstore import CorruptRecord, DeadLetter, JobStatus
from jobstore.dead_letters import MAX_DEAD_LETTERS, entry_problem, printable
from jobstore.events import Events
from jobstore.job import Job, record_problem
from jobstore.metrics import PrometheusEvents
from jobstore.scripts import RECORD_CHECK

# field -> how a record is broken there: a value to set, or None to delete the field
CORRUPTIONS = {
    "created_at": "yesterday",
    "status": "paused",
    "job_id": None,
    "workspace_id": None,
}
VARIANTS = list(CORRUPTIONS)


class Recorder(Events):
    """Events that keep every dead letter too."""

    def __init__(self):
        super().__init__()
        self.letters: list[DeadLetter] = []

    def dead_letter(self, letter) -> None:
        self.letters.append(letter)


def record_keys(store, job) -> list[str]:
    """The job's record keys in the schemas the store touches, read order first."""
    return [s.job_key(job.workspace_id, job.job_id)
            for s in store.strategy.routing(job.workspace_id).touched]


def break_record(store, key: str, field: str) -> None:
    value = CORRUPTIONS[field]
    if value is None:
        store.client.hdel(key, field)
    else:
        store.client.hset(key, field, value)


def snapshot(store, keys) -> list[dict]:
    return [store.client.hgetall(key) for key in keys]


# -- get -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", VARIANTS)
def test_get_raises_corrupt_record_naming_key_and_field(make_store, field):
    store = make_store("workspace")
    job = store.enqueue("acme", "summarise", job_id="j1")
    (key,) = record_keys(store, job)
    break_record(store, key, field)

    with pytest.raises(CorruptRecord) as caught:
        store.get("j1", workspace_id="acme")
    assert (caught.value.key, caught.value.field) == (key, field)
    assert key in str(caught.value) and field in str(caught.value)
    assert isinstance(caught.value, jobstore.JobStoreError)
    assert not isinstance(caught.value, ValueError)  # not the caller's input
    assert store.events.corrupt_records[-1].key == key


def test_a_shared_legacy_key_without_workspace_id_is_corrupt_for_every_caller(make_store):
    store = make_store("legacy")
    store.enqueue("acme", "a", job_id="j1")
    store.client.hdel("ai:jobs:j1", "workspace_id")
    for workspace_id in ("acme", "globex"):
        with pytest.raises(CorruptRecord) as caught:
            store.get("j1", workspace_id=workspace_id)
        assert (caught.value.key, caught.value.field) == ("ai:jobs:j1", "workspace_id")
    # Another workspace's (decodable) record stays invisible, as before.
    store.enqueue("acme", "b", job_id="j2")
    assert store.get("j2", workspace_id="globex") is None


# -- list ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", VARIANTS)
def test_list_returns_the_good_records_and_reports_the_bad_one(make_store, field):
    store = make_store("workspace")
    first = store.enqueue("acme", "first", job_id="a1")
    bad = store.enqueue("acme", "bad", job_id="a2")
    last = store.enqueue("acme", "last", job_id="a3")
    (key,) = record_keys(store, bad)
    break_record(store, key, field)

    assert store.list("acme") == [last, first]
    seen = store.events.corrupt_records[-1]
    assert (seen.operation, seen.key, seen.field) == ("list", key, field)
    assert [j.job_id for j in store.list("acme", status="pending", limit=2)] == ["a3", "a1"]
    assert store.list("acme", limit=1) == [last]

    with pytest.raises(CorruptRecord) as caught:
        store.list("acme", errors="raise")
    assert (caught.value.key, caught.value.field) == (key, field)
    with pytest.raises(jobstore.InvalidArgument):
        store.list("acme", errors="ignore")


def test_list_reports_corrupt_records_as_metrics(backend):
    registry = CollectorRegistry()
    store = jobstore.open(backend, "workspace", events=PrometheusEvents(registry=registry))
    try:
        for field in VARIANTS:
            job = store.enqueue("acme", "x")
            break_record(store, record_keys(store, job)[0], field)
        store.enqueue("acme", "fine")
        assert [j.action for j in store.list("acme")] == ["fine"]
        for field in VARIANTS:
            assert registry.get_sample_value("ai_jobs_corrupt_records_total", {"field": field}) == 1
        untouched = {"field": "updated_at"}
        assert registry.get_sample_value("ai_jobs_corrupt_records_total", untouched) == 0
    finally:
        store.close()


# -- update_status -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", VARIANTS)
def test_update_status_refuses_a_corrupt_record_and_writes_nothing(make_store, field):
    store = make_store("workspace")
    job = store.enqueue("acme", "summarise", job_id="j1")
    (key,) = record_keys(store, job)
    break_record(store, key, field)
    before = snapshot(store, [key])

    with pytest.raises(CorruptRecord) as caught:
        store.update_status("j1", "running", workspace_id="acme", result={"x": 1})
    assert (caught.value.key, caught.value.field) == (key, field)
    assert snapshot(store, [key]) == before
    assert store.events.corrupt_records[-1].operation == "update_status"


@pytest.mark.parametrize("field", VARIANTS)
def test_update_status_writes_no_copy_when_one_copy_is_corrupt(make_store, field):
    # dual in read-target updates both copies: the target (read first) is fine, the source is
    # broken. On Redis Cluster the copies sit in different slots, and still neither moves.
    store = make_store("dual", phase="read-target")
    job = store.enqueue("acme", "summarise", job_id="j1")
    target, source = record_keys(store, job)
    break_record(store, source, field)
    before = snapshot(store, [target, source])

    with pytest.raises(CorruptRecord) as caught:
        store.update_status("j1", "cancelled", workspace_id="acme")
    assert (caught.value.key, caught.value.field) == (source, field)
    assert snapshot(store, [target, source]) == before
    assert store.get("j1", workspace_id="acme") == job  # the target copy reads as before


# -- dequeue -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", VARIANTS)
def test_dequeue_dead_letters_a_corrupt_job_and_hands_out_the_next(make_store, field):
    events = Recorder()
    store = make_store("workspace", events=events)
    bad = store.enqueue("acme", "bad", job_id="j1")
    good = store.enqueue("acme", "good", job_id="j2")
    (key,) = record_keys(store, bad)
    break_record(store, key, field)
    entry = store.keys.queue_entry("acme", "j1", repr(bad.created_at))
    before = snapshot(store, [key])

    claimed = store.dequeue()
    assert claimed.job_id == good.job_id and claimed.status is JobStatus.RUNNING
    assert snapshot(store, [key]) == before  # not marked running, nothing written
    (letter,) = store.dead_letters()
    assert (letter.entry, letter.key, letter.field) == (entry, key, field)
    assert letter.reason and letter.at > 0
    assert events.letters == [letter] and events.corrupt_records[-1].operation == "dequeue"
    assert store.client.llen(store.keys.queue) == 0
    assert store.dequeue() is None and len(store.dead_letters()) == 1
    # to_json gives the fields the script stored, from_json reads it back whole.
    (stored,) = store.client.lrange(store.keys.dead, 0, -1)
    stored = stored.decode() if isinstance(stored, bytes) else stored
    assert json.loads(letter.to_json()) == json.loads(stored)
    assert DeadLetter.from_json(letter.to_json()) == letter


def test_dequeue_leaves_every_copy_when_one_is_corrupt(make_store):
    store = make_store("dual", phase="read-target")
    bad = store.enqueue("acme", "bad", job_id="j1")
    good = store.enqueue("acme", "good", job_id="j2")
    target, source = record_keys(store, bad)
    break_record(store, source, "status")
    before = snapshot(store, [target, source])

    assert store.dequeue().job_id == good.job_id
    assert snapshot(store, [target, source]) == before
    assert store.dead_letters()[0].key == source


def test_a_waiting_dequeue_dead_letters_too(make_store):
    store = make_store("workspace")
    bad = store.enqueue("acme", "bad", job_id="j1")
    store.client.hset(record_keys(store, bad)[0], "created_at", "soon")
    assert store.dequeue(timeout=0.2) is None
    assert store.dead_letters()[0].field == "created_at"
    store.enqueue("acme", "good", job_id="j2")
    assert store.dequeue(timeout=0.2).job_id == "j2"


def test_a_re_sent_dequeue_writes_its_dead_letters_once(make_store, backend):
    if backend.startswith("redis+cluster"):
        pytest.skip("standalone: one script per dequeue, re-sent whole by redis-py")
    store = make_store("workspace")
    store.context.new_token = lambda: "same-call"  # a re-send carries the same marker
    good = store.enqueue("acme", "good")
    store.client.rpush(store.keys.queue, ":")  # the oldest: popped first
    store.client.lpush(store.keys.queue, "nocolon")  # the newest: after the good job
    first = store.dequeue()
    assert first.job_id == good.job_id and len(store.dead_letters()) == 1
    assert store.dequeue() == first  # the "re-sent" script answers as its first attempt did
    assert len(store.dead_letters()) == 1 and store.client.llen(store.keys.queue) == 1


@pytest.mark.parametrize("entry", ["nocolon", ":", "ws:", ":j1", "ws:bad id:1.5", "ws:j%1"])
def test_a_malformed_queue_entry_is_dead_lettered_and_the_next_job_handed_out(make_store, entry):
    events = Recorder()
    store = make_store("workspace", events=events)
    good = store.enqueue("acme", "good", job_id="j2")
    store.client.rpush(store.keys.queue, entry)  # the oldest end: popped first

    assert store.dequeue().job_id == good.job_id
    (letter,) = store.dead_letters()
    assert (letter.entry, letter.key, letter.field) == (entry, None, None)
    assert letter.reason == entry_problem(entry)
    assert events.letters == [letter]
    assert store.client.llen(store.keys.queue) == 0


def test_dead_letters_keep_the_newest_and_show_unprintable_bytes_escaped(make_store):
    store = make_store("workspace")
    store.context.max_dead_letters = 3
    entries = [f"bad{i}" for i in range(5)] + ["tab\there\\é"]
    store.client.rpush(store.keys.queue, *reversed(entries))  # bad0 is the oldest
    assert store.dequeue() is None
    letters = store.dead_letters()
    assert [letter.entry for letter in letters] == [printable(entries[-1]), "bad4", "bad3"]
    assert letters[0].entry == "tab\\x09here\\x5c\\xc3\\xa9"
    assert [letter.entry for letter in store.dead_letters(limit=1)] == [letters[0].entry]
    with pytest.raises(jobstore.InvalidArgument):
        store.dead_letters(limit=0)


def test_dead_letter_counters(backend):
    registry = CollectorRegistry()
    store = jobstore.open(backend, "workspace", events=PrometheusEvents(registry=registry))
    try:
        bad = store.enqueue("acme", "bad")
        store.client.hset(record_keys(store, bad)[0], "status", "lost")
        store.client.rpush(store.keys.queue, "nocolon")
        assert store.dequeue() is None
        sample = registry.get_sample_value
        assert sample("ai_jobs_dead_letters_total", {"kind": "record"}) == 1
        assert sample("ai_jobs_dead_letters_total", {"kind": "entry"}) == 1
        assert sample("ai_jobs_corrupt_records_total", {"field": "status"}) == 1
    finally:
        store.close()


# -- the command line ----------------------------------------------------------------------------


def run_cli(*args):
    environ = {k: v for k, v in os.environ.items() if k != "JOBSTORE_REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "jobstore.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


def test_the_cli_lists_dead_letters(redis_url):
    assert run_cli("dead-letters", "--url", redis_url).stdout.strip() == "no dead letters"
    store = jobstore.open(redis_url, "workspace", prefix="svc")
    bad = store.enqueue("acme", "bad", job_id="j1")
    store.client.hset("svc:job:acme:j1", "created_at", "never")
    store.client.rpush(store.keys.queue, "nocolon")
    assert store.dequeue() is None

    out = run_cli("dead-letters", "--url", redis_url, "--prefix", "svc")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()  # newest first: "nocolon" was the older entry
    assert len(lines) == 2 and "nocolon" in lines[1] and "no ':'" in lines[1]
    assert f"acme:j1:{bad.created_at!r}" in lines[0] and "svc:job:acme:j1 created_at" in lines[0]

    as_json = json.loads(run_cli("dead-letters", "--url", redis_url, "--prefix", "svc", "--json",
                                 "--limit", "1").stdout)
    assert as_json == [store.dead_letters()[0].as_dict()]
    assert as_json[0]["key"] == "svc:job:acme:j1" and as_json[0]["field"] == "created_at"
    everything = json.loads(run_cli("dead-letters", "--url", redis_url, "--prefix", "svc",
                                    "--json").stdout)
    assert everything[1]["entry"] == "nocolon" and everything[1]["key"] is None
    assert run_cli("dead-letters", "--url", redis_url, "--limit", "0").returncode == 2
    assert run_cli("dead-letters").returncode == 2  # no URL


# -- the decoding rule: Python and Lua -----------------------------------------------------------

# ISO 8601 text as other services write it, and near misses (each read the same by both forms)
ISO_TIMES = ["2025-10-17T12:34:56.123456", "2025-10-17 12:34:56", "2025-10-17T12:34",
             "2025-10-17", "2025-10-17T12:34:56Z", "2025-10-17T12:34:56+02:00",
             "2025-10-17T12:34:56-0530", "2025-10-17T12:34:56+02", "2025-10-17T12:34:56,5",
             "2024-02-29T00:00:00", "2023-02-29T00:00:00", "2025-13-01T00:00:00",
             "2025-00-10", "2025-04-31", "2025-10-17T24:00:00", "2025-10-17T12:60:00",
             "2025-10-17T12:34:60", "2025-10-17T12:34:56+24:00", "2025-10-17T12:34:56.1234567890",
             "2025-10-17T12:34:56.", "2025-10-17T", "2025-10-17Z", "0000-01-01",
             "2025-1-17", "25-10-17", "2025-10-17T12:34:56 +02:00", "2025-10-17t12:34:56",
             "2025-10-17T12:34:56+2:00", "１２３4-10-17", "2025-10-17T12:34:56+02:00:00"]
TIMES = ["1732816496.123456", "3", "-0.0", "1e+16", "1e-05", "1.", "+1.5", "0.5E3",
         "", ".5", "1e", "nan", "inf", "-inf", "1_000", " 1.5", "1.5 ", "0x10", "1e400",
         "\u0661", "1.5e3.2", "1,5", "yesterday", "2024-01-01T00:00:00Z", "9" * 400,
         *ISO_TIMES]
STATUSES = ["pending", "running", "completed", "failed", "cancelled", "", "paused", "Pending",
            " pending"]
FULL = {"job_id": "j1", "workspace_id": "ws", "action": "a", "status": "pending",
        "params": "{}", "result": "", "error": "", "created_at": "1.5", "updated_at": "2.5"}


def cases():
    yield dict(FULL)
    for name in (*VARIANTS, "updated_at", "action", "params"):
        yield {k: v for k, v in FULL.items() if k != name}
        yield {**FULL, name: ""}
    for value in TIMES:
        yield {**FULL, "created_at": value}
        yield {**FULL, "updated_at": value}
    for value in STATUSES:
        yield {**FULL, "status": value}
    yield {**FULL, "params": "not json", "result": "plain text"}
    yield {"status": "weird", "created_at": "x"}  # several problems: the first field is named


@pytest.fixture(params=["fakeredis", "redis"])
def lua_client(request):
    if request.param == "fakeredis":
        client = fakeredis.FakeRedis(decode_responses=True)
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
    yield client
    client.close()


def test_lua_decodes_exactly_what_python_decodes(lua_client):
    check = lua_client.register_script(
        RECORD_CHECK + "local f, r = record_problem(KEYS[1]) if f then return {f, r} end return {}")
    for n, record in enumerate(cases()):
        key = f"case:{n}"
        lua_client.hset(key, mapping=record)
        expected = record_problem(record)
        assert (tuple(check(keys=[key])) or None) == expected, record
        if expected is None:
            Job.from_hash(record)
        else:
            with pytest.raises(CorruptRecord) as caught:
                Job.from_hash(record, key)
            assert (caught.value.key, caught.value.field, caught.value.reason) == (key, *expected)


def test_lua_reads_times_as_python_does(lua_client):
    # Not only valid or not: the same epoch seconds (the index score of a copied record).
    from jobstore.job import parse_time
    from jobstore.scripts import TIME

    to_epoch = lua_client.register_script(
        TIME + "local t = to_epoch(ARGV[1]) return t and string.format('%.6f', t) or false")
    for value in [*TIMES, "1760704496.5", "2025-10-17T12:34:56.123456+05:45"]:
        expected = parse_time(value)
        got = to_epoch(args=[value])
        if expected is None:
            assert got is None, value
        else:
            assert got is not None and abs(float(got) - expected) < 1e-5 * max(1, abs(expected) / 1e10), (value, got)


def test_records_jobstore_writes_decode_as_before_with_the_key_named():
    job = Job("j1", "ws", "a", JobStatus.RUNNING, {"k": [1]}, {"r": 1}, "e", 1e16, 1732816496.5)
    assert Job.from_hash(job.to_hash(), key="ai:jobs:j1") == job
    older = {"job_id": "j", "workspace_id": "w", "status": "", "params": "", "result": "raw",
             "created_at": "3", "updated_at": "4"}
    decoded = Job.from_hash(older)
    assert decoded.status is JobStatus.PENDING and decoded.result == "raw" and decoded.action == ""


def test_entry_rules():
    assert entry_problem("ws:j1:1.5") is None and entry_problem("ws:j1") is None
    assert entry_problem("ws:j1:") is None  # a stamp that matches no record: dropped, as before
    assert MAX_DEAD_LETTERS == 10_000
