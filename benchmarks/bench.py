"""jobstore against hand-written redis-py, every row of the performance targets
(docs/performance.md) side by side in one run.

    .venv/bin/python benchmarks/bench.py                 # standalone rows, a few minutes
    .venv/bin/python benchmarks/bench.py --quick         # smoke run, ~30 s
    .venv/bin/python benchmarks/bench.py --cluster       # + the Redis Cluster rows (3 masters)
    .venv/bin/python benchmarks/bench.py --json out.json # the table, and every sample as JSON

Without --url it starts a private redis-server on a free port (with --cluster, also a private
3-master cluster unless --cluster-url is given). Every variant of every row runs on a fresh key
prefix of its own and deletes its keys afterwards, so a --url Redis keeps only what it had.
Each repeat runs every selected row once, jobstore and its baseline back to back (the order
alternates between repeats); the table shows the median values and the ratio's min/median/max
over --repeats. The memory and keys-per-job rows measure the same bytes every time and run in
the first --memory-repeats repeats only (1). Rows run once per reply parser: hiredis (when
installed) and redis-py's own Python parser; --hiredis / --no-hiredis pick one. A row that
fails shows its error and the run goes on (BENCH_TRACEBACK=1 prints the tracebacks).
docs/performance.md says what each row measures. Asserts nothing; exits 1 only when no row
produced a number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import redis.cluster  # noqa: E402
import redis.connection  # noqa: E402

import jobstore  # noqa: E402
from jobstore.connection import cluster_seeds, connect  # noqa: E402
from jobstore.migration import Migration  # noqa: E402

from jobstore.testing import FakeClock  # noqa: E402  (the kit's: waits cost nothing)

try:  # the servers the test suite uses: private, on free ports, torn down at exit
    from tests.support.servers import RedisCluster, RedisServer  # noqa: E402
except ImportError:  # pragma: no cover - only with --url / --cluster-url
    RedisCluster = RedisServer = None  # type: ignore[assignment,misc]

try:
    import rq  # noqa: F401  (optional: the RQ rows run only when it is importable)
except ImportError:
    rq = None

HIREDIS = bool(getattr(redis.utils, "HIREDIS_AVAILABLE", False))
PYTHON_PARSER = getattr(redis.connection, "PythonParser", None) or redis.connection._RESP2Parser
HIREDIS_PARSER = getattr(redis.connection, "_HiredisParser", None)


def no_wait(seconds: float) -> None:
    """A phase switch's wait for every store to follow, skipped (the benchmark's stores read
    the stored phase on their first operation)."""


# -- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str            # for --rows and the JSON
    name: str           # as printed
    unit: str           # of the jobstore and baseline values: ops/s, keys/s, B/job, ms, keys/job
    baseline: str       # what the baseline is, in short
    target: str = ""    # the target (docs/performance.md), as printed
    op: str = ""        # '>=' or '<=': how the target compares ...
    bound: float = 0.0  # ... with this number ...
    on: str = "ratio"   # ... applied to the ratio, or to the jobstore 'value'
    cluster: bool = False
    parser_free: bool = False  # the same whatever the reply parser: measured once per repeat


ROWS = [
    Row("enqueue", "legacy enqueue", "ops/s", "raw HSET+LPUSH in MULTI", "≥ 0.85×", ">=", 0.85),
    Row("get", "legacy get", "ops/s", "raw HGETALL", "≥ 0.95×", ">=", 0.95),
    Row("dual-enqueue", "dual enqueue (dual-write)", "ops/s", "legacy enqueue",
        "≥ 0.90× every run", ">=", 0.90),
    Row("dual-get", "dual get, source only (read-target)", "ops/s", "legacy get",
        "≥ 0.90×", ">=", 0.90),
    Row("rq", "legacy enqueue", "ops/s", "rq Queue.enqueue", "≥ 3×", ">=", 3.0),
    Row("enqueue-many", "enqueue_many (batches of 100)", "ops/s", "raw pipelined HSET+LPUSH",
        "≥ 0.6×", ">=", 0.6),
    Row("memory-legacy", "memory/job legacy", "B/job", "raw record + queue entry", "≤ 1.3×",
        "<=", 1.3, parser_free=True),
    Row("memory-legacy-rq", "memory/job legacy", "B/job", "rq job + queue entry",
        "below RQ", "<=", 1.0, parser_free=True),
    Row("memory-dual", "memory/job dual (dual-write)", "B/job", "raw record + queue entry",
        "≤ 2.4×", "<=", 2.4, parser_free=True),
    Row("backfill", "backfill", "keys/s", "raw SCAN + Lua copy per 1,000", "≥ 0.6×", ">=", 0.6),
    Row("verify", "verify", "keys/s", "raw SCAN + Lua compare per 1,000", "≥ 0.6×", ">=", 0.6),
    Row("cleanup", "cleanup", "keys/s", "raw SCAN + Lua compare-and-UNLINK per 1,000", "≥ 0.5×",
        ">=", 0.5),
    Row("p99-full", "get p99, backfill at full speed", "ms", "idle get p99", "≤ 3×", "<=", 3.0),
    Row("p99-rate", "get p99, backfill under --rate", "ms", "idle get p99", "≤ 1.5×", "<=", 1.5),
    Row("metrics", "metrics on vs off (enqueue+get)", "pairs/s", "Events (no metrics)",
        "≥ 0.97×", ">=", 0.97),
    Row("cluster-enqueue-legacy", "legacy enqueue", "ops/s", "raw HSET, then RPUSH", "≥ 0.6×",
        ">=", 0.6, cluster=True),
    Row("cluster-enqueue-dual", "dual enqueue (dual-write)", "ops/s", "raw HSET, then RPUSH",
        "≥ 0.45×", ">=", 0.45, cluster=True),
    Row("cluster-keys-legacy", "keys/job legacy", "keys/job", "raw record + queue entry",
        "≤ 2 keys/job", "<=", 2.0, on="value", cluster=True, parser_free=True),
    Row("cluster-keys-dual", "keys/job dual (dual-write)", "keys/job", "raw record + queue entry",
        "≤ 3 keys/job", "<=", 3.0, on="value", cluster=True, parser_free=True),
    Row("cluster-memory-legacy", "memory/job legacy", "B/job", "raw record + queue entry",
        "≤ 1.5×", "<=", 1.5, cluster=True, parser_free=True),
    Row("cluster-memory-dual", "memory/job dual (dual-write)", "B/job",
        "raw record + queue entry", "≤ 2.6×", "<=", 2.6, cluster=True, parser_free=True),
]
ROW = {row.key: row for row in ROWS}


@dataclass
class Result:
    row: Row
    parser: str
    js: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.js, self.base) if b]

    def add(self, value: Any) -> None:
        if isinstance(value, Skip):
            self.skipped = str(value)
        elif isinstance(value, BaseException):
            text = f"{type(value).__name__}: {value}".splitlines()[0][:160]
            if text not in self.errors:
                self.errors.append(text)
        else:
            js, base, *note = value
            self.js.append(float(js))
            self.base.append(float(base))
            for n in note:
                if n and n not in self.notes:
                    self.notes.append(n)

    def met(self) -> str:
        row = self.row
        if not row.op:
            return ""
        samples = self.ratios if row.on == "ratio" else self.js
        if not samples:
            return ""

        def ok(x: float) -> bool:
            return x >= row.bound if row.op == ">=" else x <= row.bound

        if all(ok(x) for x in samples):
            return "yes"
        return "median" if ok(statistics.median(samples)) else "no"


class Skip(Exception):
    """A row that cannot run here (rq not installed, hiredis missing): said in the table."""


# -- settings and helpers --------------------------------------------------------------------


@dataclass
class Settings:
    url: str
    cluster_url: str | None
    repeats: int
    jobs: int
    memory_jobs: int
    pass_jobs: int
    latency_jobs: int
    cluster_jobs: int
    cluster_memory_jobs: int
    rate: float
    idle_seconds: float
    memory_repeats: int
    workspaces: list[str]
    payload: dict
    getter: str = "thread"
    keys_per_call: int | None = None  # the passes' (None: jobstore's default)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    repeat: int = 0
    _n: int = 0

    def prefix(self, what: str) -> str:
        """A key prefix no other variant uses (one segment: no prefix nests in another). All
        have the same length, so key names cost every variant alike; ``what`` only labels the
        call."""
        self._n += 1
        return f"jsb-{self.run_id}-{self._n:05d}"


def short_prefix(client) -> str:
    """A two-character prefix, as long as the default ``ai``, under which this Redis holds no
    key: the memory rows measure key names too. Each memory variant deletes its keys before
    the next one uses the prefix."""
    cluster = isinstance(client, redis.cluster.RedisCluster)
    nodes = [client.get_redis_connection(n) for n in client.get_primaries()] if cluster else [client]
    for first in "qxz":
        for second in "abcdefghijklmnopqrstuvwxyz":
            prefix = first + second
            if not any(next(iter(node.scan_iter(match=f"{prefix}:*", count=1000)), None)
                       for node in nodes):
                return prefix
    raise RuntimeError("no free two-character key prefix for the memory rows")


def parser_options(parser: str, cluster: bool) -> dict:
    """redis-py client keywords that pick the reply parser."""
    cls = HIREDIS_PARSER if parser == "hiredis" else PYTHON_PARSER
    if not cluster:
        return {"parser_class": cls}

    # RedisCluster hands only some keywords on to its node connections: parser_class is not one
    # of them, connection_class is (and reaches the nodes only through from_url).
    class Connection(redis.connection.Connection):
        def __init__(self, *args, **kwargs):
            kwargs["parser_class"] = cls
            super().__init__(*args, **kwargs)

    return {"connection_class": Connection}


def raw_client(s: Settings, parser: str, decode: bool = True) -> redis.Redis:
    """The client a careful engineer makes: redis-py's defaults, the run's parser."""
    return redis.Redis.from_url(s.url, decode_responses=decode, **parser_options(parser, False))


def cluster_client(s: Settings, parser: str, **options) -> redis.cluster.RedisCluster:
    """A RedisCluster on the run's cluster with the run's parser (from_url: see parser_options)."""
    seeds, username, password = cluster_seeds(s.cluster_url)
    host, port = seeds[0]
    return redis.cluster.RedisCluster.from_url(
        f"redis://{host}:{port}/0", decode_responses=True, username=username, password=password,
        **parser_options(parser, True), **options)


def raw_cluster_client(s: Settings, parser: str) -> redis.cluster.RedisCluster:
    return cluster_client(s, parser)


def open_store(s: Settings, strategy: str, prefix: str, parser: str, cluster: bool = False,
               **options) -> jobstore.JobStore:
    if not cluster:
        return jobstore.open(s.url, strategy, prefix=prefix,
                             client_options=parser_options(parser, False), **options)
    # What jobstore.open(redis+cluster://...) builds, but with the run's parser.
    client = cluster_client(s, parser, socket_connect_timeout=5.0, socket_timeout=10.0)
    return jobstore.JobStore(client, strategy, prefix=prefix, url=s.cluster_url, **options)


def set_phase(client, prefix: str, *phases: str) -> None:
    migration = Migration(client, prefix=prefix, wait=no_wait)
    for phase in phases:
        migration.set_phase(phase)


def drop(client, prefix: str) -> None:
    """UNLINK every key under ``prefix`` (on a cluster: on every primary, key by key, as a
    multi-key command must stay in one slot there)."""
    cluster = isinstance(client, redis.cluster.RedisCluster)
    nodes = [client.get_redis_connection(n) for n in client.get_primaries()] if cluster else [client]
    for node in nodes:
        batch = []
        for key in node.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                _unlink(node, batch, cluster)
                batch = []
        if batch:
            _unlink(node, batch, cluster)


def _unlink(node, keys: list, one_by_one: bool) -> None:
    if not one_by_one:
        node.unlink(*keys)
        return
    pipe = node.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    pipe.execute()


def params_json(i: int, payload: dict) -> str:
    return json.dumps({"i": i, **payload}, separators=(",", ":"), sort_keys=True)


def new_record(ws: str, i: int, payload: dict) -> tuple[str, dict[str, str]]:
    """A job record as a careful engineer builds it: the same fields jobstore writes."""
    job_id = uuid.uuid4().hex
    stamp = repr(time.time())
    return job_id, {"job_id": job_id, "workspace_id": ws, "action": "bench", "status": "pending",
                    "params": params_json(i, payload), "result": "", "error": "",
                    "created_at": stamp, "updated_at": stamp, "_rev": "1"}


def seed_records(client, prefix: str, n: int, s: Settings, queue: bool = False
                 ) -> list[tuple[str, str]]:
    """``n`` legacy-layout records (and queue entries), pipelined; their ``(job_id, ws)``."""
    ids = []
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        ws = s.workspaces[i % len(s.workspaces)]
        job_id, fields = new_record(ws, i, s.payload)
        pipe.hset(f"{prefix}:jobs:{job_id}", mapping=fields)
        if queue:
            pipe.lpush(f"{prefix}:queue", f"{ws}:{job_id}:{fields['created_at']}")
        ids.append((job_id, ws))
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return ids


def seed_store(store, n: int, s: Settings) -> list[tuple[str, str]]:
    ids = []
    for start in range(0, n, 500):
        jobs = store.enqueue_many([(s.workspaces[i % len(s.workspaces)], "bench",
                                    {"i": i, **s.payload}) for i in range(start, min(n, start + 500))])
        ids.extend((job.job_id, job.workspace_id) for job in jobs)
    return ids


def per_second(n: int, fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


def both(s: Settings, jobstore_side: Callable[[], Any], baseline: Callable[[], Any]):
    """Run the two sides back to back, in an order that alternates between repeats."""
    if s.repeat % 2 == 0:
        a = jobstore_side()
        b = baseline()
    else:
        b = baseline()
        a = jobstore_side()
    return a, b


def attempt(fn: Callable[[], Any]) -> Any:
    """The value, or the exception (so one failing variant does not take its group down)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        return exc


def pair(a: Any, b: Any, *notes: str) -> Any:
    for x in (a, b):
        if isinstance(x, BaseException):
            return x
    return (a, b, *notes)


# -- standalone: the hot path ----------------------------------------------------------------


def js_enqueue(s: Settings, parser: str, strategy: str, n: int, phases=(), cluster=False) -> float:
    prefix = s.prefix(f"{'c-' if cluster else ''}{strategy}-enq")
    store = open_store(s, strategy, prefix, parser, cluster=cluster)
    try:
        if phases:
            set_phase(store.client, prefix, *phases)
        ws = s.workspaces
        for i in range(50):  # warm up: connection, eviction check, phase, script cache
            store.enqueue(ws[i % len(ws)], "warm")

        def run():
            for i in range(n):
                store.enqueue(ws[i % len(ws)], "bench", {"i": i, **s.payload})

        return per_second(n, run)
    finally:
        drop(store.client, prefix)
        store.close()


def raw_enqueue_multi(s: Settings, parser: str, n: int) -> float:
    prefix = s.prefix("raw-enq")
    client = raw_client(s, parser)
    queue, ws = f"{prefix}:queue", s.workspaces
    try:
        def one(i):
            w = ws[i % len(ws)]
            job_id, fields = new_record(w, i, s.payload)
            pipe = client.pipeline(transaction=True)
            pipe.hset(f"{prefix}:jobs:{job_id}", mapping=fields)
            pipe.lpush(queue, f"{w}:{job_id}:{fields['created_at']}")
            pipe.execute()

        for i in range(50):
            one(i)

        def run():
            for i in range(n):
                one(i)

        return per_second(n, run)
    finally:
        drop(client, prefix)
        client.close()


def js_get(s: Settings, parser: str, strategy: str, n: int, phases=()) -> float:
    """``n`` gets of jobs enqueued by a legacy store (for dual: only in the source)."""
    prefix = s.prefix(f"{strategy}-get")
    seeder = open_store(s, "legacy", prefix, parser)
    store = None
    try:
        ids = seed_store(seeder, min(n, 5000), s)
        if phases:
            set_phase(seeder.client, prefix, *phases)
        store = open_store(s, strategy, prefix, parser)
        for job_id, ws in ids[:50]:
            assert store.get(job_id, workspace_id=ws) is not None, "seeded job not found"

        def run():
            for i in range(n):
                job_id, ws = ids[i % len(ids)]
                store.get(job_id, workspace_id=ws)

        return per_second(n, run)
    finally:
        drop(seeder.client, prefix)
        seeder.close()
        if store is not None:
            store.close()


def raw_get(s: Settings, parser: str, n: int) -> float:
    """HGETALL, the workspace check and the decoding a caller needs (params, created_at)."""
    prefix = s.prefix("raw-get")
    client = raw_client(s, parser)
    try:
        ids = seed_records(client, prefix, min(n, 5000), s)

        def get(job_id, ws):
            record = client.hgetall(f"{prefix}:jobs:{job_id}")
            if record.get("workspace_id") != ws:
                return None
            record["params"] = json.loads(record["params"])
            record["created_at"] = float(record["created_at"])
            return record

        for job_id, ws in ids[:50]:
            assert get(job_id, ws) is not None

        def run():
            for i in range(n):
                get(*ids[i % len(ids)])

        return per_second(n, run)
    finally:
        drop(client, prefix)
        client.close()


def js_enqueue_many(s: Settings, parser: str, n: int) -> float:
    prefix = s.prefix("legacy-many")
    store = open_store(s, "legacy", prefix, parser)
    ws = s.workspaces
    try:
        store.enqueue_many([(ws[i % len(ws)], "warm") for i in range(100)])

        def run():
            for start in range(0, n, 100):
                store.enqueue_many([(ws[i % len(ws)], "bench", {"i": i, **s.payload})
                                    for i in range(start, min(n, start + 100))])

        return per_second(n, run)
    finally:
        drop(store.client, prefix)
        store.close()


def raw_enqueue_pipelined(s: Settings, parser: str, n: int) -> float:
    prefix = s.prefix("raw-many")
    client = raw_client(s, parser)
    queue, ws = f"{prefix}:queue", s.workspaces
    try:
        def batch(start, stop):
            pipe = client.pipeline(transaction=False)
            for i in range(start, stop):
                w = ws[i % len(ws)]
                job_id, fields = new_record(w, i, s.payload)
                pipe.hset(f"{prefix}:jobs:{job_id}", mapping=fields)
                pipe.lpush(queue, f"{w}:{job_id}:{fields['created_at']}")
            pipe.execute()

        batch(0, 100)

        def run():
            for start in range(0, n, 100):
                batch(start, min(n, start + 100))

        return per_second(n, run)
    finally:
        drop(client, prefix)
        client.close()


def rq_enqueue(s: Settings, parser: str, n: int) -> float:
    queue_name = s.prefix("rq")
    client = raw_client(s, parser, decode=False)
    queue = rq.Queue(queue_name, connection=client)
    ids = []
    try:
        for i in range(50):
            ids.append(queue.enqueue("benchmarks.bench.noop", i).id)

        def run():
            for i in range(n):
                ids.append(queue.enqueue("benchmarks.bench.noop", {"i": i, **s.payload}).id)

        return per_second(n, run)
    finally:
        rq_cleanup(client, queue_name, ids)
        client.close()


def rq_cleanup(client, queue_name: str, ids: list[str]) -> None:
    keys = [f"rq:job:{i}" for i in ids] + [f"rq:queue:{queue_name}"]
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start:start + 1000])
    client.srem("rq:queues", f"rq:queue:{queue_name}")


def noop(*args, **kwargs) -> None:
    """The function the RQ rows enqueue (never run)."""


def group_hot_path(s: Settings, parser: str, wanted: set[str]) -> dict[str, Any]:
    n, out = s.jobs, {}
    if "enqueue" in wanted:
        out["enqueue"] = pair(*both(s, lambda: attempt(lambda: js_enqueue(s, parser, "legacy", n)),
                                    lambda: attempt(lambda: raw_enqueue_multi(s, parser, n))))
    if "get" in wanted:
        out["get"] = pair(*both(s, lambda: attempt(lambda: js_get(s, parser, "legacy", n)),
                                lambda: attempt(lambda: raw_get(s, parser, n))))
    if "dual-enqueue" in wanted:
        out["dual-enqueue"] = pair(*both(
            s, lambda: attempt(lambda: js_enqueue(s, parser, "dual", n, ("dual-write",))),
            lambda: attempt(lambda: js_enqueue(s, parser, "legacy", n))))
    if "dual-get" in wanted:
        out["dual-get"] = pair(*both(
            s, lambda: attempt(lambda: js_get(s, parser, "dual", n, ("dual-write", "read-target"))),
            lambda: attempt(lambda: js_get(s, parser, "legacy", n))))
    if "rq" in wanted:
        if rq is None:
            out["rq"] = Skip("rq is not installed (pip install rq to add this row)")
        else:
            out["rq"] = pair(*both(s, lambda: attempt(lambda: js_enqueue(s, parser, "legacy", n)),
                                   lambda: attempt(lambda: rq_enqueue(s, parser, n))),
                             f"rq {rq.__version__}")
    if "enqueue-many" in wanted:
        out["enqueue-many"] = pair(*both(
            s, lambda: attempt(lambda: js_enqueue_many(s, parser, n)),
            lambda: attempt(lambda: raw_enqueue_pipelined(s, parser, n))))
    return out


def metrics_pairs(s: Settings, parser: str, n: int, metered: bool) -> float:
    from prometheus_client import CollectorRegistry

    from jobstore.metrics import PrometheusEvents

    prefix = s.prefix("metrics" if metered else "plain")
    events = PrometheusEvents("ai", registry=CollectorRegistry()) if metered else None
    store = open_store(s, "legacy", prefix, parser, events=events)
    ws = s.workspaces
    try:
        for i in range(50):
            job = store.enqueue(ws[i % len(ws)], "warm")
            store.get(job.job_id, workspace_id=job.workspace_id)

        def run():
            for i in range(n):
                w = ws[i % len(ws)]
                job = store.enqueue(w, "bench", {"i": i, **s.payload})
                store.get(job.job_id, workspace_id=w)

        return per_second(n, run)
    finally:
        drop(store.client, prefix)
        store.close()


def group_metrics(s: Settings, parser: str, wanted: set[str]) -> dict[str, Any]:
    n = max(1, s.jobs // 2)
    return {"metrics": pair(*both(s, lambda: attempt(lambda: metrics_pairs(s, parser, n, True)),
                                  lambda: attempt(lambda: metrics_pairs(s, parser, n, False))))}


# -- memory ----------------------------------------------------------------------------------


def memory_of(client, prefix: str | None = None, keys: list[str] | None = None) -> tuple[int, int]:
    """``(bytes, keys)``: MEMORY USAGE (every element counted: SAMPLES 0) summed over every key
    under ``prefix`` (or over ``keys``), on every primary of a cluster."""
    if isinstance(client, redis.cluster.RedisCluster):
        nodes = [client.get_redis_connection(n) for n in client.get_primaries()]
    else:
        nodes = [client]
    total = count = 0
    for node in nodes:
        found = list(node.scan_iter(match=f"{prefix}:*", count=1000)) if prefix else list(keys or [])
        for start in range(0, len(found), 1000):
            pipe = node.pipeline(transaction=False)
            for key in found[start:start + 1000]:
                pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
            total += sum(int(x or 0) for x in pipe.execute())
        count += len(found)
    return total, count


def store_memory(s: Settings, strategy: str, n: int, cluster: bool = False) -> tuple[float, float]:
    """``(bytes per job, keys per job)`` after ``n`` enqueues (batches of 100)."""
    store = open_store(s, strategy, "ai", "python", cluster=cluster)
    prefix = short_prefix(store.client)
    store.close()
    store = open_store(s, strategy, prefix, "python", cluster=cluster)
    try:
        if strategy == "dual":
            set_phase(store.client, prefix, "dual-write")
        ws = s.workspaces
        for start in range(0, n, 100):
            store.enqueue_many([(ws[i % len(ws)], "bench", {"i": i, **s.payload})
                                for i in range(start, min(n, start + 100))])
        total, keys = memory_of(store.client, prefix)
        return total / n, keys / n
    finally:
        drop(store.client, prefix)
        store.close()


def raw_memory(s: Settings, n: int, cluster: bool = False) -> tuple[float, float]:
    """The same records, HSET, plus one queue entry each (LPUSH; on a cluster RPUSH)."""
    client = raw_cluster_client(s, "python") if cluster else raw_client(s, "python")
    prefix = short_prefix(client)
    ws = s.workspaces
    try:
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + 1000)):
                w = ws[i % len(ws)]
                job_id, fields = new_record(w, i, s.payload)
                pipe.hset(f"{prefix}:jobs:{job_id}", mapping=fields)
                entry = f"{w}:{job_id}:{fields['created_at']}"
                (pipe.rpush if cluster else pipe.lpush)(f"{prefix}:queue", entry)
            pipe.execute()
        total, keys = memory_of(client, prefix)
        return total / n, keys / n
    finally:
        drop(client, prefix)
        client.close()


def rq_memory(s: Settings, n: int) -> float:
    queue_name = s.prefix("rq-mem")
    client = raw_client(s, "python", decode=False)
    queue = rq.Queue(queue_name, connection=client)
    ids = []
    try:
        for i in range(n):
            ids.append(queue.enqueue("benchmarks.bench.noop", {"i": i, **s.payload}).id)
        keys = [f"rq:job:{i}" for i in ids] + [f"rq:queue:{queue_name}"]
        total, _ = memory_of(client, keys=keys)
        return total / n
    finally:
        rq_cleanup(client, queue_name, ids)
        client.close()


def group_memory(s: Settings, parser: str, wanted: set[str]) -> dict[str, Any]:
    n, out = s.memory_jobs, {}
    raw = attempt(lambda: raw_memory(s, n))
    raw_bytes = raw if isinstance(raw, BaseException) else raw[0]
    raw_note = "" if isinstance(raw, BaseException) else f"raw: {raw[1]:.2f} keys/job"
    legacy = None
    if wanted & {"memory-legacy", "memory-legacy-rq"}:
        legacy = attempt(lambda: store_memory(s, "legacy", n))
        if isinstance(legacy, BaseException):
            out["memory-legacy"] = legacy
        else:
            out["memory-legacy"] = pair(legacy[0], raw_bytes,
                                        f"legacy: {legacy[1]:.2f} keys/job", raw_note)
    if "memory-legacy-rq" in wanted:
        if rq is None:
            out["memory-legacy-rq"] = Skip("rq is not installed (pip install rq to add this row)")
        elif isinstance(legacy, BaseException):
            out["memory-legacy-rq"] = legacy
        else:
            out["memory-legacy-rq"] = pair(legacy[0], attempt(lambda: rq_memory(s, n)))
    if "memory-dual" in wanted:
        dual = attempt(lambda: store_memory(s, "dual", n))
        if isinstance(dual, BaseException):
            out["memory-dual"] = dual
        else:
            out["memory-dual"] = pair(dual[0], raw_bytes, f"dual: {dual[1]:.2f} keys/job",
                                      raw_note)
    return out


# -- migration passes ------------------------------------------------------------------------

# Hand-written passes, one script call per SCAN reply (COUNT 1000). Standalone only: the target
# key is built inside the script from the record, as a careful engineer would on one server.
RAW_COPY = """
-- KEYS: source records   ARGV[1]: prefix   returns how many were copied
local copied = 0
for i = 1, #KEYS do
  local rec = redis.call('HGETALL', KEYS[i])
  local ws, id
  for j = 1, #rec, 2 do
    if rec[j] == 'workspace_id' then ws = rec[j + 1] elseif rec[j] == 'job_id' then id = rec[j + 1] end
  end
  if ws and id then
    local target = ARGV[1] .. ':job:' .. ws .. ':' .. id
    if redis.call('EXISTS', target) == 0 then
      redis.call('HSET', target, unpack(rec))
      copied = copied + 1
    end
  end
end
return copied
"""

# Compare each source record with its target copy, field by field; with ARGV[2] == '1' UNLINK
# the source records whose copy is the same (cleanup).
RAW_COMPARE = """
-- KEYS: source records   ARGV[1]: prefix   ARGV[2]: '1' to unlink the same ones
-- returns {same, differing or missing}
local same, differ = 0, 0
for i = 1, #KEYS do
  local rec = redis.call('HGETALL', KEYS[i])
  local fields = {}
  for j = 1, #rec, 2 do fields[rec[j]] = rec[j + 1] end
  local ws, id = fields['workspace_id'], fields['job_id']
  local equal = false
  if ws and id then
    local copy = redis.call('HGETALL', ARGV[1] .. ':job:' .. ws .. ':' .. id)
    equal = #copy == #rec
    if equal then
      for j = 1, #copy, 2 do
        if fields[copy[j]] ~= copy[j + 1] then equal = false; break end
      end
    end
  end
  if equal then
    same = same + 1
    if ARGV[2] == '1' then redis.call('UNLINK', KEYS[i]) end
  else
    differ = differ + 1
  end
end
return {same, differ}
"""

# The other direction of a verify: target records without their source record (orphans).
RAW_ORPHANS = """
-- KEYS: target records   ARGV[1]: prefix   returns how many have no source record
local orphans = 0
for i = 1, #KEYS do
  local ids = redis.call('HMGET', KEYS[i], 'job_id', 'workspace_id')
  if not ids[1] or redis.call('HGET', ARGV[1] .. ':jobs:' .. ids[1], 'workspace_id') ~= ids[2] then
    orphans = orphans + 1
  end
end
return orphans
"""


def raw_scan_calls(client, pattern: str, script, prefix: str, *args) -> tuple[int, list]:
    """SCAN ``pattern`` (COUNT 1000), one script call per reply; ``(keys seen, replies)``."""
    cursor, seen, replies = 0, 0, []
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=1000)
        if keys:
            seen += len(keys)
            replies.append(script(keys=keys, args=[prefix, *args]))
        if int(cursor) == 0:
            return seen, replies


def raw_passes(s: Settings, parser: str, n: int) -> dict[str, Any]:
    prefix = s.prefix("pass-raw")
    client = raw_client(s, parser)
    copy, compare, orphans = (client.register_script(x) for x in (RAW_COPY, RAW_COMPARE, RAW_ORPHANS))
    out: dict[str, Any] = {}
    try:
        seed_records(client, prefix, n, s)
        for script in (copy, compare, orphans):  # load them, as a deploy would
            script(keys=[f"{prefix}:none"], args=[prefix, "0"])
        started = time.perf_counter()
        _, replies = raw_scan_calls(client, f"{prefix}:jobs:*", copy, prefix)
        out["backfill"] = n / (time.perf_counter() - started)
        copied = sum(replies)
        if copied != n:
            out["backfill"] = RuntimeError(f"raw copy copied {copied} of {n}")
            return out
        started = time.perf_counter()
        seen_s, replies = raw_scan_calls(client, f"{prefix}:jobs:*", compare, prefix, "0")
        seen_t, lost = raw_scan_calls(client, f"{prefix}:job:*", orphans, prefix)
        out["verify"] = (seen_s + seen_t) / (time.perf_counter() - started)
        if sum(r[0] for r in replies) != n or sum(lost):
            out["verify"] = RuntimeError(f"raw verify not clean: {replies[:3]}, orphans {sum(lost)}")
        started = time.perf_counter()
        _, replies = raw_scan_calls(client, f"{prefix}:jobs:*", compare, prefix, "1")
        out["cleanup"] = n / (time.perf_counter() - started)
        if sum(r[0] for r in replies) != n:
            out["cleanup"] = RuntimeError(f"raw cleanup removed {sum(r[0] for r in replies)} of {n}")
        return out
    finally:
        drop(client, prefix)
        client.close()


def jobstore_passes(s: Settings, parser: str, n: int) -> dict[str, Any]:
    prefix = s.prefix("pass-js")
    seeder = raw_client(s, parser)
    client = connect(s.url, parser_options(parser, False))
    clock = FakeClock(tick=0)
    migration = Migration(client, prefix=prefix, clock=clock, wait=clock.wait)
    out: dict[str, Any] = {}
    try:
        seed_records(seeder, prefix, n, s)
        migration.set_phase("dual-write")
        started = time.perf_counter()
        report = migration.backfill(batch=1000, keys_per_call=s.keys_per_call)
        out["backfill"] = n / (time.perf_counter() - started)
        if report.counts.get("copied") != n:
            out["backfill"] = RuntimeError(f"backfill copied {report.counts} of {n}")
            return out
        started = time.perf_counter()
        report = migration.verify(batch=1000, keys_per_call=s.keys_per_call)
        seconds = time.perf_counter() - started
        out["verify"] = (report.checked_source + report.checked_target) / seconds
        if not report.clean:
            out["verify"] = RuntimeError(f"verify not clean: {report.as_dict()}")
            return out
        migration.set_phase("read-target")
        migration.set_phase("target-only")
        started = time.perf_counter()
        report = migration.cleanup(batch=1000, keys_per_call=s.keys_per_call)
        out["cleanup"] = n / (time.perf_counter() - started)
        if report.counts.get("deleted") != n:
            out["cleanup"] = RuntimeError(f"cleanup deleted {report.counts} of {n}")
        return out
    finally:
        drop(seeder, prefix)
        seeder.close()
        client.close()


def group_passes(s: Settings, parser: str, wanted: set[str]) -> dict[str, Any]:
    n = s.pass_jobs
    js, raw = both(s, lambda: attempt(lambda: jobstore_passes(s, parser, n)),
                   lambda: attempt(lambda: raw_passes(s, parser, n)))
    out = {}
    for key in ("backfill", "verify", "cleanup"):
        a = js if isinstance(js, BaseException) else js.get(key, RuntimeError("an earlier step failed"))
        b = raw if isinstance(raw, BaseException) else raw.get(key, RuntimeError("raw: an earlier step failed"))
        out[key] = pair(a, b)
    return out


# -- get latency while a backfill runs -------------------------------------------------------


class Getter(threading.Thread):
    """``get`` in a closed loop, recording each call's latency, until stopped."""

    def __init__(self, store, ids):
        super().__init__(daemon=True)
        self.store, self.ids = store, ids
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self):
        i = 0
        try:
            while not self._stop_event.is_set():
                job_id, ws = self.ids[i % len(self.ids)]
                started = time.perf_counter()
                self.store.get(job_id, workspace_id=ws)
                self.latencies.append(time.perf_counter() - started)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def idle(self, seconds: float, at_least: int = 1000, at_most: float = 10.0) -> None:
        """Let it run ``seconds``, and on until it has ``at_least`` samples (``at_most`` s)."""
        started = time.monotonic()
        time.sleep(seconds)
        while len(self.latencies) < at_least and time.monotonic() - started < at_most:
            time.sleep(0.05)

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join()
        if self.error is not None:
            raise self.error
        return self.latencies


def _get_loop(url: str, prefix: str, parser: str, ids: list, ready, stop, conn) -> None:
    """The body of a getter process (``--getter process``): as Getter, in a process of its own."""
    store = jobstore.open(url, "dual", prefix=prefix, client_options=parser_options(parser, False))
    try:
        for job_id, ws in ids[:50]:
            store.get(job_id, workspace_id=ws)
        ready.set()
        latencies, i = [], 0
        while i % 16 or not stop.is_set():
            job_id, ws = ids[i % len(ids)]
            started = time.perf_counter()
            store.get(job_id, workspace_id=ws)
            latencies.append(time.perf_counter() - started)
            i += 1
        conn.send(latencies)
    except BaseException as exc:  # noqa: BLE001 - sent to the parent
        ready.set()
        conn.send(RuntimeError(f"getter process: {type(exc).__name__}: {exc}"))
    finally:
        store.close()


class GetterProcess:
    """Getter in another process: its latencies carry no wait for this process's GIL."""

    def __init__(self, s: Settings, parser: str, prefix: str, ids):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.ready, self.stop_event = context.Event(), context.Event()
        self.receive, send = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_get_loop, args=(s.url, prefix, parser, ids, self.ready, self.stop_event, send),
            daemon=True)

    def start(self) -> None:
        self.process.start()
        if not self.ready.wait(60):
            self.process.kill()
            raise RuntimeError("the getter process did not start within 60 s")

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def stop(self) -> list[float]:
        self.stop_event.set()
        try:
            if not self.receive.poll(30):
                raise RuntimeError("the getter process sent no latencies")
            latencies = self.receive.recv()
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
        if isinstance(latencies, BaseException):
            raise latencies
        return latencies


def p99(latencies: list[float]) -> float:
    if len(latencies) < 100:
        raise RuntimeError(f"only {len(latencies)} gets measured: too few for a p99")
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


def latency_setup(s: Settings, parser: str, n: int):
    """A prefix with ``n`` legacy records in phase dual-write, a dual store following it (the
    getter's), and the migration that backfills it."""
    prefix = s.prefix("p99")
    seeder = raw_client(s, parser)
    ids = seed_records(seeder, prefix, n, s, queue=True)
    seeder.close()
    clock = FakeClock(tick=0)
    migration = Migration(connect(s.url, parser_options(parser, False)), prefix=prefix,
                          clock=clock, wait=clock.wait)
    migration.set_phase("dual-write")
    store = open_store(s, "dual", prefix, parser)
    for job_id, ws in ids[:50]:
        assert store.get(job_id, workspace_id=ws) is not None

    def getter():
        if s.getter == "process":
            return GetterProcess(s, parser, prefix, ids)
        return Getter(store, ids)

    return prefix, store, migration, getter


def group_latency(s: Settings, parser: str, wanted: set[str]) -> dict[str, Any]:
    n, out = s.latency_jobs, {}
    prefix, store, migration, make_getter = latency_setup(s, parser, n)
    try:
        getter = make_getter()
        getter.start()
        getter.idle(s.idle_seconds)
        idle = p99(getter.stop())
        if "p99-full" in wanted:
            getter = make_getter()
            getter.start()
            try:
                report = migration.backfill(batch=1000, keys_per_call=s.keys_per_call)
            finally:
                full = getter.stop()
            out["p99-full"] = pair(p99(full), idle, f"full speed: {n / report.seconds:,.0f} keys/s")
    finally:
        drop(store.client, prefix)
        store.close()
        migration.client.close()
    if "p99-rate" in wanted:
        prefix, store, migration, make_getter = latency_setup(s, parser, n)
        try:
            getter = make_getter()
            getter.start()
            try:
                report = migration.backfill(batch=1000, rate=s.rate, keys_per_call=s.keys_per_call)
            finally:
                during = getter.stop()
            out["p99-rate"] = pair(p99(during), idle,
                                   f"--rate {s.rate:,.0f}: {n / report.seconds:,.0f} keys/s")
        finally:
            drop(store.client, prefix)
            store.close()
            migration.client.close()
    return out


# -- Redis Cluster ---------------------------------------------------------------------------


def cluster_js_enqueue(s: Settings, parser: str, strategy: str, n: int) -> float:
    return js_enqueue(s, parser, strategy, n, ("dual-write",) if strategy == "dual" else (),
                      cluster=True)


def cluster_raw_enqueue(s: Settings, parser: str, n: int) -> float:
    """HSET the record, then RPUSH the queue entry: two round trips, two slots."""
    prefix = s.prefix("c-raw-enq")
    client = raw_cluster_client(s, parser)
    queue, ws = f"{prefix}:queue", s.workspaces
    try:
        def one(i):
            w = ws[i % len(ws)]
            job_id, fields = new_record(w, i, s.payload)
            client.hset(f"{prefix}:jobs:{job_id}", mapping=fields)
            client.rpush(queue, f"{w}:{job_id}:{fields['created_at']}")

        for i in range(20):
            one(i)

        def run():
            for i in range(n):
                one(i)

        return per_second(n, run)
    finally:
        drop(client, prefix)
        client.close()


def group_cluster_enqueue(s: Settings, parser: str, wanted: set[str]) -> dict[str, Any]:
    n, out = s.cluster_jobs, {}
    strategies = [x for x in ("legacy", "dual") if f"cluster-enqueue-{x}" in wanted]
    values: dict[str, Any] = {}
    sides = [("raw", lambda: attempt(lambda: cluster_raw_enqueue(s, parser, n)))]
    sides += [(x, (lambda x=x: attempt(lambda: cluster_js_enqueue(s, parser, x, n))))
              for x in strategies]
    if s.repeat % 2:
        sides.reverse()
    for name, fn in sides:
        values[name] = fn()
    for x in strategies:
        out[f"cluster-enqueue-{x}"] = pair(values[x], values["raw"])
    return out


def group_cluster_memory(s: Settings, parser: str, wanted: set[str]) -> dict[str, Any]:
    n, out = s.cluster_memory_jobs, {}
    raw = attempt(lambda: raw_memory(s, n, cluster=True))
    for strategy in ("legacy", "dual"):
        if not wanted & {f"cluster-keys-{strategy}", f"cluster-memory-{strategy}"}:
            continue
        mine = attempt(lambda strategy=strategy: store_memory(s, strategy, n, cluster=True))
        for kind, index in (("memory", 0), ("keys", 1)):
            if isinstance(mine, BaseException) or isinstance(raw, BaseException):
                out[f"cluster-{kind}-{strategy}"] = mine if isinstance(mine, BaseException) else raw
            else:
                out[f"cluster-{kind}-{strategy}"] = pair(mine[index], raw[index])
    return out


# -- the run ---------------------------------------------------------------------------------

GROUPS: list[tuple[Callable, tuple[str, ...]]] = [
    (group_hot_path, ("enqueue", "get", "dual-enqueue", "dual-get", "rq", "enqueue-many")),
    (group_memory, ("memory-legacy", "memory-legacy-rq", "memory-dual")),
    (group_passes, ("backfill", "verify", "cleanup")),
    (group_latency, ("p99-full", "p99-rate")),
    (group_metrics, ("metrics",)),
    (group_cluster_enqueue, ("cluster-enqueue-legacy", "cluster-enqueue-dual")),
    (group_cluster_memory, ("cluster-keys-legacy", "cluster-keys-dual", "cluster-memory-legacy",
                            "cluster-memory-dual")),
]


def run(s: Settings, parsers: list[str], selected: list[str], cluster: bool,
        log: Callable[[str], None]) -> dict[tuple[str, str], Result]:
    results: dict[tuple[str, str], Result] = {}
    for key in selected:
        row = ROW[key]
        for parser in (["-"] if row.parser_free else parsers):
            results[(key, parser)] = Result(row, parser)
    for repeat in range(s.repeats):
        s.repeat = repeat
        for group, keys in GROUPS:
            wanted = {k for k in keys if k in selected}
            if not wanted:
                continue
            if ROW[keys[0]].cluster and not cluster:
                continue
            free = ROW[keys[0]].parser_free
            if free and repeat >= s.memory_repeats:
                continue  # MEMORY USAGE of the same data: the same bytes every repeat
            for parser in (["-"] if free else parsers):
                label = f"repeat {repeat + 1}/{s.repeats} {group.__name__[6:]} [{parser}]"
                log(label)
                started = time.perf_counter()
                try:
                    values = group(s, "python" if parser == "-" else parser, wanted)
                except Exception as exc:  # noqa: BLE001 - reported in its rows
                    if os.environ.get("BENCH_TRACEBACK"):
                        traceback.print_exc()
                    values = {k: exc for k in wanted}
                for key in wanted:
                    results[(key, parser)].add(values.get(key, RuntimeError("not measured")))
                log(f"{label}: {time.perf_counter() - started:.1f}s")
    return results


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "B/job":
        return f"{value:,.0f} B"
    if unit == "keys/job":
        return f"{value:.2f}"
    if unit == "keys/s":
        return f"{value / 1000:,.1f}k/s"
    return f"{value:,.0f}/s"


def table(results: dict[tuple[str, str], Result], parsers_note: str) -> str:
    head = ("row", "parser", "jobstore", "baseline", "ratio min / median / max", "target", "met")
    lines: list[list[str]] = []
    notes: list[str] = []
    sections = [("standalone", [r for r in results.values() if not r.row.cluster]),
                ("Redis Cluster, 3 masters", [r for r in results.values() if r.row.cluster])]
    out = []
    for title, rows in sections:
        if not rows:
            continue
        lines = []
        for r in rows:
            name = f"{r.row.name} vs {r.row.baseline}"
            if r.skipped:
                lines.append([name, r.parser, "skipped", "", r.skipped, r.row.target, ""])
                continue
            if not r.js:
                lines.append([name, r.parser, "ERROR", "", "; ".join(r.errors) or "no sample",
                              r.row.target, ""])
                continue
            ratios = r.ratios
            ratio = (f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}×"
                     if ratios else "-")
            met = r.met()
            lines.append([name, r.parser, fmt(statistics.median(r.js), r.row.unit),
                          fmt(statistics.median(r.base), r.row.unit), ratio, r.row.target, met])
            tag = f"{r.row.name} [{r.parser}]"
            if r.errors:
                notes.append(f"{tag}: {len(r.errors)} failed repeat(s): {'; '.join(r.errors)}")
            if r.notes:
                notes.append(f"{tag}: {'; '.join(r.notes[:6])}")
        widths = [max(len(x) for x in col) for col in zip(head, *lines)]
        out.append(f"\n{title}\n")
        out.append("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for line in lines:
            out.append("| " + " | ".join(x.ljust(w) for x, w in zip(line, widths)) + " |")
    out.append("")
    out.append(parsers_note)
    out.append("met: yes = every repeat meets the target, median = the median does, no = it does not "
               "(targets on the ratio unless the target names another unit)")
    out.extend(f"- {n}" for n in notes)
    return "\n".join(out)


def as_json(results, s: Settings, meta: dict) -> dict:
    rows = []
    for r in results.values():
        ratios = r.ratios
        rows.append({
            "row": r.row.key, "name": r.row.name, "baseline": r.row.baseline, "parser": r.parser,
            "unit": r.row.unit, "cluster": r.row.cluster, "jobstore": r.js, "raw": r.base,
            "ratios": ratios,
            "ratio": ({"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}
                      if ratios else None),
            "target": r.row.target, "met": r.met(), "errors": r.errors, "notes": r.notes,
            "skipped": r.skipped,
        })
    return {**meta, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a standalone Redis to use (default: a private redis-server)")
    parser.add_argument("--cluster", action="store_true",
                        help="also run the Redis Cluster rows (default: a private 3-master cluster)")
    parser.add_argument("--cluster-url", help="redis+cluster://h:p,... to use instead (implies --cluster)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats: a ~30 s smoke run")
    parser.add_argument("--repeats", type=int, help="repeats of every row (default 5; --quick 3)")
    parser.add_argument("--jobs", type=int, help="operations per variant of the hot-path rows (2000)")
    parser.add_argument("--memory-jobs", type=int, help="jobs enqueued for the memory rows (20000)")
    parser.add_argument("--pass-jobs", type=int, help="records per backfill/verify/cleanup (20000)")
    parser.add_argument("--latency-jobs", type=int, help="records backfilled under the p99 rows (10000)")
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="backfill rate of the p99 row under --rate, keys/s (5000)")
    parser.add_argument("--keys-per-call", type=int, default=None,
                        help="records per script call of the passes (backfill, verify, cleanup "
                             "and the p99 rows; default: jobstore's, 50)")
    parser.add_argument("--getter", choices=("thread", "process"), default="thread",
                        help="where the p99 rows' gets run: a thread of this process, beside the "
                             "backfill (default), or a process of their own (no GIL shared)")
    parser.add_argument("--cluster-jobs", type=int, help="enqueues per variant on the cluster (1000)")
    parser.add_argument("--cluster-memory-jobs", type=int,
                        help="jobs for the cluster's keys and memory rows (5000)")
    parser.add_argument("--memory-repeats", type=int, default=1,
                        help="repeats of the memory and keys rows, which measure the same bytes "
                             "every time (1)")
    parser.add_argument("--workspaces", type=int, default=20, help="distinct workspaces (20)")
    parser.add_argument("--payload-bytes", type=int, default=0,
                        help="extra bytes of params per job (0: params are {\"i\": n})")
    parser.add_argument("--hiredis", action=argparse.BooleanOptionalAction, default=None,
                        help="only with (--hiredis) or only without (--no-hiredis) the hiredis parser; "
                             "default: both when hiredis is installed")
    parser.add_argument("--rows", help="comma-separated row keys or parts of them, e.g. enqueue,memory "
                                       f"(all: {', '.join(ROW)})")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write every sample as JSON to FILE (or '-': stdout, the table then "
                             "goes to stderr)")
    args = parser.parse_args(argv)

    quick = args.quick
    jobs = args.jobs or (300 if quick else 2000)
    memory_jobs = args.memory_jobs or (2000 if quick else 20000)
    s = Settings(
        url=args.url or "",
        cluster_url=args.cluster_url,
        repeats=args.repeats or (3 if quick else 5),
        jobs=jobs,
        memory_jobs=memory_jobs,
        pass_jobs=args.pass_jobs or (3000 if quick else 20000),
        latency_jobs=args.latency_jobs or (5000 if quick else 10000),
        cluster_jobs=args.cluster_jobs or (150 if quick else 1000),
        cluster_memory_jobs=args.cluster_memory_jobs or (1000 if quick else 5000),
        rate=args.rate,
        idle_seconds=0.4 if quick else 1.5,
        memory_repeats=max(1, args.memory_repeats),
        workspaces=[f"ws{i}" for i in range(max(1, args.workspaces))],
        payload={"blob": "x" * args.payload_bytes} if args.payload_bytes > 0 else {},
        getter=args.getter,
        keys_per_call=args.keys_per_call,
    )
    cluster = args.cluster or bool(args.cluster_url)
    selected = [k for k in ROW if (cluster or not ROW[k].cluster)]
    if args.rows:
        parts = [p.strip() for p in args.rows.split(",") if p.strip()]
        # A part that names a row selects that row; any other part, every row containing it.
        selected = [k for k in selected
                    if any(p == k if p in ROW else p in k for p in parts)]
        if not selected:
            parser.error(f"--rows {args.rows!r} selects no row; rows: {', '.join(ROW)}")

    if args.hiredis is True:
        parsers = ["hiredis"]
    elif args.hiredis is False:
        parsers = ["python"]
    else:
        parsers = ["hiredis", "python"] if HIREDIS else ["python"]
    if "hiredis" in parsers and not HIREDIS:
        parser.error("--hiredis: hiredis is not installed (pip install hiredis, or 'jobstore[hiredis]')")
    parsers_note = ("parsers: " + ", ".join(parsers)
                    + ("" if HIREDIS else " (hiredis is not installed: no hiredis rows; "
                                          "pip install 'jobstore[hiredis]' to add them)")
                    + "; '-': the same whatever the parser (measured once)")

    to_json = args.json == "-"
    out = sys.stderr if to_json else sys.stdout

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    servers = []
    try:
        if not s.url:
            if RedisServer is None:
                parser.error("tests/support/servers.py is not importable: give --url")
            servers.append(RedisServer().start())
            s.url = servers[-1].url
        if cluster and not s.cluster_url:
            if RedisCluster is None:
                parser.error("tests/support/servers.py is not importable: give --cluster-url")
            log("starting a 3-master Redis Cluster")
            servers.append(RedisCluster().start())
            s.cluster_url = servers[-1].url
        probe = redis.Redis.from_url(s.url)
        info = probe.info("server")
        probe.close()
        started = time.perf_counter()
        load_before = os.getloadavg()
        results = run(s, parsers, selected, cluster, log)
        seconds = time.perf_counter() - started
        load_after = os.getloadavg()
    finally:
        for server in reversed(servers):
            server.stop()

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "redis_server": info.get("redis_version"), "redis_py": redis.__version__,
        "hiredis_installed": HIREDIS, "parsers": parsers, "python": platform.python_version(),
        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
        "seconds": round(seconds, 1), "quick": quick,
        "sizes": {"repeats": s.repeats, "jobs": s.jobs, "memory_jobs": s.memory_jobs,
                  "pass_jobs": s.pass_jobs, "latency_jobs": s.latency_jobs, "rate": s.rate,
                  "cluster_jobs": s.cluster_jobs, "cluster_memory_jobs": s.cluster_memory_jobs,
                  "memory_repeats": s.memory_repeats,
                  "workspaces": len(s.workspaces), "payload_bytes": args.payload_bytes,
                  "getter": s.getter, "keys_per_call": s.keys_per_call or "default (50)"},
    }
    print(f"jobstore benchmark{' (--quick)' if quick else ''}: redis-server {meta['redis_server']}, "
          f"redis-py {meta['redis_py']}, Python {meta['python']}, {meta['cpus']} CPUs, "
          f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after, "
          f"{seconds:.0f} s", file=out)
    print("sizes: " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in meta["sizes"].items()), file=out)
    print(table(results, parsers_note), file=out)
    if args.json:
        data = json.dumps(as_json(results, s, meta), indent=2)
        if to_json:
            print(data)
        else:
            Path(args.json).write_text(data + "\n")
    return 0 if any(r.js for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
