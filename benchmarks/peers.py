"""jobstore beside peer job queues (RQ, arq, SAQ, BullMQ), on one Redis, in one run.

    python benchmarks/peers.py [--n 5000] [--repeats 3] [--peers jobstore,rq,...] [--json [FILE]]

Starts a private redis-server on a free port (never the one on 6379) and, for N no-op jobs,
measures each peer's jobs per second in four phases:

- ``enqueue``: one job at a time, one client;
- ``enqueue-concurrent``: from 100 asyncio tasks at once (async libraries: jobstore.aio, arq,
  SAQ, BullMQ), or 8 threads (sync ones: jobstore, RQ);
- ``worker-1`` / ``worker-8``: the N jobs enqueued first (untimed), then one worker with
  concurrency 1 / 8 runs them all to completion. jobstore's worker is the loop its docs give
  (``dequeue``, the job, ``update_status(completed, claim=...)``) in 1 or 8 threads;
  ``jobstore-finish`` is the same with ``store.finish(job)``, which also claims the next job
  (when this jobstore has it). RQ: ``SimpleWorker`` in burst mode, 8 processes for 8. arq:
  ``Worker(max_jobs=...)``, SAQ: ``Worker(concurrency=...)``, BullMQ: ``Worker({concurrency})``.

Around every timed part it reads the server's CPU time (``INFO cpu``, used_cpu_user +
used_cpu_sys) and its command counts (``INFO commandstats``): **what a job costs Redis**, in
µs of server CPU per job, with the commands per job that jobstore's scripts run. The enqueue
phase has a floor beside the peers: the same record as jobstore's, written by hand with
redis-py (``HSET`` + ``LPUSH`` in one ``MULTI``). Redis is flushed before every phase. Each
phase runs ``--repeats`` times, the peers' order rotating; the table shows the best repeat
(highest jobs/s; lowest Redis CPU per job) and every ratio is to jobstore (sync) in the same
run. It asserts nothing.

The peers are no dependencies of jobstore and nothing is installed into the project: a peer
that is not importable is skipped with the reason (``pip install rq saq`` and ``pip install
--no-deps arq`` in the benchmark's virtualenv: docs/performance.md). BullMQ runs through node:
the first run installs ``bullmq`` into ``--cache-dir`` (default
``~/.cache/jobstore-bench/bullmq``) with npm, and runs ``benchmarks/peers_bullmq.mjs`` there;
without node it is skipped. ``jobstore.aio`` runs when it is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

import redis  # noqa: E402

import peers_bullmq as bull  # noqa: E402
import peers_runners as r  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

Runner = Callable[[r.Ctx, r.Window], None]

PHASES = {
    "enqueue": "enqueue, one at a time",
    "enqueue-concurrent": "enqueue, 100 tasks (sync: 8 threads)",
    "worker-1": "worker, concurrency 1",
    "worker-8": "worker, concurrency 8",
}
THREADS = 8  # the sync libraries' concurrent enqueue: threads of one process


def every_phase(enqueue: Runner, worker: Runner) -> dict[str, Runner]:
    """Both enqueue phases run ``enqueue``, both worker phases ``worker``; the concurrency
    (threads, tasks, worker slots) comes with the phase's ``Ctx``."""
    return {"enqueue": enqueue, "enqueue-concurrent": enqueue, "worker-1": worker, "worker-8": worker}


# key: (label, sync library, {phase: runner})
PEERS: dict[str, tuple[str, bool, dict[str, Runner]]] = {
    "jobstore": ("jobstore (sync)", True, every_phase(r.js_enqueue, partial(r.js_worker, finish=False))),
    "jobstore-finish": ("jobstore (sync), finish()", True, {
        phase: partial(r.js_worker, finish=True) for phase in ("worker-1", "worker-8")}),
    "jobstore-aio": ("jobstore.aio", False, every_phase(r.in_loop(r.aio_enqueue), r.in_loop(r.aio_worker))),
    "raw": ("redis-py MULTI HSET+LPUSH (floor)", True, {"enqueue": r.raw_enqueue}),
    "rq": ("RQ", True, every_phase(r.rq_enqueue, r.rq_worker)),
    "arq": ("arq", False, every_phase(r.in_loop(r.arq_enqueue), r.in_loop(r.arq_worker))),
    "saq": ("SAQ", False, every_phase(r.in_loop(r.saq_enqueue), r.in_loop(r.saq_worker))),
    "bullmq": ("BullMQ (node)", False, {phase: partial(bull.bullmq, phase=phase) for phase in PHASES}),
}
BASELINE = "jobstore"


def concurrency(peer: str, phase: str) -> int:
    if phase == "enqueue-concurrent":
        return THREADS if PEERS[peer][1] else 100
    return 8 if phase == "worker-8" else 1


class Results:
    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], list[r.Window]] = {}
        self.skipped: dict[tuple[str, str], str] = {}
        self.errors: dict[tuple[str, str], list[str]] = {}

    def rate(self, peer: str, phase: str) -> float | None:
        got = self.samples.get((peer, phase))
        return max(w.done / w.seconds for w in got) if got else None

    def redis_us(self, peer: str, phase: str) -> float | None:
        got = self.samples.get((peer, phase))
        return min(w.redis_cpu / w.done for w in got) * 1e6 if got else None

    def commands(self, peer: str, phase: str) -> dict[str, float]:
        """Commands per job, in the repeat with the least Redis CPU."""
        got = self.samples.get((peer, phase))
        if not got:
            return {}
        best = min(got, key=lambda w: w.redis_cpu / w.done)
        return {name: calls / best.done for name, calls in
                sorted(best.commands.items(), key=lambda item: -item[1])}


def run(url: str, n: int, repeats: int, peers: list[str], cache_dir: Path,
        log: Callable[[str], None]) -> Results:
    results = Results()
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        for repeat in range(repeats):
            order = peers[repeat % len(peers):] + peers[:repeat % len(peers)]
            for phase in PHASES:
                for peer in order:
                    runner = PEERS[peer][2].get(phase)
                    if runner is None or (peer, phase) in results.skipped:
                        continue
                    client.flushall()
                    window = r.Window(client)
                    ctx = r.Ctx(url, n, concurrency(peer, phase), cache_dir)
                    try:
                        runner(ctx, window)
                    except r.Skip as exc:
                        results.skipped[(peer, phase)] = str(exc)
                        continue
                    except Exception as exc:  # reported in the table's notes, the run goes on
                        results.errors.setdefault((peer, phase), []).append(f"{type(exc).__name__}: {exc}")
                        log(f"{peer} {phase}: {type(exc).__name__}: {exc}")
                        continue
                    if window.done != n:
                        results.errors.setdefault((peer, phase), []).append(
                            f"{window.done} of {n} jobs done")
                        continue
                    results.samples.setdefault((peer, phase), []).append(window)
                    log(f"repeat {repeat + 1}/{repeats} {phase:<18} {peer:<15} "
                        f"{n / window.seconds:9,.0f} jobs/s  "
                        f"Redis {window.redis_cpu / n * 1e6:6.1f} µs/job")
    finally:
        client.close()
    return results


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "-"


def speed_table(res: Results, peers: list[str]) -> str:
    lines = ["| peer | " + " | ".join(PHASES.values()) + " |",
             "|---|" + "---|" * len(PHASES)]
    for peer in peers:
        cells = []
        for phase in PHASES:
            rate = res.rate(peer, phase)
            cells.append("" if phase not in PEERS[peer][2] else
                         f"{rate:,.0f}/s ({ratio(rate, res.rate(BASELINE, phase))})" if rate else "-")
        lines.append(f"| {PEERS[peer][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(res: Results, peers: list[str]) -> str:
    lines = ["| peer | enqueue: Redis CPU µs/job | take + finish (worker, concurrency 1): "
             "Redis CPU µs/job |", "|---|---|---|"]
    for peer in peers:
        enq, work = res.redis_us(peer, "enqueue"), res.redis_us(peer, "worker-1")
        if enq is None and work is None:
            continue
        lines.append(f"| {PEERS[peer][0]} | {'-' if enq is None else f'{enq:.1f}'} | "
                     f"{'-' if work is None else f'{work:.1f}'} |")
    return "\n".join(lines)


def cost_ratios(res: Results) -> list[tuple[str, str]]:
    us = res.redis_us
    return [
        ("jobstore enqueue / raw MULTI HSET+LPUSH", ratio(us("jobstore", "enqueue"), us("raw", "enqueue"))),
        ("jobstore take+finish (dequeue + update_status) / BullMQ worker",
         ratio(us("jobstore", "worker-1"), us("bullmq", "worker-1"))),
        ("jobstore take+finish (finish) / BullMQ worker",
         ratio(us("jobstore-finish", "worker-1"), us("bullmq", "worker-1"))),
        ("jobstore enqueue / BullMQ enqueue", ratio(us("jobstore", "enqueue"), us("bullmq", "enqueue"))),
    ]


COMMAND_ROWS = [("jobstore", "enqueue", "jobstore enqueue"),
                ("jobstore", "worker-1", "jobstore dequeue + update_status"),
                ("jobstore-finish", "worker-1", "jobstore finish"),
                ("raw", "enqueue", "raw MULTI enqueue"),
                ("bullmq", "enqueue", "BullMQ Queue.add"),
                ("bullmq", "worker-1", "BullMQ worker, per job")]


def report(res: Results, peers: list[str], meta: dict[str, Any]) -> str:
    v = meta["versions"]
    out = [f"peers benchmark, {meta['when']}: N={meta['n']} no-op jobs, best of {meta['repeats']} "
           f"repeats, {meta['seconds']:.0f} s; {meta['cpus']} CPUs, load average "
           f"{meta['loadavg_before']:.2f} before / {meta['loadavg_after']:.2f} after",
           "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
           "", "jobs per second (ratio to jobstore (sync), same run)", "", speed_table(res, peers),
           "", "what a job costs Redis: server CPU per job (INFO cpu), one client", "",
           cost_table(res, peers), ""]
    out += [f"- {label}: {value}" for label, value in cost_ratios(res)]
    out += ["", "commands per job (INFO commandstats; script commands counted inside their EVALSHA)"]
    for peer, phase, label in COMMAND_ROWS:
        per_job = res.commands(peer, phase)
        if per_job:
            out.append(f"- {label}: " + ", ".join(f"{name} {x:.2f}" for name, x in per_job.items()
                                                   if x >= 0.005))
    notes = {}
    for (peer, phase), reason in res.skipped.items():
        notes.setdefault((PEERS[peer][0], reason), []).append(phase)
    for (label, reason), phases in notes.items():
        out.append(f"- skipped {label} ({', '.join(phases)}): {reason}")
    for (peer, phase), errors in res.errors.items():
        out.append(f"- error {PEERS[peer][0]} {phase}: {'; '.join(errors)}")
    return "\n".join(out)


def as_json(res: Results, meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for (peer, phase), windows in res.samples.items():
        rows.append({"peer": peer, "phase": phase, "label": PEERS[peer][0],
                     "concurrency": concurrency(peer, phase),
                     "jobs_per_s": res.rate(peer, phase),
                     "ratio_to_jobstore": ((res.rate(peer, phase) or 0) / b
                                           if (b := res.rate(BASELINE, phase)) else None),
                     "redis_cpu_us_per_job": res.redis_us(peer, phase),
                     "commands_per_job": res.commands(peer, phase),
                     "samples": [{"seconds": w.seconds, "done": w.done, "redis_cpu": w.redis_cpu,
                                  "commands": w.commands} for w in windows]})
    return {**meta, "rows": rows,
            "cost_ratios": dict(cost_ratios(res)),
            "skipped": [{"peer": p, "phase": ph, "reason": why} for (p, ph), why in res.skipped.items()],
            "errors": [{"peer": p, "phase": ph, "errors": e} for (p, ph), e in res.errors.items()]}


def versions(cache_dir: Path, server: str) -> dict[str, str | None]:
    """The versions of what ran (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version
    found: dict[str, str | None] = {"redis-server": server, "python": platform.python_version()}
    for name in ("jobstore", "redis", "hiredis", "rq", "arq", "saq"):
        try:
            found["redis-py" if name == "redis" else name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    node = shutil.which("node")
    found["node"] = (subprocess.run([node, "--version"], capture_output=True, text=True,
                                    timeout=30).stdout.strip() if node else None)
    found["bullmq"] = bull.bullmq_version(cache_dir)
    return found


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jobstore-bench" / "bullmq"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="no-op jobs per phase (5000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every phase; the best is shown (3)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated, of: {', '.join(PEERS)} (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where bullmq is installed for the node script "
                             "(default: ~/.cache/jobstore-bench/bullmq)")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write the results as JSON to FILE (or '-': stdout; the table then "
                             "goes to stderr)")
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown or not peers:
        parser.error(f"--peers: unknown {', '.join(unknown) or '(none given)'}; "
                     f"known: {', '.join(PEERS)}")
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be at least 1")
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser().resolve()
    to_json = args.json == "-"
    out = sys.stderr if to_json else sys.stdout

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    with RedisServer() as server:
        info = server.client(decode_responses=True).info("server")
        load_before = os.getloadavg()
        started = time.perf_counter()
        res = run(server.url, args.n, args.repeats, peers, cache_dir, log)
        seconds = time.perf_counter() - started
        load_after = os.getloadavg()
    meta = {"when": time.strftime("%Y-%m-%d %H:%M:%S %z"), "n": args.n, "repeats": args.repeats,
            "seconds": seconds, "cpus": os.cpu_count(), "loadavg_before": load_before[0],
            "loadavg_after": load_after[0],
            "versions": versions(cache_dir, info.get("redis_version", "?"))}
    print(report(res, peers, meta), file=out)
    if args.json:
        data = json.dumps(as_json(res, meta), indent=2)
        if to_json:
            print(data)
        else:
            Path(args.json).write_text(data + "\n")
    return 0 if res.rate(BASELINE, "enqueue") or BASELINE not in peers else 1


if __name__ == "__main__":
    sys.exit(main())
