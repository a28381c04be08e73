"""Where the time of one hot-path operation goes, jobstore beside its raw baseline.

    python benchmarks/breakdown.py [--url redis://...] [--jobs 3000] [--repeats 5] [--no-hiredis]

The variants are bench.py's own (the same code as its enqueue, get, dual get, enqueue_many and
backfill rows; the backfill on 5 × --jobs records), and a worker's loop at concurrency 1:
``finish`` beside ``dequeue`` + ``update_status`` (jobstore both; per job processed). Around each run it reads the Redis
server's main-thread CPU time (``INFO cpu``) and this process's CPU time, so that every
microsecond of an operation lands in one of three parts:

- **Redis CPU**: the server's time for the operation (command parsing, scripts, replies);
- **client CPU**: this process's, jobstore or the hand-written code plus redis-py (and the
  system calls that send and receive);
- **waiting**: the rest of the wall time, neither process running for this operation (the
  loopback and the scheduler's wake-ups).

The best repeat of each variant (by wall time) is shown. Without --url it starts a private
redis-server on a free port. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402

import bench  # noqa: E402

# (label, jobstore side, baseline side): each side is called as f(settings, parser, n)
VARIANTS: list[tuple[str, Callable[..., float], Callable[..., float]]] = [
    ("legacy enqueue vs MULTI HSET+LPUSH",
     lambda s, p, n: bench.js_enqueue(s, p, "legacy", n),
     lambda s, p, n: bench.raw_enqueue_multi(s, p, n)),
    ("legacy get vs HGETALL",
     lambda s, p, n: bench.js_get(s, p, "legacy", n),
     lambda s, p, n: bench.raw_get(s, p, n)),
    ("dual get (source only) vs legacy get",
     lambda s, p, n: bench.js_get(s, p, "dual", n, phases=("dual-write", "read-target")),
     lambda s, p, n: bench.js_get(s, p, "legacy", n)),
    ("enqueue_many per job vs pipelined",
     lambda s, p, n: bench.js_enqueue_many(s, p, n),
     lambda s, p, n: bench.raw_enqueue_pipelined(s, p, n)),
]


def server_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"])) + float(
        cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"]))


def measured(client: redis.Redis, fn: Callable[[], float]) -> dict[str, float]:
    """Run one variant with bench.per_second timing only its timed part; µs per operation."""
    parts: dict[str, float] = {}
    original = bench.per_second

    def per_second(count: int, run: Callable[[], Any]) -> float:
        redis_before, client_before = server_cpu(client), time.process_time()
        started = time.perf_counter()
        run()
        wall = time.perf_counter() - started
        parts["wall"] = wall / count * 1e6
        parts["redis"] = (server_cpu(client) - redis_before) / count * 1e6
        parts["client"] = (time.process_time() - client_before) / count * 1e6
        return count / wall

    bench.per_second = per_second
    try:
        fn()
    finally:
        bench.per_second = original
    parts["waiting"] = max(0.0, parts["wall"] - parts["redis"] - parts["client"])
    return parts


def js_backfill(s: bench.Settings, parser: str, n: int) -> float:
    """bench.py's backfill row, jobstore's side: records per second, timed by per_second."""
    prefix = s.prefix("bd-backfill")
    seeder = bench.raw_client(s, parser)
    client = bench.connect(s.url, bench.parser_options(parser, False))
    clock = bench.FakeClock(tick=0)
    migration = bench.Migration(client, prefix=prefix, clock=clock, wait=clock.wait)
    try:
        bench.seed_records(seeder, prefix, n, s)
        migration.set_phase("dual-write")
        return bench.per_second(n, lambda: migration.backfill(batch=1000))
    finally:
        bench.drop(seeder, prefix)
        seeder.close()
        client.close()


def raw_backfill(s: bench.Settings, parser: str, n: int) -> float:
    """bench.py's backfill baseline: SCAN, one Lua copy call per 1,000 keys."""
    prefix = s.prefix("bd-raw-backfill")
    client = bench.raw_client(s, parser)
    copy = client.register_script(bench.RAW_COPY)
    try:
        bench.seed_records(client, prefix, n, s)
        copy(keys=[f"{prefix}:none"], args=[prefix])
        return bench.per_second(n, lambda: bench.raw_scan_calls(client, f"{prefix}:jobs:*", copy,
                                                                prefix))
    finally:
        bench.drop(client, prefix)
        client.close()


def js_worker(s: bench.Settings, parser: str, n: int, finish: bool) -> float:
    """A worker's loop, concurrency 1, over ``n`` seeded jobs (legacy): ``store.finish(job)``
    (the move and the next claim in one call), or ``update_status(completed, claim=...)`` then
    ``dequeue``. Jobs processed per second, timed by per_second."""
    prefix = s.prefix(f"bd-worker-{'finish' if finish else 'two'}")
    store = bench.open_store(s, "legacy", prefix, parser)
    try:
        bench.seed_store(store, n + 50, s)
        job = store.dequeue(timeout=0)
        for _ in range(50):  # warm up: connection, server check, scripts
            job = store.finish(job)

        def run() -> None:
            current = job
            for _ in range(n):
                if finish:
                    current = store.finish(current)
                else:
                    store.update_status(current.job_id, "completed",
                                        workspace_id=current.workspace_id, claim=current.claim)
                    current = store.dequeue(timeout=0)

        return bench.per_second(n, run)
    finally:
        bench.drop(store.client, prefix)
        store.close()


VARIANTS.append(("worker: finish vs dequeue + update_status, per job",
                 lambda s, p, n: js_worker(s, p, n, True),
                 lambda s, p, n: js_worker(s, p, n, False)))


VARIANTS.append(("backfill per record vs SCAN + Lua copy per 1,000",
                 lambda s, p, n: js_backfill(s, p, n * 5),
                 lambda s, p, n: raw_backfill(s, p, n * 5)))


def ping(client: redis.Redis, n: int) -> dict[str, float]:
    """The same three parts for PING: the floor every round trip pays."""
    return measured(client, lambda: bench.per_second(n, lambda: [client.ping() for _ in range(n)]))


def run(s: bench.Settings, parsers: list[str], repeats: int) -> str:
    client = redis.Redis.from_url(s.url, decode_responses=True)
    lines = ["| operation | parser | side | wall µs | Redis CPU µs | client CPU µs | waiting µs |",
             "|---|---|---|---|---|---|---|"]
    try:
        for parser in parsers:
            best = min((ping(client, s.jobs) for _ in range(repeats)), key=lambda r: r["wall"])
            lines.append(f"| PING (the round-trip floor) | {parser} | redis-py | {best['wall']:.0f} "
                         f"| {best['redis']:.1f} | {best['client']:.1f} | {best['waiting']:.0f} |")
            for label, ours, theirs in VARIANTS:
                results: dict[str, list[dict[str, float]]] = {"jobstore": [], "baseline": []}
                for repeat in range(repeats):
                    s.repeat = repeat
                    sides = [("jobstore", ours), ("baseline", theirs)]
                    for side, fn in (sides if repeat % 2 == 0 else sides[::-1]):
                        results[side].append(measured(client, lambda f=fn, p=parser: f(s, p, s.jobs)))
                for side, samples in results.items():
                    b = min(samples, key=lambda r: r["wall"])
                    lines.append(f"| {label} | {parser} | {side} | {b['wall']:.0f} | "
                                 f"{b['redis']:.1f} | {b['client']:.1f} | {b['waiting']:.0f} |")
    finally:
        client.close()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a standalone Redis to use (default: a private redis-server)")
    parser.add_argument("--jobs", type=int, default=3000, help="operations per variant (3000)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the best is shown (5)")
    parser.add_argument("--hiredis", action=argparse.BooleanOptionalAction, default=None,
                        help="only with / only without hiredis (default: both when installed)")
    args = parser.parse_args(argv)
    parsers = (["hiredis"] if args.hiredis else ["python"] if args.hiredis is False
               else ["hiredis", "python"] if bench.HIREDIS else ["python"])
    s = bench.Settings(url=args.url or "", cluster_url=None, repeats=args.repeats, jobs=args.jobs,
                       memory_jobs=0, pass_jobs=0, latency_jobs=0, cluster_jobs=0,
                       cluster_memory_jobs=0, rate=0.0, idle_seconds=0.0, memory_repeats=1,
                       workspaces=[f"ws{i}" for i in range(20)], payload={})
    server = None
    if not s.url:
        if bench.RedisServer is None:
            parser.error("tests/support/servers.py is not importable: give --url")
        server = bench.RedisServer().start()
        s.url = server.url
    try:
        print(run(s, parsers, args.repeats))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
