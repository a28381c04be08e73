"""``jobstore demo``: a whole migration, legacy -> workspace, with live traffic throughout."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from .errors import ConfigError, InvalidTransition, JobStoreError
from .migration import plural
from .store import open as open_store


class LiveTraffic(threading.Thread):
    """A service at work: enqueues, status updates and deletes, remembering what it did."""

    def __init__(self, store, workspaces: list[str], seed: int = 7):
        super().__init__(daemon=True)
        self.store = store
        self.workspaces = workspaces
        self.random = random.Random(seed)
        self.stop_event = threading.Event()
        self.alive: dict[str, str] = {}  # job id -> workspace, for jobs that must still exist
        self.deleted: set[str] = set()
        self.operations = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.step()
                time.sleep(0.002)
        except BaseException as exc:  # reported by the demo, never swallowed
            self.error = exc

    def step(self) -> None:
        roll = self.random.random()
        if roll < 0.5 or not self.alive:
            ws = self.random.choice(self.workspaces)
            job = self.store.enqueue(ws, "render", {"page": self.random.randint(1, 99)})
            self.alive[job.job_id] = ws
        elif roll < 0.85:
            job_id = self.random.choice(list(self.alive))
            job = self.store.get(job_id, workspace_id=self.alive[job_id])
            if job is not None and job.status.value == "pending":
                try:
                    self.store.update_status(job_id, "cancelled", workspace_id=self.alive[job_id])
                except InvalidTransition:
                    pass  # a worker claimed it first
        else:
            job_id = self.random.choice(list(self.alive))
            if self.store.delete(job_id, workspace_id=self.alive.pop(job_id)):
                self.deleted.add(job_id)
        self.operations += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        if self.error is not None:
            raise self.error


def prefix_in_use(client, prefix: str) -> bool:
    """Whether any key ``<prefix>:*`` exists: the whole keyspace is scanned (on a Cluster,
    ``scan_iter`` walks every primary), stopping at the first match. One SCAN page is not
    enough: MATCH filters after the page is taken, so a prefix's keys among many others are
    usually on a later page. A prefix never holds glob characters (``validation.prefix``)."""
    return next(iter(client.scan_iter(match=f"{prefix}:*", count=1000)), None) is not None


def run_demo(url: str, *, prefix: str = "demo", jobs: int = 2000, echo: Callable[[str], None] = print,
             source: str = "legacy", target: str = "workspace", allow_eviction: bool = False) -> dict:
    """Run the journey and return its numbers (the tests check them).

    ``allow_eviction``: run on a Redis whose maxmemory-policy is not noeviction (else refused
    with EvictionPolicyError before anything is written)."""
    legacy = open_store(url, source, prefix=prefix, allow_eviction=allow_eviction)
    if not url.startswith("memory://") and prefix_in_use(legacy.client, prefix):
        legacy.close()
        raise ConfigError(
            f"keys under '{prefix}:' exist already on this Redis; the demo only runs on an empty "
            "prefix (choose another with --prefix)"
        )
    workspaces = [f"ws{n}" for n in range(8)]
    numbers: dict[str, object] = {}

    echo(f"1. The service runs on '{source}': {jobs} jobs exist before the migration.")
    seeded = legacy.enqueue_many([(workspaces[n % 8], "index", {"n": n}) for n in range(jobs)])
    truth = {job.job_id: job.workspace_id for job in seeded}

    store = open_store(url, "dual", prefix=prefix, source=source, target=target,
                       allow_eviction=allow_eviction)
    migration = store.migration()
    migration.set_phase("off")
    echo(f"2. Every process switches to 'dual' (phase off), then dual writes begin: {source} and "
         f"{target} are written in one atomic step.")
    migration.set_phase("dual-write")

    traffic = LiveTraffic(open_store(url, "dual", prefix=prefix, source=source, target=target,
                                     allow_eviction=allow_eviction), workspaces)
    traffic.start()
    echo("3. Live traffic starts: enqueues, updates and deletes, all through the migration.")

    report = migration.backfill(batch=250)
    numbers["backfill"] = report.counts
    echo(f"4. Backfill copied {report.counts.get('copied', 0)} records "
         f"({report.counts.get('exists', 0)} already there) in {report.seconds:.2f}s.")

    verify = migration.verify()
    numbers["verify"] = verify.as_dict()
    echo(f"5. Verify: {verify.checked_source} records compared, "
         f"{plural(verify.problems, 'problem')}.")
    if not verify.clean:
        raise JobStoreError(f"verify found problems: {verify.examples}")

    migration.set_phase("read-target")
    migration.set_rollout(percent=50)
    echo("6. Reads switch to the target for 50% of workspaces (sticky), then for all.")
    migration.set_rollout(percent=100)

    migration.set_phase("target-only")
    echo(f"7. Target only: '{source}' receives no more writes.")

    cleanup = migration.cleanup(batch=250)
    numbers["cleanup"] = cleanup.counts
    echo(f"8. Cleanup deleted {cleanup.counts.get('deleted', 0)} {source} records whose target "
         f"copy is the same job ({cleanup.counts.get('kept', 0)} kept).")

    traffic.stop()
    truth.update(traffic.alive)
    for job_id in traffic.deleted:
        truth.pop(job_id, None)
    final = open_store(url, target, prefix=prefix, allow_eviction=allow_eviction)
    lost = [job_id for job_id, ws in truth.items() if final.get(job_id, workspace_id=ws) is None]
    revived = [job_id for job_id in traffic.deleted
               if any(final.get(job_id, workspace_id=ws) for ws in workspaces)]
    left = sum(1 for _ in legacy.client.scan_iter(match=legacy.strategy.schemas[0].scan_pattern(), count=1000))
    numbers.update(traffic=traffic.operations, jobs=len(truth), lost=len(lost), revived=len(revived),
                   source_left=left)
    echo(f"9. Done. {traffic.operations} live operations ran meanwhile; {len(truth)} jobs live on "
         f"in '{target}', {len(lost)} lost, {len(revived)} deleted jobs revived, {left} {source} "
         "records left.")
    for opened in (legacy, store, traffic.store, final):
        opened.close()
    return numbers
