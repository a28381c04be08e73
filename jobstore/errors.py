"""Every error jobstore raises derives from :class:`JobStoreError`.

Import every error from here (or from ``jobstore``). The root and the two errors the record
layer raises (:class:`ConfigError`, :class:`CorruptRecord`) are defined in
:mod:`jobstore.errors_base`, which imports nothing of jobstore, so that ``jobstore.job`` and
``jobstore.codec`` raise them while the errors here name :class:`~jobstore.job.Job`, with no
import cycle; they present themselves as this module's (``__module__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors_base import ConfigError as ConfigError
from .errors_base import CorruptRecord as CorruptRecord
from .errors_base import JobStoreError as JobStoreError

if TYPE_CHECKING:
    from .job import Job


class EvictionPolicyError(ConfigError):
    """Redis may evict keys (``maxmemory-policy`` is not ``noeviction``), so jobstore cannot keep
    its promises there: acknowledged jobs could vanish, and the markers that let a re-sent write
    recognise itself could go first (a retry would then raise ``JobExists`` for its own write).

    ``policy``: the policy found (None when it could not be read); ``node``: the server, as its
    URL with any password shown as ``***`` (a Cluster node: ``host:port``). Opt out with
    ``allow_eviction=True``.
    """

    def __init__(self, policy: str | None, node: str, detail: str = ""):
        self.policy = policy
        self.node = node
        if policy is None:
            found = f"the maxmemory-policy of Redis at {node} could not be read ({detail})"
        else:
            found = f"Redis at {node} runs with maxmemory-policy {policy!r}"
        super().__init__(
            f"{found}; jobstore needs 'noeviction': under any other policy Redis may evict "
            "acknowledged jobs and the markers that let a re-sent write recognise itself. "
            "Fix: CONFIG SET maxmemory-policy noeviction (and 'maxmemory-policy noeviction' in "
            "redis.conf, or your provider's parameter group, so that it survives a restart). "
            "To run anyway, accepting that jobs may be lost: allow_eviction=True "
            "(env JOBSTORE_ALLOW_EVICTION=1, CLI --allow-eviction)"
        )


class AuthenticationFailed(ConfigError):
    """Redis refused the credentials: a wrong or missing password, an unknown or disabled ACL
    user. A configuration error, not an outage: retrying does not help (the CLI exits 2, not
    3). ``node``: the server, as its URL with any password shown as ``***``."""

    def __init__(self, node: str, reason: str):
        self.node = node
        super().__init__(
            f"Redis at {node} refused the credentials ({reason}); fix the user name and password "
            "in the URL (percent-encoded, docs/api.md#credentials-in-urls), or the ACL user")


class UnsupportedServer(ConfigError):
    """The server is older than jobstore needs (:data:`jobstore.connection.MINIMUM`), refused at
    the first operation, before anything is written. ``node``: the server; ``found``: what it
    reports itself to be (``"Redis 5.0.14"``); ``needed``: the oldest Redis jobstore runs on
    (``"6.2"``; every Valkey is newer)."""

    def __init__(self, node: str, found: str, needed: str):
        self.node = node
        self.found = found
        self.needed = needed
        super().__init__(
            f"{found} at {node} is too old: jobstore needs Redis {needed} or later (or Valkey), "
            "for commands its operations use (BLMOVE, LMOVE). Upgrade the server")


class UnknownStrategy(ConfigError):
    """No strategy or schema is registered under the requested name."""

    def __init__(self, name: str, available: list[str]):
        self.name = name
        self.available = sorted(available)
        super().__init__(
            f"unknown strategy {name!r}; registered: {', '.join(self.available) or '(none)'}"
        )


class PluginError(JobStoreError):
    """A plugin registered something invalid, or a name twice."""


class InvalidIdentifier(JobStoreError, ValueError):
    """A ``workspace_id`` or ``job_id`` is not 1-128 characters of ``A-Z a-z 0-9 _ . -``."""

    def __init__(self, argument: str, value: object, reason: str):
        self.argument = argument
        self.value = value
        super().__init__(f"{argument} {value!r} is invalid: {reason}")


class InvalidArgument(JobStoreError, ValueError):
    """An argument other than an identifier is invalid (``action``, ``status``, ``limit``...)."""

    def __init__(self, argument: str, reason: str):
        self.argument = argument
        super().__init__(f"{argument}: {reason}")


class PayloadTooLarge(JobStoreError, ValueError):
    """The encoded record is larger than the store's ``max_record_bytes``."""

    def __init__(self, size: int, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(f"encoded job record is {size} bytes; max_record_bytes is {limit}")


class JobExists(JobStoreError):
    """A job with this id already exists; nothing was changed.

    ``job_ids`` names the ids that existed. From :meth:`JobStore.enqueue_many`,
    ``created`` holds the jobs of the same batch that were enqueued.
    """

    def __init__(self, job_ids: list[str], created: list[Job] | None = None):
        self.job_ids = list(job_ids)
        self.created = list(created or [])
        shown = ", ".join(self.job_ids[:10]) + (" ..." if len(self.job_ids) > 10 else "")
        super().__init__(f"job already exists: {shown}")

    @property
    def job_id(self) -> str:
        return self.job_ids[0]


class JobNotFound(JobStoreError, LookupError):
    """No job with this id exists in this workspace."""

    def __init__(self, job_id: str, workspace_id: str):
        self.job_id = job_id
        self.workspace_id = workspace_id
        super().__init__(f"job {job_id!r} not found in workspace {workspace_id!r}")


class InvalidTransition(JobStoreError):
    """The status change is not one of the allowed moves (terminal states are final)."""

    def __init__(self, job_id: str, current: str, requested: str):
        self.job_id = job_id
        self.current = current
        self.requested = requested
        super().__init__(f"job {job_id!r} cannot move from {current!r} to {requested!r}")


class LeaseLost(JobStoreError):
    """This worker's claim on a job has ended: its lease ran out and another dequeue took the job
    over (or the job was finished, cancelled or deleted meanwhile). Nothing was written; the job's
    outcome belongs to its current holder.

    ``job_id``; ``claim``: the claim this worker held; ``holder_attempt``: the attempt that holds
    the job now (None when no one does).
    """

    def __init__(self, job_id: str, claim: str, holder_attempt: int | None = None,
                 detail: str = ""):
        self.job_id = job_id
        self.claim = claim
        self.holder_attempt = holder_attempt
        now = (f"attempt {holder_attempt} holds it now" if holder_attempt
               else detail or "no worker holds it now")
        super().__init__(f"job {job_id!r}: this worker's claim has ended (its lease ran out and "
                         f"the job was taken over, or it was finished or deleted); {now}")


class StoreUnavailable(JobStoreError):
    """Redis could not be reached or did not answer in time; the cause is chained.

    From :meth:`JobStore.enqueue_many` only: ``attempted``, the jobs of the batch (generated ids
    included), which may or may not have landed: enqueue them again with their ``job_id``.
    """

    attempted: list[Job]  # set by enqueue_many only


class NotReplicated(StoreUnavailable):
    """A write was applied on the primary but fewer replicas than ``wait_replicas`` confirmed it
    within ``wait_timeout``: a failover now could lose it.

    The operation did complete on the primary: ``result`` is what it returned (the enqueued
    ``Job``, the ``Job`` a ``dequeue`` claimed, ...), so nothing is stranded: a worker can run
    the job it claimed, a producer knows the id it created."""

    def __init__(self, acknowledged: int, wanted: int, timeout: float, result: Any = None):
        self.acknowledged = acknowledged
        self.wanted = wanted
        self.result = result
        super().__init__(
            f"the write is applied on the primary, but only {acknowledged} of {wanted} replica(s) "
            f"confirmed it within {timeout:g}s (wait_replicas={wanted}): a failover now could lose "
            "it (the operation's outcome is on this error, as .result)"
        )


class MigrationStateLost(StoreUnavailable):
    """A ``dual`` store followed a stored migration phase and the state hash has since vanished
    (FLUSHALL, eviction, a failover to a replica that never received it).

    A ``StoreUnavailable``, not a ``ConfigError``: nothing is wrong with the caller's code or
    options; the store cannot safely serve until an operator restores the state, and then it
    serves again without a restart, so callers should treat it like an outage (retry, alert)
    rather than as a bug. Falling back to the default phase instead could route writes and
    reads to the wrong schema. ``key``: the vanished key; ``phase``: the last phase followed.
    """

    def __init__(self, key: str, phase: str, restore: str):
        self.key = key
        self.phase = phase
        super().__init__(
            f"the migration state {key!r} has vanished from Redis (flushed, evicted, or lost in "
            f"a failover); this store last followed phase {phase!r} and will not fall back to "
            f"the default phase on its own. Restore it: {restore}"
        )


class RedisCommandError(JobStoreError):
    """Redis answered with an error (e.g. WRONGTYPE: a key jobstore needs holds something
    else, or a server too old for a command); the cause is chained."""


class EnqueueIncomplete(RedisCommandError):
    """``enqueue_many``: Redis refused some jobs of the batch (out of memory, a key of the wrong
    type in the way); every other job was enqueued, each one whole.

    ``created``: the jobs enqueued (whose ids a retry must not send again without ``job_id``);
    ``failed``: ``{job_id: Redis's reason}``, none of them written; ``existing``: ids that
    already existed (what :class:`JobExists` would have said).
    """

    def __init__(self, failed: dict[str, str], created: list[Job],
                 existing: list[str] | None = None):
        self.failed = dict(failed)
        self.created = list(created)
        self.existing = list(existing or [])
        first = next(iter(self.failed.values()), "")
        super().__init__(
            f"{len(self.failed)} job(s) of the batch were not enqueued ({first}); "
            f"{len(self.created)} were (on .created), {len(self.existing)} existed already"
        )


class MigrationRefused(JobStoreError):
    """A phase switch or migration step could strand or lose data; ``reason`` says why."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)
