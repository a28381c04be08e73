"""The acceptance run: migrate 100,000 legacy jobs on real Redis under live traffic.

    python benchmarks/migrate_100k.py [--url redis://127.0.0.1:6399/0] [--jobs 100000]

Without --url it starts a private redis-server on a free port. Prints each step's numbers and
exits non-zero if any job was lost, revived or handed out twice, or if verify was not clean.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jobstore  # noqa: E402
from jobstore.demo import LiveTraffic  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from tests.migration.test_migration_journey import WORKSPACES, Worker  # noqa: E402


def journey(url: str, jobs: int) -> int:
    t0 = time.perf_counter()
    legacy = jobstore.open(url, "legacy")
    for start in range(0, jobs, 5000):
        legacy.enqueue_many([(WORKSPACES[n % 6], "seed", {"n": n})
                             for n in range(start, min(jobs, start + 5000))])
    print(f"seeded {jobs} legacy jobs in {time.perf_counter() - t0:.1f}s")
    migration = jobstore.open(url, "dual").migration()
    migration.set_phase("off")
    traffic = [LiveTraffic(jobstore.open(url, "dual"), WORKSPACES, seed=s) for s in (1, 2)]
    workers = [Worker(url) for _ in range(2)]
    for thread in traffic + workers:
        thread.start()
    migration.set_phase("dual-write")
    for name, call in [
        ("backfill", lambda: migration.backfill(batch=1000)),
        ("verify", lambda: migration.verify(batch=1000)),
    ]:
        t = time.perf_counter()
        report = call()
        print(f"{name}: {report.as_dict()} in {time.perf_counter() - t:.1f}s")
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    t = time.perf_counter()
    print(f"cleanup: {migration.cleanup(batch=1000).counts} in {time.perf_counter() - t:.1f}s")
    for thread in traffic + workers:
        thread.stop()
    final = migration.verify(batch=1000)
    claims = Counter(c for w in workers for c in w.claimed)
    twice = [j for j, n in claims.items() if n > 1]
    deleted = set().union(*(t.deleted for t in traffic))
    target = jobstore.open(url, "workspace")
    revived = [j for j in deleted if any(target.get(j, workspace_id=ws) for ws in WORKSPACES)]
    print(f"final verify clean={final.clean}; traffic ops={sum(t.operations for t in traffic)}; "
          f"dequeued={len(claims)}; twice={len(twice)}; revived={len(revived)}; "
          f"total {time.perf_counter() - t0:.1f}s")
    return 0 if final.clean and not twice and not revived else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    if args.url:
        return journey(args.url, args.jobs)
    with RedisServer() as server:
        return journey(server.url, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
