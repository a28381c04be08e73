"""Retention: what expired records leave behind (docs/retention.md). The index, the queue and
the dead letters are pruned by the operations that meet them (list, dequeue) and by the sweep,
whose bounded runs resume where the last one stopped; a Redis under noeviction takes expiring
records as they are. Helpers are test_retention's."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

import jobstore
from jobstore import DeadLetter, InvalidArgument, JobStatus
from jobstore.cli import main
from jobstore.events import Events
from jobstore.testing import FakeClock
from tests.conftest import keys, need_redis_server
from tests.store.test_retention import HOUR, WS, both, copies, gone, pttls, within
from tests.support.servers import RedisServer


# -- the index, the queue, the dead letters --------------------------------------------------

@both
def test_list_skips_and_prunes_jobs_whose_records_are_gone(make_store):
    store = make_store("dual", phase="read-target")
    for i in range(5):
        store.enqueue(WS, "a", job_id=f"j{i}")
    store.update_status("j1", "cancelled", workspace_id=WS)
    store.update_status("j3", "cancelled", workspace_id=WS)
    gone(store, "j1")
    gone(store, "j3")
    index = store.keys.index(WS)
    assert store.client.zcard(index) == 5
    assert [j.job_id for j in store.list(WS, limit=2)] == ["j4", "j2"]
    assert [j.job_id for j in store.list(WS)] == ["j4", "j2", "j0"]
    assert sorted(store.client.zrange(index, 0, -1)) == ["j0", "j2", "j4"]


@both
def test_list_keeps_the_entry_of_a_job_held_in_a_schema_it_does_not_read(make_store):
    store = make_store("dual", phase="off")  # reads the source only
    store.enqueue(WS, "a", job_id="j1")
    record = store.client.hgetall("ai:jobs:j1")
    store.client.delete("ai:jobs:j1")
    store.client.hset("ai:job:acme:j1", mapping=record)  # only the target holds it
    assert store.list(WS) == []
    assert store.client.zscore(store.keys.index(WS), "j1") is not None


@both
def test_the_prune_spares_a_job_enqueued_again_under_the_id(make_store):
    store = make_store("legacy")
    store.enqueue(WS, "a", job_id="j1")
    store.update_status("j1", "cancelled", workspace_id=WS)
    gone(store, "j1")
    index = store.keys.index(WS)
    old = store.client.zscore(index, "j1")
    from jobstore.ops.retention import _prune

    store.enqueue(WS, "again", job_id="j1")  # a new job, a new score
    assert store.driver.run(_prune(index, [("j1", old)])) == 0
    assert store.client.zscore(index, "j1") is not None
    assert [j.action for j in store.list(WS)] == ["again"]


@both
def test_dequeue_drops_queue_entries_of_expired_jobs(make_store):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="cancelled")
    store.enqueue(WS, "a", job_id="next")
    store.update_status("cancelled", "cancelled", workspace_id=WS, ttl=HOUR)
    gone(store, "cancelled")
    assert store.dequeue().job_id == "next"
    assert store.client.llen(store.keys.queue) == 0


def test_sweep_prunes_every_index_in_bounded_steps(make_store):
    store = make_store("dual", phase="read-target", finished_ttl=HOUR)
    for ws in ("w1", "w2"):
        store.enqueue_many([(ws, "a", None, f"{ws}-{i}") for i in range(23)])
    for ws in ("w1", "w2"):
        for i in range(0, 23, 2):
            store.update_status(f"{ws}-{i}", "cancelled", workspace_id=ws)
            for key in copies(store, f"{ws}-{i}", ws):
                store.client.delete(key)  # as if expired
    sizes: list[int] = []
    send = store.driver._send

    def recording(calls, tolerate=False):
        sizes.append(len(calls))
        return send(calls, tolerate)

    store.driver._send = recording  # type: ignore[method-assign]
    totals = store.sweep(batch=5)
    assert totals["pruned"] == 24 and totals["indexes"] == 2
    assert store.client.zcard(store.keys.index("w1")) == 11
    assert store.client.zcard(store.keys.index("w2")) == 11
    # a step reads 5 entries: two commands per copy, two copies each
    assert max(sizes) <= 5 * 2 * 2
    assert store.sweep(batch=5)["pruned"] == 0  # nothing left: a second run changes nothing


@both
def test_sweep_gives_jobs_finished_without_a_ttl_the_store_ttl(make_store):
    old = make_store("dual", phase="dual-write")
    old.enqueue(WS, "a", job_id="before")
    old.enqueue(WS, "a", job_id="own", ttl=2 * HOUR)
    old.enqueue(WS, "a", job_id="pending")
    for job_id in ("before",):
        old.update_status(job_id, "cancelled", workspace_id=WS)
    old.client.persist("ai:jobs:own")
    old.client.persist("ai:job:acme:own")
    old.client.hset("ai:jobs:own", "status", "cancelled")
    old.client.hset("ai:job:acme:own", "status", "cancelled")
    store = make_store("dual", phase="dual-write", finished_ttl=HOUR)
    assert store.sweep()["expiring"] == 4
    assert within(pttls(store, "before"), HOUR)
    assert within(pttls(store, "own"), 2 * HOUR)  # its enqueue's ttl wins
    assert pttls(store, "pending") == [-1, -1]


@both
def test_sweep_without_a_store_ttl_gives_finished_jobs_their_own(make_store):
    # A job enqueued with ttl= and finished by a worker that set no expiry (an older version):
    # any sweep gives it the ttl its enqueue asked for; one without leaves it alone.
    store = make_store("legacy")
    store.enqueue(WS, "a", job_id="own", ttl=2 * HOUR)
    store.enqueue(WS, "a", job_id="plain")
    for job_id in ("own", "plain"):
        store.client.hset(f"ai:jobs:{job_id}", "status", "cancelled")
    assert store.sweep()["expiring"] == 1
    assert within(pttls(store, "own"), 2 * HOUR)
    assert pttls(store, "plain") == [-1]


@both
def test_sweep_drops_dead_letters_older_than_their_ttl(make_store):
    store = make_store("legacy", dead_letter_ttl=HOUR)
    now = time.time()
    old = [json.dumps({"at": now - 2 * HOUR, "entry": f"old{i}", "reason": "r"}) for i in range(3)]
    new = [json.dumps({"at": now, "entry": f"new{i}", "reason": "r"}) for i in range(2)]
    store.client.lpush(store.keys.dead, *old, *new)  # newest first
    assert store.sweep(batch=2)["dead_letters"] == 3
    assert [letter.entry for letter in store.dead_letters()] == ["new1", "new0"]
    kept = make_store("legacy")  # no dead_letter_ttl: nothing dropped
    assert kept.sweep()["dead_letters"] == 0 and len(kept.dead_letters()) == 2


@both
def test_a_dead_letter_of_a_store_writing_iso_times_is_kept_for_its_ttl(make_store):
    # A store whose records carry ISO 8601 times writes its dequeue's dead letters with the
    # time they were written all the same: the sweep keeps them for dead_letter_ttl.
    store = make_store("legacy", time_format="iso", dead_letter_ttl=HOUR)
    store.client.rpush(store.keys.queue, "nocolon")
    assert store.dequeue() is None
    (letter,) = store.dead_letters()
    assert letter.entry == "nocolon" and abs(letter.at - time.time()) < 60
    assert store.sweep()["dead_letters"] == 0
    assert [letter.entry for letter in store.dead_letters()] == ["nocolon"]


class Letters(Events):
    """Events that keep every dead letter reported."""

    def __init__(self) -> None:
        super().__init__()
        self.letters: list[DeadLetter] = []

    def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


def bury_one(store, how: str) -> None:
    """Have the store write one dead letter: dequeue meeting an entry it cannot parse, or a
    record it cannot decode (an entry from the queue, or the claim of a lease that ran out),
    or finish's claim of the next job meeting such an entry."""
    if how == "finish":
        store.enqueue(WS, "a", job_id="done")
        job = store.dequeue()
        store.client.rpush(store.keys.queue, "nocolon")  # the oldest entry
        assert store.finish(job, result={"ok": 1}) is None
        return
    if how == "entry":
        store.client.rpush(store.keys.queue, "nocolon")
    else:
        store.enqueue(WS, "a", job_id="bad")
        if how == "lease":
            job = store.dequeue()
            store.client.zadd(store.keys.leases, {job.claim: 0})  # its lease ran out
        store.client.hset(copies(store, "bad")[0], "created_at", "yesterday")
    assert store.dequeue() is None


@both
@pytest.mark.parametrize("how", ["entry", "record", "lease", "finish"])
@pytest.mark.parametrize("skew", [-2 * HOUR, 2 * HOUR], ids=["behind", "ahead"])
def test_a_dead_letter_carries_the_server_s_time_whatever_the_writer_s_clock(make_store, how,
                                                                             skew):
    # The sweep trims dead letters by age on the server's clock (dead_letter_ttl): a letter
    # stamped by a worker whose clock is off the server's would be dropped at once (behind) or
    # kept past its ttl (ahead). Every path that writes one stamps it with the server's time.
    seen = Letters()
    store = make_store("legacy", dead_letter_ttl=HOUR, events=seen)
    store.context.clock = FakeClock(start=time.time() + skew, tick=0)
    bury_one(store, how)
    seconds, micros = store.client.time()
    (letter,) = store.dead_letters()
    assert abs(letter.at - (seconds + micros / 1e6)) < 60
    assert [reported.at for reported in seen.letters] == [letter.at]
    assert store.sweep()["dead_letters"] == 0
    assert store.dead_letters() == [letter]


def many_indexes(store, workspaces: int = 6, jobs: int = 7) -> int:
    """Workspaces with pending jobs (nothing for a sweep to remove: every run examines what it
    examines); how many index entries they hold."""
    for w in range(workspaces):
        store.enqueue_many([(f"w{w}", "a", None, f"w{w}-{i}") for i in range(jobs)])
    return workspaces * jobs


def test_a_resumed_sweep_sweeps_every_index_though_the_one_it_stopped_in_is_gone(make_store):
    # SCAN hands out indexes in hash order, not by name: an index named before the one the last
    # run stopped in, met in a later SCAN step, is this run's to sweep, whether or not the index
    # it stopped in is still there (its workspace emptied meanwhile).
    store = make_store("legacy")
    checked = 0
    for stop in range(1, 40, 2):
        for key in keys(store.client):
            store.client.delete(key)
        many_indexes(store, workspaces=40, jobs=3)
        first = store.sweep(batch=2, max_entries=stop)
        saved = [json.loads(v) for v in store.client.hgetall(store.keys.sweep).values()
                 if v.startswith("{")]
        stopped_in = [where["index"] for where in saved if where["index"]]
        if not stopped_in:
            continue
        store.client.delete(*stopped_in)
        rest = store.sweep(batch=2)
        assert rest["complete"] and rest["indexes"] == 40 - first["indexes"], (stop, first, rest)
        checked += 1
    assert checked > 5


@both
def test_a_bounded_sweep_resumes_where_the_last_run_stopped(make_store):
    store = make_store("dual", phase="read-target")
    total = many_indexes(store)
    runs = []
    while not (runs and runs[-1]["complete"]):
        runs.append(store.sweep(batch=3, max_entries=10))
        assert len(runs) < 20
    assert all(run["entries"] <= 10 for run in runs)
    # every entry examined once across the runs: none started again from scratch
    assert sum(run["entries"] for run in runs) == total and len(runs) >= total // 10
    assert not runs[0]["resumed"] and all(run["resumed"] for run in runs[1:])
    again = store.sweep(batch=3, max_entries=10)  # a new cycle begins at the start
    assert not again["resumed"] and again["entries"] == 10


def test_a_cursor_saved_by_another_server_is_not_followed(make_store):
    # Redis restarted (or failed over) since the last run stopped: its SCAN cursor means
    # nothing to this server, so the run walks that primary from its start, skipping nothing.
    store = make_store("legacy")
    total = many_indexes(store)
    first = store.sweep(batch=2, max_entries=5)
    assert not first["complete"]
    for name, saved in store.client.hgetall(store.keys.sweep).items():
        if saved.startswith("{"):
            where = {**json.loads(saved), "server": "another-server", "scan": "999999",
                     "index": "", "rank": 0, "swept": []}
            store.client.hset(store.keys.sweep, name, json.dumps(where))
    rest = store.sweep(batch=2)
    assert rest["complete"] and rest["entries"] == total


@both
def test_a_bounded_sweep_covers_every_index_and_prunes_them_all(make_store):
    store = make_store("dual", phase="dual-write", finished_ttl=HOUR)
    for w in range(5):
        store.enqueue_many([(f"w{w}", "a", None, f"w{w}-{i}") for i in range(4)])
        for i in range(0, 4, 2):
            store.update_status(f"w{w}-{i}", "cancelled", workspace_id=f"w{w}")
            for key in copies(store, f"w{w}-{i}", f"w{w}"):
                store.client.delete(key)  # as if expired
    pruned = 0
    for _ in range(20):
        run = store.sweep(batch=2, max_entries=3)
        pruned += run["pruned"]
        if run["complete"]:
            break
    assert pruned == 10
    assert all(store.client.zcard(store.keys.index(f"w{w}")) == 2 for w in range(5))


def test_a_sweep_stops_at_its_time_bound_and_resumes(make_store):
    store = make_store("legacy")
    total = many_indexes(store, workspaces=4, jobs=5)
    now, send = [0.0], store.driver._send

    def slow(calls, *args):  # each step of an index takes a second
        now[0] += any(getattr(c, "args", ("",))[0] == "ZRANGE" for c in calls)
        return send(calls, *args)

    store.context.timer = lambda: now[0]
    store.driver._send = slow  # type: ignore[method-assign]
    first = store.sweep(batch=2, max_seconds=3)
    assert first["entries"] == 5  # three steps: the first index (2, 2 and 1 entries)
    assert not first["complete"] and 0 < first["entries"] < total
    rest = store.sweep(batch=2)  # no bound: on to the end of the cycle
    assert rest["resumed"] and rest["complete"]
    assert first["entries"] + rest["entries"] == total


def test_a_sweep_beside_another_never_makes_the_next_cycle_skip(make_store):
    """Sweep A stops at its bound in cycle n; meanwhile B completes cycle n and C begins cycle
    n + 1 and stops early. A's late mark belongs to cycle n and must not land: D resumes where
    C stopped, and covers the rest of the cycle."""
    store = make_store("legacy")
    total = many_indexes(store)
    send, seen, done = store.driver._send, [0], []

    def beside(calls, *args):
        if any(getattr(c, "args", ("",))[0] == "ZRANGE" for c in calls):
            seen[0] += 1
            if seen[0] == 2 and not done:
                other = make_store("legacy")
                done.append(other.sweep(batch=3))  # B: the whole cycle
                done.append(other.sweep(batch=3, max_entries=4))  # C: the next cycle's start
        return send(calls, *args)

    store.driver._send = beside  # type: ignore[method-assign]
    a = store.sweep(batch=3, max_entries=20)
    store.driver._send = send  # type: ignore[method-assign]
    b, c = done
    assert b["complete"] and not c["complete"] and c["entries"] == 4 and not a["complete"]
    d = store.sweep(batch=3)
    assert d["resumed"] and d["complete"] and d["entries"] == total - 4


@both
@pytest.mark.parametrize("bad", [{"max_entries": 0}, {"max_entries": 1.5},
                                 {"max_seconds": 0}, {"max_seconds": "1"}, {"batch": 0}])
def test_bad_sweep_bounds_are_refused_before_anything_is_sent(make_store, bad):
    store = make_store("legacy")
    with pytest.raises(InvalidArgument, match=next(iter(bad))):
        store.sweep(**bad)
    assert not store.client.exists(store.keys.sweep)


def test_the_sweep_command(make_store, backend):
    store = make_store("dual", phase="dual-write")
    store.enqueue(WS, "a", job_id="j1")
    store.update_status("j1", "cancelled", workspace_id=WS)
    result = CliRunner().invoke(main, ["sweep", "--url", backend, "--finished-ttl", "60",
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["expiring"] == 2
    assert within(pttls(store, "j1"), 60)
    many_indexes(store, workspaces=3, jobs=4)
    outputs = []
    for _ in range(3):
        result = CliRunner().invoke(main, ["sweep", "--url", backend, "--max-entries", "5"])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "stopped at its bound (the next run resumes here)" in outputs[0]
    assert "resumed" in outputs[1] and "reached the end of every index" in outputs[2]


def test_under_noeviction_expiring_records_open_fine_and_give_their_memory_back():
    """The eviction check accepts a store whose records expire (noeviction expires keys as
    usual); a Redis full of finished jobs refuses new ones until their retention passes, and
    then takes them again, without evicting anything."""
    need_redis_server()
    server = RedisServer(args=["--maxmemory-policy", "noeviction"]).start()
    store = jobstore.open(server.url, "legacy", finished_ttl=0.5)
    try:
        store.enqueue(WS, "a", job_id="waiting")  # pending: never expires
        admin = server.client(decode_responses=True)
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 400_000)
        params = {"pad": "x" * 2000}
        refused = None
        for i in range(2000):
            try:
                store.enqueue(WS, "a", params, job_id=f"j{i}")
            except jobstore.JobStoreError as exc:
                refused = exc
                break
            store.update_status(f"j{i}", "cancelled", workspace_id=WS)
        assert refused is not None and "OOM" in str(refused), refused
        deadline = time.monotonic() + 30
        while True:
            try:
                store.enqueue(WS, "a", params, job_id="after")
                break
            except jobstore.JobStoreError:
                assert time.monotonic() < deadline, "the finished jobs never gave memory back"
                time.sleep(0.1)
        assert store.get("waiting", workspace_id=WS).status is JobStatus.PENDING
        assert admin.info("stats")["evicted_keys"] == 0
    finally:
        store.close()
        server.stop()
