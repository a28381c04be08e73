"""Soak: worker processes killed at random while the migration runs through every phase.

    .venv/bin/python benchmarks/soak_leases.py                 # private redis-server, defaults
    .venv/bin/python benchmarks/soak_leases.py --cluster       # private 3-node Redis Cluster
    .venv/bin/python benchmarks/soak_leases.py --url redis://127.0.0.1:6379/0 --json

A producer enqueues --jobs jobs with ids it records (part before the migration, the rest
during it); --workers worker processes loop dequeue -> "work" -> update_status(completed,
claim=job.claim), each with a `dual` store leasing jobs for --lease seconds; every --kill-every
seconds a random worker is SIGKILLed and replaced; a driver walks the migration off ->
dual-write -> backfill -> verify -> read-target -> target-only -> cleanup and back
(reverse-sync -> read-target -> reverse-sync -> dual-write -> verify). Exit 0 only when every
job was completed exactly once (or failed by max_attempts: counted apart, and explained),
none is stuck or lost, and nothing contradicts the store's word. docs/soak.md says more.

Without --url it starts a private redis-server (persistence off, maxmemory-policy noeviction)
on a free port, or with --cluster a private 3-node cluster (tests/support/servers.py). With
--url it works under a key prefix of its own and deletes its keys at the end (--keep keeps them).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

URL_ENV = "JOBSTORE_SOAK_URL"  # the URL reaches workers through the environment, not argv
CODE_ENV = "JOBSTORE_SOAK_CODE"  # the copy of jobstore every worker imports (see soak())
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if os.environ.get(CODE_ENV):
    sys.path.insert(0, os.environ[CODE_ENV])

import jobstore  # noqa: E402
from jobstore import JobStoreError, LeaseLost  # noqa: E402

WORKSPACES = [f"ws{n}" for n in range(8)]
# What one attempt's "work" is: mostly short; sometimes longer than the lease with extend
# heartbeats; sometimes longer than the lease without extending (the job is usually taken over,
# and the late update_status refused with LeaseLost).
STUCK_FOR = 10.0  # seconds a run goes on when only jobs nothing can hand out are left
HEARTBEAT_SHARE = 0.04
OVERRUN_SHARE = 0.04
BUGS = ("lost", "stuck", "completed_twice", "acknowledged_but_not_recorded", "completed_by_unknown",
        "winner_not_holder", "refused_but_written", "handed_out_twice", "failed_unexpectedly",
        "refused_unexpectedly", "unexpected_status", "unknown_jobs", "verify_not_clean")


# -- the worker process ------------------------------------------------------------------------

def worker_main(args: argparse.Namespace) -> int:
    """Loop dequeue -> work -> complete, writing one JSON line per event to its own log file.

    Lines are written with one os.write each on an O_APPEND file, so a SIGKILL leaves at most
    one torn last line (the checker skips it). 'try' is written before update_status, 'done'
    only after it returned: a worker killed in between leaves a completion the checker finds
    in the record (its result names this worker and attempt) but not as 'done'.
    """
    rng = random.Random(args.seed)
    pid, parent = os.getpid(), os.getppid()
    fd = os.open(args.worker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(event: str, **fields) -> None:
        os.write(fd, (json.dumps({"e": event, "t": time.time(), **fields}) + "\n").encode())

    store = jobstore.open(os.environ[URL_ENV], "dual", prefix=args.prefix, lease=args.lease,
                          max_attempts=args.max_attempts)
    if args.list_grace is not None:
        store.context.list_grace = args.list_grace  # an internal knob (tests set it too)
    note("start", pid=pid, jobstore=str(Path(jobstore.__file__).parent))
    while not os.path.exists(args.stop_file) and os.getppid() == parent:
        try:
            job = store.dequeue(timeout=0.5)
        except JobStoreError as exc:
            note("error", stage="dequeue", error=repr(exc)[:500])
            time.sleep(0.1)
            continue
        if job is None:
            continue
        held = {"job": job.job_id, "attempt": job.attempts}
        note("claim", claim=job.claim, **held)
        stage, kind = "work", "short"
        try:
            kind = _work(store, job, rng, args.lease)
            stage = "complete"
            note("try", kind=kind, **held)
            store.update_status(job.job_id, "completed", workspace_id=job.workspace_id,
                                result={"worker": pid, "attempt": job.attempts}, claim=job.claim)
            note("done", kind=kind, **held)
        except LeaseLost as exc:
            note("lost", stage=stage, kind=kind, holder=exc.holder_attempt, **held)
        except jobstore.InvalidTransition as exc:  # checked: only a job failed meanwhile
            note("refused", stage=stage, kind=kind, error=str(exc)[:500], **held)
        except JobStoreError as exc:
            note("error", stage=stage, kind=kind, error=repr(exc)[:500], **held)
    return 0


def _work(store, job, rng: random.Random, lease: float) -> str:
    draw = rng.random()
    if draw < OVERRUN_SHARE:
        time.sleep(rng.uniform(1.3, 2.0) * lease)  # no extend: the lease runs out
        return "overrun"
    if draw < OVERRUN_SHARE + HEARTBEAT_SHARE:
        left = rng.uniform(1.5, 3.0) * lease
        while left > 0:  # raises LeaseLost if a late beat let another dequeue take the job
            beat = min(lease / 3, left)
            time.sleep(beat)
            left -= beat
            store.extend(job)
        return "heartbeat"
    time.sleep(rng.uniform(0, 0.1) * lease)
    return "short"


# -- the run: workers, killer, producer, migration driver --------------------------------------

class Workers:
    """The worker processes, and the killer thread that SIGKILLs one every ``every`` seconds."""

    def __init__(self, args, url: str, prefix: str, workdir: str, code: str):
        self.args, self.prefix, self.workdir = args, prefix, workdir
        self.env = {**os.environ, URL_ENV: url, CODE_ENV: code}
        self.stop_file = os.path.join(workdir, "stop")
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.live: list[subprocess.Popen] = []
        self.logs: dict[int, str] = {}  # pid -> log file
        self.killed: set[int] = set()
        self.crashed: list[dict] = []
        self.started = 0
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._kill_loop, daemon=True)

    def spawn(self) -> None:
        n = self.started
        self.started += 1
        log = os.path.join(self.workdir, f"worker-{n}.log")
        err = open(os.path.join(self.workdir, f"worker-{n}.err"), "wb")
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", log, "--prefix", self.prefix,
             "--lease", str(self.args.lease), "--max-attempts", str(self.args.max_attempts),
             "--seed", str(self.args.seed * 100_003 + n), "--stop-file", self.stop_file,
             *(["--list-grace", str(self.args.list_grace)] if self.args.list_grace is not None else [])],
            env=self.env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        proc.log = log  # type: ignore[attr-defined]
        proc.err = err.name  # type: ignore[attr-defined]
        self.live.append(proc)
        self.logs[proc.pid] = log

    def start(self, timeout: float = 30.0) -> None:
        """Start the workers, wait until each has opened its store, then start the killer."""
        with self.lock:
            for _ in range(self.args.workers):
                self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(self._ready(p) for p in self.live):
            time.sleep(0.05)
        self.thread.start()

    @staticmethod
    def _ready(proc: subprocess.Popen) -> bool:
        """Has it opened its store (its first log line)?"""
        log = proc.log  # type: ignore[attr-defined]
        return os.path.exists(log) and os.path.getsize(log) > 0

    def _kill_loop(self) -> None:
        # The victim is one that has worked for --min-life since it opened its store: on a
        # loaded machine starting a worker (Python, the imports, the store opened on a cluster)
        # can take seconds, several kill intervals, and killing each worker as soon as it is up
        # would leave the run with almost no work done (it then times out, nothing wrong).
        ready_since: dict[subprocess.Popen, float] = {}  # by process, not pid (pids are reused)
        while not self.halt.wait(self.args.kill_every):
            with self.lock:
                self._reap()
                now = time.monotonic()
                for proc in self.live:
                    if proc not in ready_since and self._ready(proc):
                        ready_since[proc] = now
                ready = [p for p in self.live
                         if p in ready_since and now - ready_since[p] >= self.args.min_life]
                if not ready:
                    continue
                victim = self.rng.choice(ready)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                self.killed.add(victim.pid)
                self.live.remove(victim)
                self.spawn()

    def _reap(self) -> None:
        """Workers that died on their own (an exception the worker does not expect) are replaced
        and reported: they fail the run."""
        for proc in [p for p in self.live if p.poll() is not None]:
            self.live.remove(proc)
            with open(proc.err, errors="replace") as f:  # type: ignore[attr-defined]
                tail = f.read()[-2000:]
            self.crashed.append({"pid": proc.pid, "exit": proc.returncode, "stderr": tail})
            self.spawn()

    def stop(self, grace: float) -> None:
        """Stop the killer, ask every worker to stop, SIGKILL those still running after ``grace``."""
        self.halt.set()
        self.thread.join()
        with self.lock:
            self._reap()
            Path(self.stop_file).touch()
            deadline = time.monotonic() + grace
            for proc in self.live:
                try:
                    proc.wait(max(0.01, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    self.killed.add(proc.pid)

    def log_files(self) -> dict[int, str]:
        with self.lock:  # the killer adds workers meanwhile
            return dict(self.logs)

    def kill_all(self) -> None:
        self.halt.set()
        with self.lock:
            for proc in self.live:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


class Producer(threading.Thread):
    """Enqueues the planned jobs: ``release(n, label)`` enqueues the next n, spread over ``spread``
    seconds, one enqueue each; every job's id and the step it was enqueued in are recorded."""

    def __init__(self, store, jobs: int, spread: float):
        super().__init__(daemon=True)
        self.store, self.spread = store, spread
        self.plan = [(uuid.uuid4().hex, WORKSPACES[n % len(WORKSPACES)]) for n in range(jobs)]
        self.enqueued: dict[str, dict] = {}
        self.requests: list[tuple[int, str]] = []
        self.cond = threading.Condition()
        self.done = threading.Event()
        self.closed = False
        self.error: str | None = None

    def release(self, n: int, label: str) -> None:
        with self.cond:
            self.requests.append((n, label))
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def enqueue_now(self, n: int, label: str) -> None:
        for job_id, ws in self.plan[len(self.enqueued):len(self.enqueued) + n]:
            self.store.enqueue(ws, "soak", {"n": len(self.enqueued)}, job_id=job_id)
            self.enqueued[job_id] = {"workspace": ws, "step": label}

    def run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.requests and not self.closed:
                        self.cond.wait()
                    if not self.requests:
                        break
                    n, label = self.requests.pop(0)
                for _ in range(n):
                    self.enqueue_now(1, label)
                    time.sleep(self.spread / max(n, 1))
        except Exception as exc:  # reported; the run then fails (not every job was enqueued)
            self.error = repr(exc)
        finally:
            self.done.set()


def walk(migration, rollback: bool) -> list[tuple[str, object]]:
    """The steps of the migration's safe path, forward and (with ``rollback``) back."""

    def verify():
        # The runbook's step: verify; when it is not clean, verify --repair, then verify again
        # (three rounds at most; still not clean: the walk fails, as target-only would be refused).
        # On Redis Cluster a write reaches a job's two copies one after the other, so a worker
        # killed in between leaves a pair for repair (docs/cluster.md); on standalone Redis each
        # write is one script, and any repair needed is reported as a problem.
        reports = []
        for _ in range(3):
            reports.append(("verify", migration.verify()))
            if reports[-1][1].clean:
                break
            reports.append(("repair", migration.verify(repair=True)))
        return reports

    steps: list[tuple[str, object]] = [
        ("off (legacy)", lambda: time.sleep(1.0)),  # set before the first jobs were enqueued
        ("dual-write", lambda: migration.set_phase("dual-write")),
        ("backfill", lambda: migration.backfill()),
        ("verify", verify),
        ("read-target 50%", lambda: (migration.set_phase("read-target"),
                                     migration.set_rollout(percent=50))),
        ("read-target 100%", lambda: migration.set_rollout(percent=100)),
        ("target-only", lambda: migration.set_phase("target-only")),
        ("cleanup", lambda: migration.cleanup()),
    ]
    if rollback:
        steps += [
            ("reverse-sync", lambda: migration.reverse_sync()),
            ("back to read-target", lambda: migration.set_phase("read-target")),
            ("reverse-sync again", lambda: migration.reverse_sync()),
            ("back to dual-write", lambda: migration.set_phase("dual-write")),
            ("final verify", verify),
        ]
    return steps


class Driver(threading.Thread):
    """Walks the migration, releasing a share of the jobs to the producer at every step."""

    def __init__(self, migration, producer: Producer, per_step: list[int], steps, dwell: float,
                 deadline: float, t0: float):
        super().__init__(daemon=True)
        self.migration, self.producer, self.per_step = migration, producer, per_step
        self.steps, self.dwell, self.deadline, self.t0 = steps, dwell, deadline, t0
        self.timeline: list[dict] = []
        self.error: str | None = None
        self.finished = False

    def run(self) -> None:
        try:
            for (label, action), n in zip(self.steps, self.per_step):
                if time.monotonic() > self.deadline:
                    self.error = f"time bound hit before step {label!r}"
                    return
                began = time.monotonic()
                entry = {"step": label, "at": round(began - self.t0, 2), "wall": time.time()}
                self.timeline.append(entry)
                progress(f"[{entry['at']:6.1f}s] {label}")
                self.producer.release(n, label)
                outcome = action()
                entry["seconds"] = round(time.monotonic() - began, 2)
                entry.update(_describe(outcome))
                if isinstance(outcome, list) and not outcome[-1][1].clean:
                    self.error = f"{label}: not clean after {len(outcome)} tries: {entry}"
                    return
                time.sleep(self.dwell)
            self.finished = True
        except Exception as exc:  # reported; the run then fails (the walk did not finish)
            self.error = f"{self.timeline[-1]['step']}: {exc!r}"
        finally:
            self.producer.close()


def _describe(outcome) -> dict:
    if isinstance(outcome, list):  # verify reports
        return {"verify": [{"run": run, "clean": r.clean, "problems": r.problems,
                            "repaired": r.repaired, "checked_source": r.checked_source,
                            "checked_target": r.checked_target,
                            **({"examples": r.examples} if r.problems else {})}
                           for run, r in outcome]}
    if hasattr(outcome, "counts"):  # a pass
        return {"counts": dict(outcome.counts)}
    return {}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- reading the logs, and the check -----------------------------------------------------------

class Logs:
    """Every worker's events, read incrementally; a line without its newline is left for later
    (or, at the end, counted as torn: its worker was killed while writing it)."""

    def __init__(self):
        self.offsets: dict[str, int] = {}
        self.events: list[dict] = []
        self.done: set[str] = set()
        self.torn = 0

    def read(self, files: dict[int, str], final: bool = False) -> None:
        for pid, path in files.items():
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets.get(path, 0))
                    data = f.read()
            except FileNotFoundError:
                continue
            complete = data[:data.rfind(b"\n") + 1]
            self.offsets[path] = self.offsets.get(path, 0) + len(complete)
            for line in complete.splitlines():
                self._add(pid, line)
            if final and len(data) > len(complete):
                self.torn += 1

    def _add(self, pid: int, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.torn += 1
            return
        event["pid"] = pid
        self.events.append(event)
        if event["e"] == "done":
            self.done.add(event["job"])


def snapshot(store, enqueued: dict[str, dict]) -> dict:
    """Every enqueued job's record now, and what holds the non-terminal ones (queue, leases)."""
    records = {job_id: store.get(job_id, workspace_id=meta["workspace"])
               for job_id, meta in enqueued.items()}
    client = store.client
    queue = client.lrange(store.keys.queue, 0, -1)
    leases = client.zrange(store.keys.leases, 0, -1, withscores=True)
    listed = []
    for member, _ in leases:
        if member.startswith("list:"):
            listed += client.lrange(member[len("list:"):], 0, -1)
    # Redis Cluster: a pending job's claim arbiter (SET NX) still held by a dequeue that died
    # makes the next dequeue of its entry drop the entry (it takes it for a duplicate).
    arbiters = set()
    if store.driver.cluster:
        for job_id, job in records.items():
            if job is not None and job.status.value == "pending" and client.exists(
                    store.keys.claimed(job.workspace_id, job_id, repr(job.created_at))):
                arbiters.add(job_id)
    return {"records": records, "queue": queue, "leases": leases, "claim_lists": listed,
            "arbiters": arbiters}


def check(enqueued: dict[str, dict], logs: Logs, killed: set[int], snap: dict,
          timeline: list[dict], dwell: float, cluster: bool) -> dict:
    """What the records and the workers' logs say, job by job."""
    by_job: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    lost_by_stage, kinds, errors = Counter(), Counter(), []
    for ev in logs.events:
        if "job" in ev:
            by_job[ev["job"]][ev["e"]].append(ev)
        if ev["e"] == "lost":
            lost_by_stage[ev["stage"]] += 1
        if ev["e"] in ("try", "lost"):
            kinds[ev["kind"]] += 1
        if ev["e"] == "error":
            errors.append(ev)
        if ev["e"] == "refused":
            kinds[ev["kind"]] += 1
    problems: dict[str, list] = defaultdict(list)
    counts = Counter()
    failed_explained = []
    queued = set(snap["queue"]) | set(snap["claim_lists"])
    leased = {member for member, _ in snap["leases"]}
    for job_id, meta in enqueued.items():
        events = by_job.get(job_id, {})
        record = snap["records"][job_id]
        done = [(e["pid"], e["attempt"]) for e in events.get("done", [])]
        tried = {(e["pid"], e["attempt"]) for e in events.get("try", [])}
        refused = {(e["pid"], e["attempt"]) for e in events.get("lost", []) + events.get("refused", [])
                   if e["stage"] == "complete"}
        invalid = [e["attempt"] for e in events.get("refused", [])]
        holders = Counter(e["attempt"] for e in events.get("claim", []))
        twice = [a for a, n in holders.items() if n > 1]
        if twice:
            problems["handed_out_twice"].append({"job": job_id, "attempts": twice})
        if record is None:
            problems["lost"].append({"job": job_id, **meta})
            continue
        status = record.status.value
        if record.attempts > 1:
            counts["reclaimed_jobs"] += 1
            counts["extra_handouts"] += record.attempts - 1
        if status == "completed":
            result = record.result if isinstance(record.result, dict) else {}
            winner = (result.get("worker"), result.get("attempt"))
            where = {"job": job_id, "record_result": result, "done": done,
                     "record_attempts": record.attempts}
            if len(done) > 1:
                problems["completed_twice"].append(where)
            elif done and done[0] != winner:
                problems["acknowledged_but_not_recorded"].append(where)
            elif winner in refused:
                problems["refused_but_written"].append(where)
            elif not done and not (winner in tried and winner[0] in killed):
                problems["completed_by_unknown"].append({**where, "tried": sorted(tried)})
            elif record.attempts != winner[1]:
                problems["winner_not_holder"].append(where)
            else:
                counts["completed_once"] += 1
                counts["completed_unconfirmed" if not done else "completed_confirmed"] += 1
        elif status == "failed" and (record.error or "").startswith("lease expired") and not done:
            counts["failed_max_attempts"] += 1
            # The last holder's late update_status: refused with InvalidTransition (failed ->
            # completed), not LeaseLost, as its claim is still the record's; nothing written.
            counts["late_completion_refused_as_invalid_transition"] += len(invalid)
            if any(a != record.attempts for a in invalid):
                problems["refused_unexpectedly"].append({"job": job_id, "attempts": invalid})
            failed_explained.append({"job": job_id, "error": record.error,
                                     "attempts": _fates(events, killed)})
        elif status == "failed":
            problems["failed_unexpectedly"].append({"job": job_id, "error": record.error, "done": done})
        elif status in ("pending", "running"):
            entry_held = any(e.split(":")[1:2] == [job_id] for e in queued)
            lease_held = record.claim in leased
            arbiter = job_id in snap["arbiters"]
            where = {"job": job_id, "status": status, "attempts": record.attempts,
                     "claim": record.claim, "queued": entry_held, "leased": lease_held,
                     "arbiter_held": arbiter}
            if (status == "pending" and entry_held and not arbiter) or (status == "running" and lease_held):
                problems["unfinished"].append(where)  # still on its way: the time bound hit
            else:
                problems["stuck"].append(where)
        else:
            problems["unexpected_status"].append({"job": job_id, "status": status})
        if invalid and status != "failed":
            problems["refused_unexpectedly"].append({"job": job_id, "attempts": invalid, "status": status})
    for step in timeline:
        for run in step.get("verify", []):
            if run["run"] == "repair":
                counts["verify_repaired_records"] += run["repaired"]
            elif not run["clean"]:
                counts["verify_not_clean"] += 1
                if not cluster:  # every write is one script there: nothing to repair
                    problems["verify_not_clean"].append({"step": step["step"], **run})
    unknown = {e["job"] for e in logs.events if "job" in e} - set(enqueued)
    if unknown:
        problems["unknown_jobs"].append({"jobs_not_enqueued_here": sorted(unknown)[:10]})
    return {
        "counts": dict(counts),
        "lease_lost": sum(lost_by_stage.values()),
        "lease_lost_by_stage": {"extend": lost_by_stage["work"], "update_status": lost_by_stage["complete"]},
        "work_kinds": dict(kinds),
        "worker_errors": errors[:20],
        "worker_error_count": len(errors),
        "problems": {k: v[:20] for k, v in problems.items()},
        "problem_counts": {k: len(v) for k, v in problems.items()},
        # What would be a bug in jobstore (everything in problems but 'unfinished': jobs still on
        # their way when the time bound hit).
        "bugs": {k: len(problems[k]) for k in BUGS if problems.get(k)},
        "failed_max_attempts": failed_explained[:20],
        "per_step": _per_step(enqueued, logs, timeline, dwell),
    }


def _fates(events: dict, killed: set[int]) -> list[dict]:
    """How each hand-out of a job ended, from its holders' logs."""
    fates = []
    for claim in sorted(events.get("claim", []), key=lambda e: e["attempt"]):
        key = (claim["pid"], claim["attempt"])
        lost = [e for e in events.get("lost", []) + events.get("refused", [])
                if (e["pid"], e["attempt"]) == key]
        if lost:
            fate = f"lease ran out ({lost[0]['kind']}; {lost[0]['e']} at {lost[0]['stage']})"
        elif claim["pid"] in killed:
            fate = "worker killed"
        else:
            fate = "unknown"
        fates.append({"attempt": claim["attempt"], "worker": claim["pid"], "fate": fate})
    return fates


def _per_step(enqueued: dict, logs: Logs, timeline: list[dict], dwell: float) -> list[dict]:
    """Jobs enqueued, and completions acknowledged to workers, before, during each step of, and
    after the walk (a step lasts from its start to the next one's)."""
    rows = [{"step": "before the walk", "enqueued": 0, "completed": 0}]
    rows += [{"step": s["step"], "enqueued": 0, "completed": 0} for s in timeline]
    rows.append({"step": "after the walk", "enqueued": 0, "completed": 0})
    index = {s["step"]: n + 1 for n, s in enumerate(timeline)}
    for meta in enqueued.values():
        rows[index.get(meta["step"], 0)]["enqueued"] += 1
    starts = [s["wall"] for s in timeline]
    end = timeline[-1]["wall"] + timeline[-1].get("seconds", 0) + dwell if timeline else 0.0
    for ev in logs.events:
        if ev["e"] == "done":
            rows[len(rows) - 1 if timeline and ev["t"] >= end else bisect.bisect_right(starts, ev["t"])
                 ]["completed"] += 1
    return rows


# -- the whole run ------------------------------------------------------------------------------

def soak(url: str, args: argparse.Namespace) -> dict:
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    # Workers start all through the run: they import a copy of jobstore taken now, so that an
    # edit to the working tree mid-run cannot make the run speak for several versions.
    code = os.path.join(workdir_for(args), "code")
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(Path(jobstore.__file__).parent, os.path.join(code, "jobstore"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    source = source_digest(Path(code) / "jobstore")
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    workdir = workdir_for(args)
    store = jobstore.open(url, "dual", prefix=prefix, lease=args.lease, max_attempts=args.max_attempts)
    migration = store.migration()
    steps = walk(migration, not args.no_rollback)
    before = int(args.jobs * args.before)
    rest = args.jobs - before
    per_step = [rest // len(steps) + (1 if n < rest % len(steps) else 0) for n in range(len(steps))]
    producer = Producer(store, args.jobs, spread=args.dwell + 0.5)
    workers = Workers(args, url, prefix, workdir, code)
    logs = Logs()
    driver = Driver(migration, producer, per_step, steps, args.dwell, deadline, t0)
    timed_out, stuck_since = False, None
    try:
        migration.set_phase("off")  # the legacy layout alone, as before the migration
        producer.enqueue_now(before, "before")
        progress(f"[{time.monotonic() - t0:6.1f}s] {before} jobs enqueued; starting "
                 f"{args.workers} workers, a kill every {args.kill_every}s, lease {args.lease}s")
        workers.start()
        producer.start()
        driver.start()
        while True:
            time.sleep(0.5)
            logs.read(workers.log_files())
            if time.monotonic() > deadline:
                timed_out = True
                break
            if driver.is_alive() or not producer.done.is_set():
                continue
            if driver.error or producer.error:
                break
            left = {j: producer.enqueued[j] for j in producer.enqueued if j not in logs.done}
            if not any(_pending(store, j, meta) for j, meta in left.items()):
                break
            # Jobs nothing will ever hand out again (no queue entry, no lease) fail the run
            # whenever it ends: once that is all that is left for STUCK_FOR seconds, end now.
            if not _all_stuck(store, {j: m for j, m in left.items() if _pending(store, j, m)}):
                stuck_since = None
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since > STUCK_FOR:
                progress(f"[{time.monotonic() - t0:6.1f}s] only stuck jobs left for {STUCK_FOR}s")
                break
        progress(f"[{time.monotonic() - t0:6.1f}s] stopping workers")
        workers.stop(grace=3 * args.lease + 2)
        logs.read(workers.log_files(), final=True)
        snap = snapshot(store, producer.enqueued)
        report = check(producer.enqueued, logs, workers.killed, snap, driver.timeline, args.dwell,
                       store.driver.cluster)
        if source != args.imported_source:  # edited between this process's import and the copy
            report["problems"]["jobstore_source_changed"] = [str(Path(jobstore.__file__).parent)]
        elsewhere = {e["jobstore"] for e in logs.events if e["e"] == "start"} - {
            os.path.join(code, "jobstore")}
        if elsewhere:
            report["problems"]["workers_ran_other_code"] = sorted(elsewhere)
        for kind in ("jobstore_source_changed", "workers_ran_other_code"):
            if kind in report["problems"]:
                report["problem_counts"][kind] = len(report["problems"][kind])
    finally:
        workers.kill_all()
        if args.url and not args.keep:
            _delete_prefix(store.client, prefix)
        store.close()
        if not args.logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(code, ignore_errors=True)
    counts = report["counts"]
    report.update({
        "ok": False,
        "elapsed_seconds": round(time.monotonic() - t0, 1),
        "timed_out": timed_out,
        "walk_finished": driver.finished,
        "walk_error": driver.error,
        "producer_error": producer.error,
        "settings": {k: getattr(args, k) for k in ("workers", "jobs", "seconds", "kill_every", "min_life", "lease",
                                                    "max_attempts", "seed", "before", "dwell",
                                                    "list_grace")}
                    | {"cluster": url.startswith("redis+cluster"), "rollback": not args.no_rollback},
        "jobstore": {"version": jobstore.__version__, "path": str(Path(jobstore.__file__).parent),
                     "source_digest": source, "workers_ran": "a copy taken at the start"},
        "enqueued": len(producer.enqueued),
        "kills": len(workers.killed),
        "workers_started": workers.started,
        "workers_crashed": workers.crashed,
        "torn_log_lines": logs.torn,
        "reclaims": counts.get("extra_handouts", 0),
        "timeline": [{k: v for k, v in s.items() if k != "wall"} for s in driver.timeline],
        "leftover": {"queue": len(snap["queue"]), "leases": len(snap["leases"]),
                     "claim_list_entries": len(snap["claim_lists"])},
    })
    report["ok"] = (
        not timed_out and driver.finished and not producer.error
        and report["enqueued"] == args.jobs
        and not report["problem_counts"]
        and not report["worker_error_count"] and not workers.crashed
        and counts.get("completed_once", 0) + counts.get("failed_max_attempts", 0) == args.jobs
    )
    return report


def source_digest(package: Path) -> str:
    """A digest of a jobstore package's sources (paths relative to it)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def workdir_for(args: argparse.Namespace) -> str:
    """The run's folder (worker logs, the copy of jobstore): --logs, or a temp dir made once."""
    if not getattr(args, "workdir", None):
        args.workdir = os.path.abspath(args.logs or tempfile.mkdtemp(prefix="jobstore-soak-"))
        os.makedirs(args.workdir, exist_ok=True)
    return args.workdir


def _all_stuck(store, remaining: dict[str, dict]) -> bool:
    """Whether no job of ``remaining`` can be handed out any more: each is gone, or pending with
    no queue entry (or one whose claim arbiter a dead dequeue holds, which is dropped when met)."""
    snap = snapshot(store, remaining)
    queued = set(snap["queue"]) | set(snap["claim_lists"])
    for job_id, job in snap["records"].items():
        if job is not None and job.status.value == "running":
            return False  # leased: it goes back when the lease runs out
        if job is not None and job_id not in snap["arbiters"] and any(
                e.split(":")[1:2] == [job_id] for e in queued):
            return False
    return True


def _pending(store, job_id: str, meta: dict) -> bool:
    job = store.get(job_id, workspace_id=meta["workspace"])
    return job is None or job.status.value in ("pending", "running")


def _delete_prefix(client, prefix: str) -> None:
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.unlink(key)
    except Exception as exc:  # the run's outcome matters more than its leftovers
        progress(f"could not delete the run's keys ({prefix}:*): {exc!r}")


def render(report: dict) -> str:
    c = report["counts"]
    lines = [
        f"soak: {'OK' if report['ok'] else 'FAILED'} in {report['elapsed_seconds']}s "
        f"({'cluster' if report['settings']['cluster'] else 'standalone'}, "
        f"{report['settings']['workers']} workers, lease {report['settings']['lease']}s, "
        f"a kill every {report['settings']['kill_every']}s; jobstore {report['jobstore']['version']} "
        f"from {report['jobstore']['path']}, source digest {report['jobstore']['source_digest']})",
        f"  jobs enqueued        {report['enqueued']}",
        f"  completed once       {c.get('completed_once', 0)}  (acknowledged to the worker: "
        f"{c.get('completed_confirmed', 0)}; written, then its worker killed before it logged the "
        f"reply: {c.get('completed_unconfirmed', 0)})",
        f"  failed max_attempts  {c.get('failed_max_attempts', 0)}  (every one of its "
        f"{report['settings']['max_attempts']} hand-outs ended by a kill or an expired lease)",
        f"  stuck / lost / twice {report['problem_counts'].get('stuck', 0)} / "
        f"{report['problem_counts'].get('lost', 0)} / {report['problem_counts'].get('completed_twice', 0)}",
        f"  kills                {report['kills']}  (workers started: {report['workers_started']}, "
        f"crashed on their own: {len(report['workers_crashed'])})",
        f"  re-claims            {report['reclaims']} hand-outs after a lease ran out, over "
        f"{c.get('reclaimed_jobs', 0)} jobs",
        f"  LeaseLost seen       {report['lease_lost']}  (extend {report['lease_lost_by_stage']['extend']}, "
        f"update_status {report['lease_lost_by_stage']['update_status']})",
        f"  work kinds           {report['work_kinds']}",
        f"  torn log lines       {report['torn_log_lines']}",
        "  per step             " + ", ".join(
            f"{r['step']}: +{r['enqueued']}/{r['completed']} done" for r in report["per_step"]),
    ]
    for step in report["timeline"]:
        extra = step.get("counts") or " -> ".join(map(_verify_run, step.get("verify", []))) or ""
        lines.append(f"    {step['at']:6.1f}s {step['step']:<22} {step.get('seconds', '?')}s {extra}")
    for failed in report["failed_max_attempts"]:
        lines.append(f"  failed {failed['job']}: " + "; ".join(
            f"#{a['attempt']} {a['fate']}" for a in failed["attempts"]))
    for key in ("walk_error", "producer_error"):
        if report[key]:
            lines.append(f"  {key.replace('_', ' ')}: {report[key]}")
    if report["timed_out"]:
        lines.append(f"  TIME BOUND HIT after {report['settings']['seconds']}s")
    for kind, examples in report["problems"].items():
        lines.append(f"  PROBLEM {kind} ({report['problem_counts'][kind]}): {examples[:3]}")
    for err in report["worker_errors"][:5]:
        lines.append(f"  WORKER ERROR {err}")
    for crash in report["workers_crashed"][:3]:
        lines.append(f"  WORKER CRASHED {crash}")
    return "\n".join(lines)


def _verify_run(run: dict) -> str:
    """``verify clean``, ``verify 1 problem(s) (differing ws0/ab12: _rev, claim)``, ``repair 1``."""
    if run["run"] == "repair":
        return f"repair ({run['repaired']} repaired)"
    if run["clean"]:
        return "verify clean"
    seen = [f"{kind} {e.get('workspace_id')}/{str(e.get('job_id'))[:8]}"
            + (f": {', '.join(e['fields'])}" if e.get("fields") else "")
            for kind, examples in run.get("examples", {}).items() for e in examples[:2]]
    return f"verify {run['problems']} problem(s) ({'; '.join(seen)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis to use (default: start a private redis-server)")
    parser.add_argument("--cluster", action="store_true", help="start a private 3-node cluster")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=120.0, help="hard bound on the run")
    parser.add_argument("--kill-every", type=float, default=0.5, help="seconds between SIGKILLs")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--min-life", type=float, default=None,
                        help="seconds a worker works, once up, before it can be killed "
                             "(default: twice the lease)")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--before", type=float, default=0.4,
                        help="share of the jobs enqueued before the migration starts")
    parser.add_argument("--dwell", type=float, default=2.0, help="pause after each step")
    parser.add_argument("--no-rollback", action="store_true", help="stop the walk after cleanup")
    parser.add_argument("--list-grace", type=float, default=None,
                        help="seconds before a dead dequeue's claim list goes back to the queue "
                             "(default: jobstore's, 30)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="with --url: keep the run's keys")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--logs", help="keep the workers' event logs (JSON lines) in this folder")
    # Internal: run as one worker process.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    args.imported_source = source_digest(Path(jobstore.__file__).parent)
    if args.workers < 1 or args.jobs < 1 or args.seconds <= 0 or args.kill_every <= 0 \
            or args.lease <= 0 or args.max_attempts < 1 or not 0 <= args.before <= 1:
        parser.error("--workers, --jobs, --max-attempts must be >= 1; --seconds, --kill-every, "
                     "--lease > 0; --before 0..1")
    if args.min_life is None:
        args.min_life = 2 * args.lease
    elif args.min_life < 0:
        parser.error("--min-life must be >= 0")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    try:
        if args.url:
            report = soak(args.url, args)
        else:
            from tests.support.servers import RedisCluster, RedisServer

            noeviction = ["--maxmemory-policy", "noeviction"]
            server = RedisCluster(args=noeviction) if args.cluster else RedisServer(args=noeviction)
            try:
                server.start()
            except RuntimeError as exc:  # no redis-server / redis-cli, or it would not start
                print(f"soak: could not start Redis: {exc}", file=sys.stderr)
                return 2
            try:
                report = soak(server.url, args)
            finally:
                server.stop()
    except (jobstore.ConfigError, jobstore.StoreUnavailable) as exc:  # bad URL, evicting Redis, no Redis
        print(f"soak: could not run: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str) if args.json else render(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
