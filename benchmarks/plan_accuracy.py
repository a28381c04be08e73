"""How close ``jobstore migrate plan`` comes: predicted against measured backfill time, verify
time and memory on a private redis-server.

    python benchmarks/plan_accuracy.py [--n 100000] [--rate RECORDS_PER_SECOND] [--sample 1000]

Starts a redis-server on a free port, fills it with N legacy records over a few workspaces,
runs the plan, switches to dual-write, runs the real backfill and verify, and prints each
prediction, the measured value and the error (measured memory: the INFO used_memory delta
across the backfill). Exits 1 when the backfill time is off by more than 30% or the memory by
more than 20% (the accuracy targets in docs/migration.md#plan).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jobstore  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

WORKSPACES = [f"team-{i}" for i in range(12)]


def fill(url: str, n: int) -> None:
    legacy = jobstore.open(url, "legacy")
    for start in range(0, n, 5000):
        legacy.enqueue_many([(WORKSPACES[(i * i) % len(WORKSPACES)], "summarise",
                              {"doc": i, "text": "x" * (i % 200)})
                             for i in range(start, min(n, start + 5000))])
    legacy.close()


def error(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured if measured else 0.0


def run(url: str, client, n: int, rate: float | None, sample: int | None) -> int:
    fill(url, n)
    migration = jobstore.open_migration(url)
    plan = migration.plan(rate=rate, **({} if sample is None else {"sample": sample}))
    migration.set_phase("off")
    migration.set_phase("dual-write")
    before = int(client.info("memory")["used_memory"])
    backfill = migration.backfill(rate=rate)
    after = int(client.info("memory")["used_memory"])
    verify = migration.verify()
    rows = [("backfill seconds", plan.backfill_seconds or 0.0, backfill.seconds, 30.0),
            ("verify seconds", plan.verify_seconds or 0.0, verify.seconds, None),
            ("memory bytes", float(plan.extra_memory), float(after - before), 20.0)]
    print(f"{n} records, rate {rate or 'unthrottled'}, sample {plan.sampled}; plan took "
          f"{plan.seconds:.2f}s; measured rates {plan.rates}")
    print(f"{'':18} {'predicted':>14} {'measured':>14} {'error':>8}")
    failed = False
    for name, predicted, measured, bound in rows:
        err = error(predicted, measured)
        mark = "" if bound is None else (" ok" if abs(err) <= bound else f" OVER {bound:.0f}%")
        failed |= bound is not None and abs(err) > bound
        print(f"{name:18} {predicted:14.2f} {measured:14.2f} {err:+7.1f}%{mark}")
    print(f"backfill {backfill.counts}; verify clean={verify.clean}")
    return 1 if failed or not verify.clean else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="records (default 100000)")
    parser.add_argument("--rate", type=float, default=None, help="backfill records/s (default none)")
    parser.add_argument("--sample", type=int, default=None,
                        help="records the plan samples (default: the plan's, 2000)")
    args = parser.parse_args()
    with RedisServer() as server:
        return run(server.url, server.client(), args.n, args.rate, args.sample)


if __name__ == "__main__":
    sys.exit(main())
