"""The hot-path cost of metrics: enqueue + get per second with plain ``Events`` and with
``PrometheusEvents``, and raw redis-py HSET + HGETALL for reference.

    python benchmarks/metrics_overhead.py [--url redis://127.0.0.1:6399/0] [--pairs 5000] [--rounds 5]

Without --url it starts a private redis-server on a free port. Each round runs every variant
once, in turn, on its own key prefix; the best round of each is reported (the least disturbed
by the rest of the machine). Also times the events calls alone, without Redis. Prints numbers
and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import jobstore  # noqa: E402
from jobstore.events import Events  # noqa: E402
from jobstore.metrics import PrometheusEvents  # noqa: E402
from jobstore.migration import Migration  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

WORKSPACES = [f"ws{i}" for i in range(20)]


def store_pairs(url: str, strategy: str, events, pairs: int, prefix: str) -> float:
    """enqueue + get pairs per second through a store."""
    store = jobstore.open(url, strategy, prefix=prefix, events=events)
    if strategy == "dual":
        # dual-write: every enqueue writes both layouts, every get also shadow-reads the
        # target: the most events per operation of any phase.
        Migration(store.client, prefix=prefix, wait=lambda s: None).set_phase("dual-write")
    for i in range(50):  # warm up: connections, script cache, the phase
        job = store.enqueue(WORKSPACES[i % 20], "warm")
        store.get(job.job_id, workspace_id=job.workspace_id)
    started = time.perf_counter()
    for i in range(pairs):
        ws = WORKSPACES[i % 20]
        job = store.enqueue(ws, "bench", {"i": i})
        store.get(job.job_id, workspace_id=ws)
    seconds = time.perf_counter() - started
    store.close()
    return pairs / seconds


def raw_pairs(url: str, pairs: int, prefix: str) -> float:
    """HSET + HGETALL pairs per second, redis-py alone."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.ping()
    started = time.perf_counter()
    for i in range(pairs):
        key = f"{prefix}:raw:{i}"
        client.hset(key, mapping={"workspace_id": WORKSPACES[i % 20], "action": "bench",
                                  "status": "pending", "params": f'{{"i": {i}}}'})
        client.hgetall(key)
    seconds = time.perf_counter() - started
    client.close()
    return pairs / seconds


def _chunks(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def events_alone(events, calls: int) -> float:
    """Microseconds per store operation's worth of events (operation + dual_write + shadow_read)."""
    started = time.perf_counter()
    for i in range(calls):
        ws = WORKSPACES[i % 20]
        events.operation("enqueue", "dual", ws, "ok", 0.0004)
        events.dual_write(ws, True)
        events.operation("get", "dual", ws, "ok", 0.0003)
        events.shadow_read(ws, "job", "match", ())
    return (time.perf_counter() - started) / calls / 2 * 1e6


def run(url: str, pairs: int, rounds: int) -> None:
    client = redis.Redis.from_url(url)
    best: dict[str, float] = {}
    for round_number in range(rounds):
        for strategy in ("legacy", "dual"):
            for name, make in (("Events", Events),
                               ("PrometheusEvents", lambda: PrometheusEvents(
                                   registry=CollectorRegistry()))):
                prefix = f"bench{round_number}{strategy}{name}"
                rate = store_pairs(url, strategy, make(), pairs, prefix)
                key = f"{strategy} {name}"
                best[key] = max(best.get(key, 0.0), rate)
        best["raw redis-py"] = max(best.get("raw redis-py", 0.0), raw_pairs(url, pairs, f"bench{round_number}"))
        # Only this benchmark's keys: every key prefix above starts with "bench<round>".
        for batch in _chunks(client.scan_iter(match=f"bench{round_number}*", count=1000), 1000):
            client.delete(*batch)
    client.close()

    print(f"enqueue + get pairs per second (best of {rounds} rounds of {pairs}; x2 for operations/s)")
    for key, rate in best.items():
        print(f"  {key:<28} {rate:9.0f} pairs/s  {1e6 / rate:7.1f} us/pair")
    for strategy in ("legacy", "dual"):
        plain, metered = best[f"{strategy} Events"], best[f"{strategy} PrometheusEvents"]
        print(f"  {strategy}: PrometheusEvents / Events = {metered / plain:.3f} "
              f"({(1 / metered - 1 / plain) * 1e6:+.1f} us per pair)")
    raw = best["raw redis-py"]
    for strategy in ("legacy", "dual"):
        print(f"  {strategy} PrometheusEvents / raw redis-py = {best[f'{strategy} PrometheusEvents'] / raw:.3f}")

    calls = 100_000
    plain = min(events_alone(Events(), calls) for _ in range(3))
    metered = min(events_alone(PrometheusEvents("micro", registry=CollectorRegistry()), calls)
                  for _ in range(3))
    print("events calls alone, per store operation (no Redis):")
    print(f"  Events            {plain:6.2f} us")
    print(f"  PrometheusEvents  {metered:6.2f} us  (+{metered - plain:.2f} us)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis to use (default: a private redis-server)")
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.url:
        run(args.url, args.pairs, args.rounds)
        return 0
    with RedisServer() as server:
        run(server.url, args.pairs, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
