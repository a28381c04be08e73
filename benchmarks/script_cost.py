"""What a job costs Redis, measured by the scripts' own time: steadier than the server's CPU on a
loaded machine.

    python benchmarks/script_cost.py [--n 1000] [--rounds 7] [--parts enqueue,raw,worker,finish,aio]

Starts a private redis-server on a free port and runs, ``--rounds`` times each (the parts'
order the same every round), the phases of benchmarks/peers.py with concurrency 1:

- ``enqueue``: N ``store.enqueue`` calls one at a time (jobstore, sync);
- ``raw``: the floor, the same record written by hand (``HSET`` + ``LPUSH`` in one ``MULTI``);
- ``worker``: N jobs processed by ``dequeue`` + ``update_status(completed, claim=...)``;
- ``finish``: N jobs processed by ``store.finish(job)``;
- ``aio``: N ``jobstore.aio`` enqueues one at a time.

For each it prints, per job and the lowest of the rounds: the ``usec`` that ``INFO
commandstats`` counts for ``EVALSHA`` (the scripts, the commands they run included) or for
``EXEC`` (the raw ``MULTI``), the server's whole CPU time (``INFO cpu``), this process's CPU time
(the client side: redis-py, jobstore, asyncio) and the wall time, then the commands per job that
round ran. The server's and the wall time move with the machine's load; the script time and the
client CPU much less. It asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

import peers_runners as r  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

import redis  # noqa: E402

PARTS: dict[str, tuple[str, Callable[[r.Ctx, r.Window], None]]] = {
    "enqueue": ("jobstore enqueue", r.js_enqueue),
    "raw": ("raw MULTI HSET+LPUSH", r.raw_enqueue),
    "worker": ("jobstore dequeue + update_status", partial(r.js_worker, finish=False)),
    "finish": ("jobstore finish", partial(r.js_worker, finish=True)),
    "aio": ("jobstore.aio enqueue", r.in_loop(r.aio_enqueue)),
}
SCRIPT_COMMANDS = ("evalsha", "exec")  # whose usec includes the commands they run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="jobs per part and round (1000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the lowest is shown (7)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of: {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        parser.error(f"--parts: of {', '.join(PARTS)}")
    windows: dict[str, list[r.Window]] = {p: [] for p in parts}
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            for _ in range(args.rounds):
                for part in parts:
                    client.flushall()
                    window = r.Window(client)
                    PARTS[part][1](r.Ctx(server.url, args.n, 1, Path()), window)
                    windows[part].append(window)
        finally:
            client.close()
    print(f"per job, lowest of {args.rounds} rounds of {args.n}")
    print("| part | script µs (EVALSHA / EXEC usec) | Redis CPU µs | client CPU µs | wall µs |")
    print("|---|---|---|---|---|")
    for part in parts:
        got = windows[part]

        def low(of: Callable[[r.Window], float], got: list[r.Window] = got) -> float:
            return min(of(w) / w.done for w in got) * 1e6

        script = low(lambda w: sum(w.usec.get(c, 0) for c in SCRIPT_COMMANDS) / 1e6)
        print(f"| {PARTS[part][0]} | {script:.1f} | {low(lambda w: w.redis_cpu):.1f} | "
              f"{low(lambda w: w.client_cpu):.1f} | {low(lambda w: w.seconds):.1f} |")
    print()
    for part in parts:
        best = min(windows[part], key=lambda w: sum(w.usec.get(c, 0) for c in SCRIPT_COMMANDS))
        per_job = sorted(((name, calls / best.done) for name, calls in best.commands.items()),
                         key=lambda item: -item[1])
        inner = sum(x for name, x in per_job if name not in SCRIPT_COMMANDS)
        print(f"- {PARTS[part][0]}: " + ", ".join(
            f"{name} {x:.2f} ({best.usec.get(name, 0) / best.done:.1f} µs)"
            for name, x in per_job if x >= 0.005) + f"; {inner:.2f} commands besides the call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
