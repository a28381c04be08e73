"""Retention's steady-state memory (docs/retention.md): the formula checked against a run.

    python benchmarks/retention_memory.py [--rate 200] [--ttl 4] [--seconds 12] [--params 200]

Starts its own redis-server, then:

1. measures the bytes one finished job holds (its record and index entry: ``B_finished``), one
   pending job (record, index entry, queue entry: ``B_pending``) and one index entry alone
   (``B_index``), each as the used_memory growth over 2,000 jobs divided by 2,000;
2. runs ``--rate`` jobs a second through enqueue and a worker loop (``finish``) for
   ``--seconds``, on a store with ``finished_ttl=--ttl``, sweeping once a second, and samples
   used_memory once the first ``ttl`` has passed;
3. prints the predicted steady state, ``rate x ttl x B_finished + backlog x B_pending +
   rate x sweep interval x B_index``, beside the measured mean, and exits 1 when they differ by
   more than ``--tolerance`` (default 35%).

The default run takes about 15 seconds; ``--json`` prints the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jobstore  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

SAMPLE = 2000


def used(client) -> int:
    return int(client.info("memory")["used_memory"])


def per_job(url: str, prefix: str, params: dict, finished: bool, index_only: bool = False) -> float:
    """used_memory growth per job of SAMPLE jobs: pending, finished, or only their index entries."""
    store = jobstore.open(url, "legacy", prefix=prefix)
    client = store.client
    store.enqueue("warm", "warm")  # scripts loaded, connections open
    before = used(client)
    jobs = store.enqueue_many([("ws", "bench", params) for _ in range(SAMPLE)])
    if finished or index_only:
        client.delete(store.keys.queue)
        for job in jobs:
            store.update_status(job.job_id, "cancelled", workspace_id="ws", result={"ok": 1})
    if index_only:
        client.delete(*(f"{prefix}:jobs:{job.job_id}" for job in jobs))
    after = used(client)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    store.close()
    return (after - before) / SAMPLE


def steady(url: str, rate: float, ttl: float, seconds: float, params: dict) -> dict:
    store = jobstore.open(url, "legacy", prefix="steady", finished_ttl=ttl)
    client = store.client
    store.enqueue("warm", "warm")
    store.finish(store.dequeue(), take_next=False)
    base = used(client)
    samples: list[int] = []
    backlog: list[int] = []
    started = time.monotonic()
    enqueued = 0
    last_sweep = started
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * rate) - enqueued
        if due > 0:
            store.enqueue_many([("ws", "bench", params) for _ in range(due)])
            enqueued += due
        job = store.dequeue()
        while job is not None:
            job = store.finish(job, result={"ok": 1})
        if now - last_sweep >= 1.0:
            store.sweep()
            last_sweep = now
            if now - started > ttl + 1:
                samples.append(used(client) - base)
                backlog.append(client.llen(store.keys.queue))
        time.sleep(0.005)
    store.close()
    return {"measured": statistics.mean(samples) if samples else 0.0,
            "backlog": statistics.mean(backlog) if backlog else 0.0,
            "achieved_rate": enqueued / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="jobs a second")
    parser.add_argument("--ttl", type=float, default=4, help="finished_ttl, seconds")
    parser.add_argument("--seconds", type=float, default=12, help="length of the steady run")
    parser.add_argument("--params", type=int, default=200, help="bytes of params per job")
    parser.add_argument("--tolerance", type=float, default=0.35)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    params = {"text": "x" * args.params}
    server = RedisServer().start()
    try:
        b_finished = per_job(server.url, "m1", params, finished=True)
        b_pending = per_job(server.url, "m2", params, finished=False)
        b_index = per_job(server.url, "m3", params, finished=False, index_only=True)
        run = steady(server.url, args.rate, args.ttl, args.seconds, params)
    finally:
        server.stop()
    rate = run["achieved_rate"]
    predicted = rate * args.ttl * b_finished + run["backlog"] * b_pending + rate * 1.0 * b_index
    ratio = run["measured"] / predicted if predicted else 0.0
    report = {"rate": rate, "ttl": args.ttl, "bytes_finished": b_finished,
              "bytes_pending": b_pending, "bytes_index": b_index, "backlog": run["backlog"],
              "predicted": predicted, "measured": run["measured"], "ratio": ratio}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"bytes per finished job {b_finished:.0f}, per pending job {b_pending:.0f}, "
              f"per index entry {b_index:.0f}")
        print(f"rate {rate:.0f}/s, ttl {args.ttl:g} s, backlog {run['backlog']:.0f}: predicted "
              f"{predicted / 1e6:.2f} MB, measured {run['measured'] / 1e6:.2f} MB "
              f"(x{ratio:.2f})")
    if abs(ratio - 1) > args.tolerance:
        print(f"measured differs from the formula by more than {args.tolerance:.0%}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
