"""The cost of ``wait_replicas``: enqueue + update_status per second with and without waiting
for a replica, on a primary and a replica on loopback that this script starts.

    python benchmarks/wait_replicas.py [--jobs 3000] [--rounds 3]

Each round runs both variants in turn; the best round of each is reported, with the ratio.
Loopback replication is as fast as it gets: across a network, every write pays at least one
round trip to the slowest replica it waits for. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jobstore  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402


def rate(url: str, jobs: int, prefix: str, **options) -> float:
    store = jobstore.open(url, "legacy", prefix=prefix, **options)
    for _ in range(50):  # warm up: connections, script cache, the eviction check
        store.enqueue("ws", "warm")
    started = time.perf_counter()
    for i in range(jobs):
        job = store.enqueue("ws", "bench", {"i": i})
        store.update_status(job.job_id, "cancelled", workspace_id="ws")
    seconds = time.perf_counter() - started
    store.close()
    return jobs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    primary = RedisServer().start()
    replica = RedisServer(args=["--replicaof", primary.host, str(primary.port)]).start()
    try:
        probe = replica.client(decode_responses=True)
        while probe.info("replication").get("master_link_status") != "up":
            time.sleep(0.05)
        best = {"no wait": 0.0, "wait_replicas=1": 0.0}
        for n in range(args.rounds):
            best["no wait"] = max(best["no wait"], rate(primary.url, args.jobs, f"b{n}a"))
            best["wait_replicas=1"] = max(best["wait_replicas=1"],
                                          rate(primary.url, args.jobs, f"b{n}b", wait_replicas=1))
        for name, value in best.items():
            print(f"{name:>16}: {value:8.0f} jobs/s (enqueue + update_status)")
        print(f"{'ratio':>16}: {best['wait_replicas=1'] / best['no wait']:.2f}x")
    finally:
        replica.stop()
        primary.stop()


if __name__ == "__main__":
    main()
