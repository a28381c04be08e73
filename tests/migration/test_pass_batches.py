"""The passes' batch script (PASS_BATCH) against their per-record forms.

On standalone Redis, for schemas with a key format, backfill, reverse sync, cleanup and verify
settle a chunk of scanned keys per script call, placement included. The per-record forms
(``_place`` + SYNC_RECORD / CLEANUP_RECORD / READ_RECORDS, which computed schemas and Redis
Cluster keep) are the reference: on one messy keyspace (conflicts, keys of another type, foreign
and unroutable records, TTLs, ``_op``, an index key of the wrong type, chunk boundaries in the
middle of all of it) both must leave the same keys with the same values and report the same.
Then the guarantees that involve a batch in flight: a job deleted between the scan and the
script is not brought back, and a pass killed after its scripts ran resumes from its checkpoint.
"""

from __future__ import annotations

import pytest

import jobstore
from jobstore import migration as migration_module
from jobstore.migration import Migration
from jobstore.testing import FakeClock

pytestmark = pytest.mark.redis

WORKSPACES = ("ws0", "ws1", "ws2")
PLAIN = 260  # plain records: several chunks (migration.CHUNK) and several SCAN batches


class Crash(BaseException):
    """The operator's process dying."""


def in_dual_write(url: str, n: int):
    """``n`` jobs enqueued by a legacy store, and their migration in phase dual-write."""
    legacy = jobstore.open(url, "legacy")
    jobs = legacy.enqueue_many([(WORKSPACES[i % 3], "a", {"n": i}) for i in range(n)])
    clock = FakeClock(tick=0)
    migration = Migration(legacy.client, clock=clock, wait=clock.wait)
    migration.set_phase("dual-write")
    return legacy, jobs, migration


def record(ws: str, job_id: str, rev: int = 1, status: str = "pending", **extra: str) -> dict:
    return {"job_id": job_id, "workspace_id": ws, "action": "a", "status": status,
            "params": "{}", "result": "", "error": "", "created_at": "1700000000.5",
            "updated_at": "1700000000.5", "_rev": str(rev), **extra}


TIES = [f"t{n}" for n in range(8)]  # workspaces: under a 50% rollout some read the target first


def tie(client, rev: int) -> None:
    """Equal counts and statuses, different content: the copy the workspace reads first wins."""
    for ws in TIES:
        client.hset(f"ai:jobs:tie-{ws}", mapping=record(ws, f"tie-{ws}", rev=rev, params='{"s": 1}'))
        client.hset(f"ai:job:{ws}:tie-{ws}", mapping=record(ws, f"tie-{ws}", rev=rev, params='{"t": 1}'))


def seed(client) -> None:
    """A keyspace with every case a pass meets, the same every time (fixed ids)."""
    pipe = client.pipeline(transaction=False)
    for n in range(PLAIN):
        ws = WORKSPACES[n % 3]
        pipe.hset(f"ai:jobs:p{n}", mapping=record(ws, f"p{n}", _op=f"tok{n}"))
        if n % 7 == 0:
            pipe.pexpire(f"ai:jobs:p{n}", 3_600_000)  # a TTL the copy must keep
        if n % 11 == 0:  # already copied
            pipe.hset(f"ai:job:{ws}:p{n}", mapping=record(ws, f"p{n}", _op=f"tok{n}"))
    # conflicts: the target newer, older, equal with a later status, equal and different
    pipe.hset("ai:jobs:newer", mapping=record("ws0", "newer", rev=2))
    pipe.hset("ai:job:ws0:newer", mapping=record("ws0", "newer", rev=5, status="running"))
    pipe.hset("ai:jobs:older", mapping=record("ws1", "older", rev=4, status="completed", result="r"))
    pipe.hset("ai:job:ws1:older", mapping=record("ws1", "older", rev=2, status="running", only="t"))
    pipe.hset("ai:jobs:status", mapping=record("ws2", "status", rev=3, status="running"))
    pipe.hset("ai:job:ws2:status", mapping=record("ws2", "status", rev=3, status="completed"))
    tie(pipe, rev=3)
    # another workspace's record where the copy goes; records that cannot be placed
    pipe.hset("ai:jobs:foreign", mapping=record("ws0", "foreign"))
    pipe.hset("ai:job:ws0:foreign", mapping=record("ws1", "foreign"))
    pipe.hset("ai:jobs:noworkspace", mapping={"job_id": "noworkspace", "status": "pending"})
    pipe.hset("ai:jobs:badworkspace", mapping=record("bad workspace!", "badworkspace"))
    # keys of another type: a source key, a target key, and a workspace's index
    pipe.set("ai:jobs:astring", "not a job")
    pipe.hset("ai:jobs:blocked", mapping=record("ws1", "blocked"))
    pipe.rpush("ai:job:ws1:blocked", "x")
    for n in range(5):
        pipe.hset(f"ai:jobs:w{n}", mapping=record("wsx", f"w{n}"))
    pipe.set("ai:index:{wsx}", "not an index")
    # ISO times (the index score is parsed from them) and a target-only record
    pipe.hset("ai:jobs:iso", mapping={**record("ws2", "iso"), "created_at": "2024-05-01T10:00:00Z"})
    pipe.hset("ai:job:ws1:only-target", mapping=record("ws1", "only-target", rev=2))
    pipe.execute()


def dump(client) -> dict:
    """Every key but the migration's own (its times differ run to run), with its TTL's presence."""
    out = {}
    for key in client.scan_iter(count=1000):
        if key.startswith("ai:migration:"):
            continue
        kind = client.type(key)
        read = {"hash": lambda k: client.hgetall(k), "string": lambda k: client.get(k),
                "list": lambda k: client.lrange(k, 0, -1),
                "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}[kind]
        value = read(key)
        out[key] = (kind, value, client.pttl(key) > 0)
    return out


def pass_report(report) -> dict:
    found = report.as_dict()
    found.pop("seconds")
    return found


def journey(url: str, per_record: bool, monkeypatch) -> list:
    """Every pass on the messy keyspace, in the batch or the per-record form: what each
    reported and the keyspace after each."""
    client = jobstore.open(url, "legacy").client
    client.flushall()
    seed(client)
    clock = FakeClock(tick=0)
    migration = Migration(client, clock=clock, wait=clock.wait)
    if per_record:
        monkeypatch.setattr(migration, "_in_lua", lambda other: False)
    seen = []

    def step(name, report):
        seen.append((name, pass_report(report), dump(client)))

    migration.set_phase("dual-write")
    step("backfill", migration.backfill(batch=100))
    step("verify", migration.verify(batch=100, examples=100))
    step("repair", migration.verify(batch=100, repair=True, examples=100))
    migration.set_phase("read-target", force=True, reason="test")
    migration.set_rollout(percent=50)  # the authority differs by workspace: ties go one by one
    assert len({migration._reads_target(migration.state())(ws) for ws in TIES}) == 2
    tie(client, rev=7)
    step("backfill again", migration.backfill(batch=100, restart=True))
    step("reverse sync", migration.reverse_sync(batch=100))
    migration.set_phase("target-only", force=True, reason="test")
    step("dry cleanup", migration.cleanup(batch=100, dry_run=True))
    step("cleanup", migration.cleanup(batch=100))
    step("verify after", migration.verify(batch=100, examples=100))
    return seen


def test_the_batch_script_does_what_the_per_record_scripts_do(redis_url, monkeypatch):
    batched = journey(redis_url, False, monkeypatch)
    reference = journey(redis_url, True, monkeypatch)
    for (name, report, keys), (_, want_report, want_keys) in zip(batched, reference):
        assert report == want_report, name
        assert keys == want_keys, name
    # and the journey met what it was built for
    first = dict((name, report) for name, report, _ in batched)
    assert first["backfill"]["counts"]["not_a_record"] == 2  # the string, the list in the way
    assert first["backfill"]["counts"]["unroutable"] == 2
    assert first["backfill"]["counts"]["error"] == 5  # the index of wsx is not a sorted set
    assert first["backfill"]["counts"]["foreign"] == 1
    assert first["backfill"]["counts"]["refreshed"] >= 2  # 'older' and the ties (dual-write)
    keys = batched[0][2]
    assert keys["ai:job:ws1:p7"][2] and not keys["ai:job:ws0:p3"][2]  # TTLs kept, none added
    assert keys["ai:job:ws2:p5"][1]["_op"] == "tok5"  # _op is copied like any other field
    assert ("iso", 1714557600.0) in keys["ai:index:{ws2}"][1]
    assert keys["ai:job:ws0:newer"][1]["_rev"] == "5"  # never overwritten with older data
    assert keys["ai:job:ws1:older"][1]["result"] == "r" and keys["ai:job:ws1:older"][1]["only"] == "t"


def test_a_job_deleted_between_the_scan_and_the_script_is_not_brought_back(redis_url):
    legacy, jobs, migration = in_dual_write(redis_url, 300)
    dual = jobstore.open(redis_url, "dual")
    dual.get("warm", workspace_id="ws0")
    by_key = {f"ai:jobs:{job.job_id}": job for job in jobs}
    scan = migration.driver._scan
    deleted = []

    def scan_then_delete(step):  # a delete lands after the scan saw the key, before the script
        identity, cursor, found = scan(step)
        for key in found[: len(found) // 2 : 7]:
            job = by_key[key]
            assert dual.delete(job.job_id, workspace_id=job.workspace_id)
            deleted.append(job)
        return identity, cursor, found

    migration.driver._scan = scan_then_delete
    report = migration.backfill(batch=100)
    assert report.finished and deleted
    workspace = jobstore.open(redis_url, "workspace")
    assert all(workspace.get(j.job_id, workspace_id=j.workspace_id) is None for j in deleted)
    gone = {j.job_id for j in deleted}
    assert all(workspace.get(j.job_id, workspace_id=j.workspace_id) for j in jobs if j.job_id not in gone)
    assert report.counts == {"copied": 300 - len(deleted)}, report


@pytest.mark.parametrize("kill_at", [1, 2, 3, 7])
def test_a_pass_killed_after_its_scripts_ran_resumes_from_its_checkpoint(redis_url, kill_at):
    legacy, jobs, migration = in_dual_write(redis_url, 600)
    send = migration.driver._send
    trips = [0]
    carried = []  # round trips that carried a checkpoint

    def killed_after_the_scripts(calls, tolerate=False):
        replies = send(calls, tolerate)  # Redis ran them; the process dies before it reads on
        carried.extend(c for c in calls if getattr(c, "args", ("",))[0] == "HSET")
        if any(getattr(call, "lua", None) is not None and call.lua.name == "pass_batch"
               for call in calls):
            trips[0] += 1
            if trips[0] == kill_at:
                raise Crash
        return replies

    migration.driver._send = killed_after_the_scripts
    with pytest.raises(Crash):
        migration.backfill(batch=100)
    migration.driver._send = send
    copied = len(list(legacy.client.scan_iter("ai:job:*", count=1000)))
    assert 0 < copied < 600
    # the first checkpoint rides with the second batch's first round trip
    checkpointed = legacy.client.exists("ai:migration:{legacy:workspace}:backfill")
    assert checkpointed == bool(carried) and (kill_at == 1) <= (not carried)
    report = migration.backfill(batch=100)
    assert report.finished
    assert report.resumed == bool(checkpointed)
    workspace = jobstore.open(redis_url, "workspace")
    assert all(workspace.get(j.job_id, workspace_id=j.workspace_id) for j in jobs)
    assert migration.verify().clean
    # every record settled once at least; a batch re-done after the kill counts as 'exists'
    assert sum(report.counts.values()) >= 600 - (0 if not report.resumed else copied)


def test_progress_is_told_once_its_checkpoint_is_written(redis_url):
    legacy, jobs, migration = in_dual_write(redis_url, 400)
    saved = []

    def progress(step, done, total, counts):
        checkpoint = legacy.client.hgetall("ai:migration:{legacy:workspace}:backfill")
        saved.append((done, int(checkpoint["scanned"])))

    migration.backfill(batch=50, progress=progress)
    assert len(saved) > 3
    assert all(done == scanned for done, scanned in saved), saved


def count_trips(migration) -> list[list[int]]:
    """Per round trip of the migration's driver: the keys of each pass_batch call in it."""
    send = migration.driver._send
    trips: list[list[int]] = []

    def counting(calls, tolerate=False):
        trips.append([len(c.keys) for c in calls if getattr(c, "lua", None) is not None
                      and c.lua.name == "pass_batch"])
        return send(calls, tolerate)

    migration.driver._send = counting
    return trips


def test_chunks_hold_at_most_chunk_keys(redis_url, monkeypatch):
    """A script call blocks every other client for its duration: the pass never sends more than
    CHUNK keys to one, whatever the batch."""
    monkeypatch.setattr(migration_module.transport, "CHUNK", 7)  # read where it is defined
    legacy, jobs, migration = in_dual_write(redis_url, 120)
    trips = count_trips(migration)
    report = migration.backfill(batch=1000)
    assert report.counts == {"copied": 120}
    sizes = [n for trip in trips for n in trip]
    assert sizes and max(sizes) <= 7 and sum(sizes) == 120
    assert max(len(trip) for trip in trips) <= migration_module.CHUNKS_PER_TRIP


def test_under_a_rate_each_call_is_small_and_its_own_round_trip(redis_url):
    legacy, jobs, migration = in_dual_write(redis_url, 120)
    trips = count_trips(migration)
    report = migration.backfill(batch=1000, rate=4000)
    assert report.counts == {"copied": 120}
    sizes = [n for trip in trips for n in trip]
    assert sum(sizes) == 120 and max(sizes) <= migration_module._rate_chunk(4000) == 5
    assert all(len(trip) <= 1 for trip in trips)


def test_keys_per_call_sets_how_many_records_one_call_settles(redis_url):
    """``keys_per_call`` trades live latency for speed: every pass and verify honour it, and
    their reports do not change with it."""
    legacy, jobs, migration = in_dual_write(redis_url, PLAIN)
    trips = count_trips(migration)
    report = migration.backfill(batch=1000, keys_per_call=120)
    assert report.counts == {"copied": PLAIN}
    sizes = [n for trip in trips for n in trip]
    assert sum(sizes) == PLAIN and max(sizes) == 120 > migration_module.CHUNK
    trips.clear()
    checked = migration.verify(batch=1000, keys_per_call=200)
    assert checked.clean and checked.checked_source == checked.checked_target == PLAIN
    sizes = [n for trip in trips for n in trip]
    assert max(sizes) == 200 and sum(sizes) == 2 * PLAIN  # both sides, compared in the script
    trips.clear()
    checked = migration.verify(batch=1000, keys_per_call=1)
    assert checked.clean and {n for trip in trips for n in trip} == {1}
    trips.clear()
    # under a rate, calls stay as small as the rate makes them, and never above keys_per_call
    migration.backfill(batch=1000, rate=40_000, keys_per_call=30, restart=True)
    sizes = [n for trip in trips for n in trip]
    assert sum(sizes) == PLAIN and max(sizes) == 30
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    trips.clear()
    report = migration.cleanup(batch=1000, keys_per_call=1000)
    assert report.counts == {"deleted": PLAIN}
    assert [n for trip in trips for n in trip] == [PLAIN]
    trips.clear()
    migration.reverse_sync(batch=1000, keys_per_call=64)
    assert max(n for trip in trips for n in trip) == 64


@pytest.mark.parametrize("bad", [0, 1001, -5, "50", 2.0, True])
def test_a_bad_keys_per_call_is_refused_before_anything_is_sent(bad):
    # A Redis that is not there: the argument is checked first, so the error is about it.
    migration = Migration(jobstore.connection.connect("redis://127.0.0.1:9/0"))
    for run in (migration.backfill, migration.reverse_sync, migration.cleanup, migration.verify):
        with pytest.raises(jobstore.InvalidArgument, match="keys_per_call") as raised:
            run(keys_per_call=bad)
        assert raised.value.argument == "keys_per_call"
    if bad in (0, -5, "50", 2.0, True):
        with pytest.raises(jobstore.InvalidArgument, match="batch"):
            migration.verify(batch=bad)
