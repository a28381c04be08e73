"""A plain in-memory model of the store's operations and guarantees (docs/api.md,
docs/guarantees.md).

The state machines of :mod:`jobstore.testing.stateful` run every operation on a real
:class:`jobstore.JobStore` and on a :class:`StoreModel`, and compare. The model knows nothing
about Redis, keys or strategies: jobs live in a dict keyed by ``(workspace_id, job_id)``, the
queue is the order jobs were enqueued in. It raises jobstore's own errors, so that outcomes
compare one to one.

The one thing a strategy changes is the scope of a job id (:attr:`StoreModel.ids_per_store`):
a schema without ``${workspace_id}`` in its keys (``legacy``) holds one job per id in the whole
store, and a strategy is as strict as the strictest schema it may hold a job in (``dual`` over
``legacy`` refuses an id that any workspace holds; see :data:`BY_DESIGN` for the one exception).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, cast

from ..errors import InvalidArgument, InvalidTransition, JobExists, JobNotFound
from ..codec import encode_json
from ..job import Job, JobStatus
from ..strategy import Strategy

__all__ = ["BY_DESIGN", "JobView", "ModelJob", "StoreModel", "ids_per_store", "job_view"]

# What :func:`job_view` gives: job_id, workspace_id, action, status, params as JSON text, result
# as JSON text (None: none), error.
JobView = tuple[str, str, str, str, str, str | None, str | None]

# Operation sequences whose outcome differs between stores by design (docs/migration.md says
# why). The state machines steer clear of them; tests/migration/test_migration.py tests each directly.
BY_DESIGN: dict[str, str] = {
    "target-only-id-scope": (
        "dual in a phase that writes only workspace-scoped schemas (target-only over legacy) "
        "accepts an id that another workspace holds, as the target alone would; reverse sync "
        "then counts it as foreign and leaving target-only stays refused until it is resolved"
    ),
}


def ids_per_store(strategy: Strategy) -> bool:
    """Whether ``strategy`` holds one job per id in the whole store (else one per workspace)."""
    return any(not schema.scoped for schema in strategy.routing(None).known)


def job_view(job: Job | ModelJob | None) -> JobView | None:
    """What the contract lets a reader see of a job, timestamps left out (they differ by store).

    JSON values compare as their canonical JSON text, so ``1`` and ``True`` stay different.
    """
    if job is None:
        return None
    return (
        job.job_id,
        job.workspace_id,
        job.action,
        JobStatus(job.status).value,
        encode_json(job.params),
        None if job.result is None else encode_json(job.result),
        job.error,
    )


@dataclass
class ModelJob:
    """A job as the model holds it. ``seq``: position in the store-wide enqueue order."""

    job_id: str
    workspace_id: str
    action: str
    status: JobStatus
    params: dict[str, Any]
    result: Any = None
    error: str | None = None
    seq: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.workspace_id, self.job_id)


class StoreModel:
    """The contract of one store, in memory.

    ``ids_per_store``: an enqueued id must not exist in any workspace (True) or only not in
    the same workspace (False).
    """

    def __init__(self, *, ids_per_store: bool) -> None:
        self.ids_per_store = ids_per_store
        self.jobs: dict[tuple[str, str], ModelJob] = {}
        self._seq = 0

    @classmethod
    def for_strategy(cls, strategy: Strategy) -> StoreModel:
        return cls(ids_per_store=ids_per_store(strategy))

    # -- questions the machines ask -------------------------------------------------------

    def holders(self, job_id: str) -> set[str]:
        """The workspaces holding a job with this id."""
        return {ws for (ws, jid) in self.jobs if jid == job_id}

    def conflicts(self, workspace_id: str, job_id: str) -> bool:
        """Whether enqueuing this id in this workspace raises JobExists."""
        holders = self.holders(job_id)
        return bool(holders) if self.ids_per_store else workspace_id in holders

    def ordered(self, workspace_id: str, status: JobStatus | None = None) -> list[ModelJob]:
        """Every job of the workspace (optionally in ``status``), newest first."""
        jobs = [
            j for j in self.jobs.values()
            if j.workspace_id == workspace_id and (status is None or j.status is status)
        ]
        return sorted(jobs, key=lambda j: j.seq, reverse=True)

    # -- the operations -------------------------------------------------------------------

    def enqueue(self, workspace_id: str, action: str, params: dict[str, Any] | None,
                job_id: str) -> ModelJob:
        """:raises JobExists:"""
        if self.conflicts(workspace_id, job_id):
            raise JobExists([job_id])
        return self._create(workspace_id, action, params, job_id)

    def enqueue_many(
        self, items: Iterable[tuple[str, str, dict[str, Any] | None, str]]
    ) -> list[ModelJob]:
        """``(workspace_id, action, params, job_id)`` items, each on its own.

        :raises InvalidArgument: an id twice in the batch (nothing enqueued).
        :raises JobExists: some ids existed; ``created`` holds the others, enqueued.
        """
        batch = list(items)
        seen: set[str] = set()
        for position, (_, _, _, job_id) in enumerate(batch):
            if job_id in seen:
                raise InvalidArgument(f"items[{position}]", f"job_id {job_id!r} appears twice in the batch")
            seen.add(job_id)
        created: list[ModelJob] = []
        existing: list[str] = []
        for workspace_id, action, params, job_id in batch:
            if self.conflicts(workspace_id, job_id):
                existing.append(job_id)
            else:
                created.append(self._create(workspace_id, action, params, job_id))
        if existing:
            # The model's jobs stand in for the store's Jobs: the machines compare them by
            # job_view, which reads only the fields both have.
            raise JobExists(existing, created=cast("list[Job]", created))
        return created

    def get(self, job_id: str, workspace_id: str) -> ModelJob | None:
        return self.jobs.get((workspace_id, job_id))

    def update_status(self, job_id: str, status: JobStatus | str, workspace_id: str,
                      result: Any = None, error: str | None = None) -> ModelJob:
        """:raises JobNotFound, InvalidTransition:"""
        status = JobStatus(status)
        job = self.jobs.get((workspace_id, job_id))
        if job is None:
            raise JobNotFound(job_id, workspace_id)
        if not job.status.can_move_to(status):
            raise InvalidTransition(job_id, job.status.value, status.value)
        job.status = status
        if result is not None:
            job.result = result
        if error is not None:
            job.error = error or None  # None is stored as "": an empty error reads back as None
        return job

    def list(self, workspace_id: str, status: JobStatus | str | None = None,
             limit: int = 100) -> list[ModelJob]:
        return self.ordered(workspace_id, None if status is None else JobStatus(status))[:limit]

    def dequeue(self) -> ModelJob | None:
        """The oldest pending job, now running: a job enqueued again under the id of a deleted
        one waits its own turn."""
        pending = [j for j in self.jobs.values() if j.status is JobStatus.PENDING]
        if not pending:
            return None
        job = min(pending, key=lambda j: j.seq)
        job.status = JobStatus.RUNNING
        return job

    def delete(self, job_id: str, workspace_id: str) -> bool:
        return self.jobs.pop((workspace_id, job_id), None) is not None

    # -- internals ------------------------------------------------------------------------

    def _create(self, workspace_id: str, action: str, params: dict[str, Any] | None,
                job_id: str) -> ModelJob:
        self._seq += 1
        job = ModelJob(job_id, workspace_id, action, JobStatus.PENDING, dict(params or {}),
                       seq=self._seq)
        self.jobs[job.key] = job
        return job

    def snapshot(self) -> dict[tuple[str, str], ModelJob]:
        """A copy of every job, for a readable failure message."""
        return {key: replace(job) for key, job in self.jobs.items()}
