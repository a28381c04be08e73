"""What a job costs Redis, measured by the scripts' own time: steadier than the server's CPU on a
loaded machine.

    python benchmarks/script_cost.py [--n 1000] [--rounds 7] [--parts enqueue,raw,worker,finish,aio]

Starts a private redis-server on a free port and runs, ``--rounds`` times each (the parts'
order the same every round), the phases of benchmarks/peers.py with concurrency 1:

- ``enqueue``: N ``store.enqueue`` calls one at a time (jobstore, sync);
- ``raw``: the floor, the same record written by hand (``HSET`` + ``LPUSH`` in one ``MULTI``);
- ``worker``: N jobs processed by ``dequeue`` + ``update_status(completed, claim=...)``;
- ``finish``: N jobs processed by ``store.finish(job)``;
- ``aio``: N ``jobstore.aio`` enqueues one at a time;
- ``bullmq``, ``bullmq-worker`` (not run by default): BullMQ's ``Queue.add`` one at a time, and
  its worker with concurrency 1, through node as benchmarks/peers.py runs them;
- ``bare-enqueue``, ``bare-finish`` (not run by default): the floor of any script, the commands
  jobstore's ENQUEUE and FINISH scripts run per job (``EXISTS``, ``HSET``, ``ZADD``, ``LPUSH``;
  ``UNLINK``, ``HGETALL``, ``HSET``, ``ZREM``, ``TIME``, ``ZRANGEBYSCORE``, ``RPOP``,
  ``HGETALL``, ``HSET``, ``ZADD``, ``SET`` of the claimed record's JSON), on the same records
  and keys, in a script with no other logic (no checks, no replay, no fence): what a script
  that writes what jobstore writes costs at the least.

``--instructions`` runs that redis-server under valgrind's callgrind and also prints the
server's instructions per job in the timed part (zeroed before it, dumped after it, with
``callgrind_control``): a count that the machine's load does not move, unlike every time
(valgrind slows the server some fifty times, so keep ``--n`` small: 200 does).

For each it prints, per job and the lowest of the rounds: the ``usec`` that ``INFO
commandstats`` counts for ``EVALSHA`` (the scripts, the commands they run included) or for
``EXEC`` (the raw ``MULTI``), the server's whole CPU time (``INFO cpu``), this process's CPU time
(the client side: redis-py, jobstore, asyncio) and the wall time, then the commands per job that
round ran. The server's and the wall time move with the machine's load; the script time and the
client CPU much less. It asserts nothing.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

import peers_bullmq as bull  # noqa: E402
import peers_runners as r  # noqa: E402
from peers import default_cache_dir  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

from jobstore.ops.writes import queue_entry  # noqa: E402

import redis  # noqa: E402

PARTS: dict[str, tuple[str, Callable[[r.Ctx, r.Window], None]]] = {
    "enqueue": ("jobstore enqueue", r.js_enqueue),
    "raw": ("raw MULTI HSET+LPUSH", r.raw_enqueue),
    "worker": ("jobstore dequeue + update_status", partial(r.js_worker, finish=False)),
    "finish": ("jobstore finish", partial(r.js_worker, finish=True)),
    "aio": ("jobstore.aio enqueue", r.in_loop(r.aio_enqueue)),
    "bullmq": ("BullMQ Queue.add", partial(bull.bullmq, phase="enqueue")),
    "bullmq-worker": ("BullMQ worker", partial(bull.bullmq, phase="worker-1")),
}


# The commands jobstore's ENQUEUE runs for a new job, and nothing else.
BARE_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[3]) > 0 then return 'exists' end
redis.call('HSET', KEYS[3], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[4], ARGV[3])
return 'created'
"""
# The commands jobstore's FINISH runs to finish a job and claim the next (legacy keys), and
# nothing else; answers as FINISH does: the claimed record as the JSON text also kept aside.
BARE_FINISH = """
redis.call('UNLINK', KEYS[4])
local flat = redis.call('HGETALL', KEYS[1])
local done = {}
for i = 1, #flat, 2 do done[flat[i]] = flat[i + 1] end
redis.call('HSET', KEYS[1], '_rev', '3', 'status', 'completed', 'updated_at', ARGV[1])
redis.call('ZREM', KEYS[2], done.claim or '')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 10)
local entry = redis.call('RPOP', KEYS[3])
if not entry then return {'empty'} end
local ws, id = string.match(entry, '^([^:]*):([^:]*)')
local key = (string.gsub((string.gsub(ARGV[2], '\\1', ws)), '\\2', id))  -- the schema's template
flat = redis.call('HGETALL', key)
local record = {}
for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
local claim = ARGV[3] .. ':' .. entry
redis.call('HSET', key, 'status', 'running', 'updated_at', ARGV[1], '_rev', '2', 'attempts', '1',
           'claim', claim)
redis.call('ZADD', KEYS[2], now + 600000, claim)
record.status, record.claim = 'running', claim
local text = cjson.encode({key, record, KEYS[1], 0})
redis.call('SET', KEYS[5], text, 'EX', 600)
return {{'updated', KEYS[1]}, {'job', text, key}}
"""


def bare_enqueue(ctx: r.Ctx, w: r.Window) -> None:
    """N records as jobstore's enqueue writes them, by BARE_ENQUEUE, one at a time."""
    store = r.js_open(ctx)
    client = redis.Redis.from_url(ctx.url, decode_responses=True)
    sha = client.script_load(BARE_ENQUEUE)
    keys = store.context.keys

    def one(i: int) -> None:
        ws = r.WORKSPACES[i % 20]
        job, fields = store._new_job(ws, "noop", r.job_args(i))
        (schema,) = store.strategy.routing(ws).writes
        client.evalsha(sha, 4, keys.gone(ws, job.job_id), keys.index(ws),
                       schema.job_key(ws, job.job_id), keys.queue, repr(job.created_at),
                       job.job_id, queue_entry(store.context, ws, job.job_id, fields["created_at"]),
                       *[x for pair in fields.items() for x in pair])

    try:
        r.timed_threads(r.Ctx(ctx.url, ctx.n, 1, ctx.cache_dir), w, one)
    finally:
        client.close()
        store.close()


def bare_finish(ctx: r.Ctx, w: r.Window) -> None:
    """The N jobs jobstore's worker parts process (the same records and queue), by BARE_FINISH."""
    r.js_seed(ctx)
    store = r.js_open(ctx)
    client = redis.Redis.from_url(ctx.url, decode_responses=True)
    sha = client.script_load(BARE_FINISH)
    keys = store.context.keys
    (schema,) = store.strategy.routing(r.WORKSPACES[0]).reads
    job = store.dequeue(timeout=0)
    key, done = schema.job_key(job.workspace_id, job.job_id) if job else "", 0
    w.begin()
    while key:
        token = store.context.new_token()
        reply = client.evalsha(sha, 5, key, keys.leases, keys.queue,
                               keys.op(store.context.new_token(), keys.queue),
                               keys.op(token, keys.queue), repr(time.time()),
                               schema.lua_template, token)
        done += 1
        key = reply[1][2] if len(reply) > 1 else ""
    w.end(done)
    client.close()
    store.close()


PARTS["bare-enqueue"] = ("the commands alone: enqueue", bare_enqueue)
PARTS["bare-finish"] = ("the commands alone: finish", bare_finish)
DEFAULT_PARTS = ("enqueue", "raw", "worker", "finish", "aio")
SCRIPT_COMMANDS = ("evalsha", "exec")  # whose usec includes the commands they run


class Callgrind:
    """A redis-server under valgrind's callgrind, on a free port."""

    def __enter__(self) -> Callgrind:
        from tests.support.servers import free_port
        self.dir = tempfile.mkdtemp(prefix="jobstore-callgrind-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.out",
             "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis(port=self.port)
        for _ in range(600):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        client.close()
        return self

    def control(self, *options: str) -> None:
        subprocess.run(["callgrind_control", *options, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def instructions(self) -> int:
        """The instructions counted since the last zeroing (dumped now)."""
        before = set(glob.glob(f"{self.dir}/cg.out*"))
        self.control("-d")
        for _ in range(600):
            new = set(glob.glob(f"{self.dir}/cg.out*")) - before
            if new:
                text = open(new.pop()).read()
                if "totals:" in text or "summary:" in text:
                    for line in text.splitlines():
                        if line.startswith(("totals:", "summary:")):
                            return int(line.split()[1])
            time.sleep(0.1)
        raise RuntimeError("callgrind wrote no dump")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class CountedWindow(r.Window):
    """A window that also counts the server's instructions (callgrind)."""

    def __init__(self, client: redis.Redis, grind: Callgrind) -> None:
        super().__init__(client)
        self.grind, self.instructions = grind, 0

    def begin(self) -> None:
        super().begin()
        self.grind.control("-z")

    def end(self, done: int, **kwargs: float | None) -> None:
        self.instructions = self.grind.instructions()
        super().end(done, **kwargs)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="jobs per part and round (1000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the lowest is shown (7)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"of: {', '.join(PARTS)} (default: {','.join(DEFAULT_PARTS)}; "
                             "BullMQ's through node, as benchmarks/peers.py runs them)")
    parser.add_argument("--instructions", action="store_true",
                        help="the server under valgrind's callgrind: instructions per job too")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        parser.error(f"--parts: of {', '.join(PARTS)}")
    if args.instructions and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        parser.error("--instructions needs valgrind (and its callgrind_control) on PATH")
    windows: dict[str, list[r.Window]] = {p: [] for p in parts}
    with (Callgrind() if args.instructions else RedisServer()) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            for _ in range(args.rounds):
                for part in parts:
                    client.flushall()
                    window = (CountedWindow(client, server) if isinstance(server, Callgrind)
                              else r.Window(client))
                    PARTS[part][1](r.Ctx(server.url, args.n, 1, default_cache_dir()), window)
                    windows[part].append(window)
        finally:
            client.close()
    print(f"per job, lowest of {args.rounds} rounds of {args.n}")
    counted = " server instructions |" if args.instructions else ""
    print(f"| part | script µs (EVALSHA / EXEC usec) | Redis CPU µs | client CPU µs | wall µs |"
          f"{counted}")
    print("|---|---|---|---|---|" + ("---|" if counted else ""))
    for part in parts:
        got = windows[part]

        def low(of: Callable[[r.Window], float], got: list[r.Window] = got) -> float:
            return min(of(w) / w.done for w in got) * 1e6

        script = low(lambda w: sum(w.usec.get(c, 0) for c in SCRIPT_COMMANDS) / 1e6)
        grind = (f" {low(lambda w: getattr(w, 'instructions', 0) / 1e6):,.0f} |"
                 if counted else "")
        print(f"| {PARTS[part][0]} | {script:.1f} | {low(lambda w: w.redis_cpu):.1f} | "
              f"{low(lambda w: w.client_cpu):.1f} | {low(lambda w: w.seconds):.1f} |{grind}")
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
