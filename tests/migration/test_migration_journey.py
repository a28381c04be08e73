"""The whole migration under concurrent traffic: nothing lost, duplicated or revived.

CI runs it with a few thousand jobs; benchmarks/migrate_100k.py runs the same journey with
100,000 (see docs/migration.md).
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

import jobstore
from tests.conftest import keys
from jobstore.demo import LiveTraffic

# The core real-Redis tests: .ci/run runs them on every supported server build too.
pytestmark = pytest.mark.core

WORKSPACES = [f"ws{n}" for n in range(6)]


class Worker(threading.Thread):
    """Dequeues and completes jobs through its own dual store, throughout the migration."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.store = jobstore.open(url, "dual")
        self.claimed: list[str] = []
        self.stop_event = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop_event.is_set():
                job = self.store.dequeue(timeout=0.05)
                if job is not None:
                    self.claimed.append(job.job_id)
                    try:
                        self.store.update_status(job.job_id, "completed", workspace_id=job.workspace_id)
                    except (jobstore.JobNotFound, jobstore.InvalidTransition):
                        pass  # deleted or cancelled by the traffic meanwhile
        except BaseException as exc:
            self.error = exc

    def stop(self):
        self.stop_event.set()
        self.join()
        if self.error:
            raise self.error


def test_migration_under_live_traffic(backend):
    jobs = 1000 if backend.startswith("memory://") else 3000  # fakeredis is slower
    legacy = jobstore.open(backend, "legacy")
    seeded = legacy.enqueue_many([(WORKSPACES[n % 6], "seed", {"n": n}) for n in range(jobs)])
    store = jobstore.open(backend, "dual")
    migration = store.migration()
    migration.set_phase("off")

    traffic = [LiveTraffic(jobstore.open(backend, "dual"), WORKSPACES, seed=s) for s in (1, 2)]
    workers = [Worker(backend) for _ in range(2)]
    for thread in traffic + workers:
        thread.start()

    migration.set_phase("dual-write")
    backfill = migration.backfill(batch=200)
    assert backfill.finished and backfill.counts.get("copied", 0) > 0
    verify = migration.verify()
    assert verify.clean, json.dumps(verify.as_dict())
    migration.set_phase("read-target")
    migration.set_rollout(percent=30)
    migration.set_rollout(percent=100)
    migration.set_phase("target-only")
    cleanup = migration.cleanup(batch=200)
    assert cleanup.counts.get("deleted", 0) >= jobs // 2

    for thread in traffic:
        thread.stop()
    # Drain: jobs enqueued in every earlier phase are still dequeued now, in target-only.
    for worker in workers:
        worker.stop()
    final_worker = Worker(backend)
    final_worker.stop_event.set()
    while (job := final_worker.store.dequeue()) is not None:
        final_worker.claimed.append(job.job_id)

    alive = {job.job_id: job.workspace_id for job in seeded}
    deleted: set[str] = set()
    for t in traffic:
        alive.update(t.alive)
        deleted |= t.deleted
    for job_id in deleted:
        alive.pop(job_id, None)

    target = jobstore.open(backend, "workspace")
    lost = [j for j, ws in alive.items() if target.get(j, workspace_id=ws) is None]
    assert lost == []
    revived = [j for j in deleted if any(target.get(j, workspace_id=ws) for ws in WORKSPACES)]
    assert revived == []
    claims = Counter(c for w in workers + [final_worker] for c in w.claimed)
    assert claims and max(claims.values()) == 1  # never handed out twice
    pending = [j for j, ws in alive.items() if target.get(j, workspace_id=ws).status == "pending"]
    assert pending == []  # every job not cancelled or deleted was dequeued
    assert keys(legacy.client, "ai:jobs:*") == []  # no source writes happen in target-only
    final = migration.verify()
    assert final.clean and final.checked_source == 0  # the source is empty after cleanup
