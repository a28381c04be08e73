"""``JobStore``: validates arguments, runs operations against Redis, maps failures to errors."""

from __future__ import annotations

import builtins
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import config, eviction, ops, ops_cluster, rules, validation
from .connection import Client, block_slice, connect, is_cluster, redact
from .codec import JSON, Codec
from .errors import ConfigError, InvalidArgument, JobStoreError, PluginError, StoreUnavailable
from .dead_letters import DeadLetter
from .job import Job, JobStatus, plain_params
from .layout import StoreKeys
from .plugins import create_strategy
from .driver import SyncDriver
from .events import Events

if TYPE_CHECKING:
    from .migration import Migration

T = TypeVar("T")

# The defaults are jobstore.config's, which declares every option once.
DEFAULT_LEASE: float = config.default("lease")
DEFAULT_MAX_ATTEMPTS: int = config.default("max_attempts")
_lease_ms = config.lease_ms


def open(url: str, strategy: str = config.default("strategy"), **options: Any) -> JobStore:  # noqa: A001
    """Open a store on ``url`` (``redis://``, ``rediss://``, ``unix://``, ``memory://``).

    ``options``: those of :data:`jobstore.config.OPTIONS` (docs/reference/configuration.md),
    and whatever the strategy takes (``dual``: ``source``, ``target``, ``phase``). Nothing is
    sent to Redis until the first operation.

    :raises ConfigError: a bad URL, option or option value.
    :raises UnknownStrategy: ``strategy`` is not registered.
    """
    client_options = options.pop("client_options", None)
    client = connect(url, client_options)
    return JobStore(client, strategy, url=url, **options)


class _Writes(Protocol):
    """The write operations: the module jobstore.ops on standalone Redis, jobstore.ops_cluster on
    Redis Cluster (where a job's keys span slots)."""

    def enqueue(self, ctx: ops.Context, job: Job, fields: dict[str, str]) -> ops.Op[Job]: ...

    def enqueue_many(self, ctx: ops.Context,
                     jobs: list[tuple[Job, dict[str, str]]]) -> ops.Op[list[Job]]: ...

    def update_status(self, ctx: ops.Context, job_id: str, workspace_id: str, status: JobStatus,
                      changes: dict[str, str], claim: str | None = None) -> ops.Op[Job]: ...

    def delete(self, ctx: ops.Context, job_id: str, workspace_id: str) -> ops.Op[bool]: ...

    def dequeue(self, ctx: ops.Context, timeout: float | None,
                lease_ms: int | None = None) -> ops.Op[Job | None]: ...

    def extend(self, ctx: ops.Context, job: Job, lease_ms: int) -> ops.Op[None]: ...


class JobStore:
    """Background-job records in Redis, laid out by a pluggable strategy.

    Thread-safe: one store may serve many threads (redis-py pools connections).
    """

    def __init__(
        self,
        client: Client,
        strategy: str = config.default("strategy"),
        *,
        prefix: str = config.default("prefix"),
        own_prefix: str | None = None,
        max_record_bytes: int = config.default("max_record_bytes"),
        url: str | None = None,
        events: Events | None = None,
        allow_eviction: bool = config.default("allow_eviction"),
        wait_replicas: int = config.default("wait_replicas"),
        wait_timeout: float = config.default("wait_timeout"),
        lease: float = DEFAULT_LEASE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        time_format: str | None = None,
        legacy_queue: str | None = None,
        codec: Codec | None = None,
        **strategy_options: Any,
    ) -> None:
        """A store over ``client``. Every option is declared, with its default and what it may
        be, in :data:`jobstore.config.OPTIONS` (docs/reference/configuration.md); a bad one
        raises :class:`ConfigError` naming it, before anything is sent. ``url`` is only shown
        (password hidden) in messages and ``repr``; ``strategy_options`` go to the strategy.
        """
        own_prefix = config.check(
            prefix=prefix, own_prefix=own_prefix, lease=lease, max_attempts=max_attempts,
            time_format=time_format, max_record_bytes=max_record_bytes,
            wait_replicas=wait_replicas, wait_timeout=wait_timeout, allow_eviction=allow_eviction,
            legacy_queue=legacy_queue)
        lease_ms = _lease_ms("lease", lease, ConfigError)
        self.allow_eviction = allow_eviction
        # Set once the server's version and eviction policy passed; never reset.
        self._eviction_checked = False
        self._eviction_lock = threading.Lock()
        self._eviction_label = redact(url) if url else None
        self.client = client
        self.prefix = prefix
        self.own_prefix = own_prefix
        self.max_record_bytes = max_record_bytes
        self.strategy = create_strategy(strategy, prefix, **strategy_options)
        self.codec = config.codec_for(codec, self.strategy)
        time_format = time_format or self.codec.time_format or "epoch"
        self.time_format = time_format
        self.keys = StoreKeys(own_prefix)
        config.check_placement(strategy, self.strategy, self.keys, prefix, legacy_queue=legacy_queue,
                               wait_replicas=wait_replicas, cluster=is_cluster(client))
        self.strategy.use_keys(self.keys)
        self.url = redact(url) if url else repr(client)
        self.events = events if events is not None else Events()
        self.context = ops.Context(self.keys, self.strategy, events=self.events,
                                   block_slice=block_slice(client),
                                   max_record_bytes=max_record_bytes, lease_ms=lease_ms,
                                   max_attempts=max_attempts, time_format=time_format,
                                   codec=None if self.codec is JSON else self.codec)
        self.lease = lease_ms / 1000
        self.max_attempts = max_attempts
        self.driver = SyncDriver(client, self.strategy, self.url, self.events,
                                 wait_replicas=wait_replicas, wait_timeout=float(wait_timeout))
        self.context.cluster = self.driver.cluster
        self.context.legacy_queue = legacy_queue
        self.legacy_queue = legacy_queue
        # Writes span slots on Redis Cluster and take the per-slot path there.
        self._writes: _Writes = ops_cluster if self.driver.cluster else ops

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> JobStore:
        """Open a store configured by the environment (``environ``, default ``os.environ``):
        the variables of :data:`jobstore.config.OPTIONS` (docs/reference/configuration.md),
        ``JOBSTORE_REDIS_URL`` required. An empty variable counts as unset; ``options`` win.

        :raises ConfigError: a required variable is missing or a value is not allowed.
        """
        url, strategy, options = config.from_environ(
            os.environ if environ is None else environ, options)
        return open(url, strategy, **options)

    # -- operations --------------------------------------------------------------------------

    def enqueue(
        self,
        workspace_id: str,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> Job:
        """Store a new pending job and queue it, together or not at all.

        A generated ``job_id`` is a uuid4 hex. Safe to retry: a re-sent call recognises its own
        earlier write.

        :raises JobExists: a job with this id exists; nothing was changed.
        :raises InvalidIdentifier, InvalidArgument, PayloadTooLarge: bad input (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        job, fields = self._new_job(workspace_id, action, params, job_id)
        return self._run(self._writes.enqueue(self.context, job, fields), "enqueue", job.workspace_id,
                         dual_writes=[job.workspace_id])

    def enqueue_many(self, items: Iterable[Sequence[Any]]) -> list[Job]:
        """Enqueue ``(workspace_id, action[, params[, job_id]])`` tuples in one pipeline.

        Every item is validated before anything is sent. Each job is written atomically on
        its own; when some ids already existed, :class:`JobExists` is raised after the others
        were enqueued, with ``job_ids`` the existing ids and ``created`` the new jobs.

        :raises JobExists, InvalidIdentifier, InvalidArgument, PayloadTooLarge, StoreUnavailable:
        """
        batch: list[tuple[Job, dict[str, str]]] = []
        seen: set[str] = set()
        for position, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or not 2 <= len(item) <= 4:
                raise InvalidArgument(
                    f"items[{position}]", "must be (workspace_id, action[, params[, job_id]])"
                )
            job, fields = self._new_job(*item)
            if job.job_id in seen:
                raise InvalidArgument(
                    f"items[{position}]", f"job_id {job.job_id!r} appears twice in the batch"
                )
            seen.add(job.job_id)
            batch.append((job, fields))
        if not batch:
            return []
        try:
            return self._run(self._writes.enqueue_many(self.context, batch), "enqueue_many", None,
                             dual_writes=[job.workspace_id for job, _ in batch])
        except StoreUnavailable as exc:
            # Which jobs landed is unknown; their ids are not: enqueue_many again with these
            # job_ids and each comes back created or in JobExists, never twice.
            exc.attempted = [job for job, _ in batch]
            raise

    def get(self, job_id: str, *, workspace_id: str) -> Job | None:
        """The job, or None if it does not exist or belongs to another workspace.

        :raises CorruptRecord: the record cannot be decoded (``key`` and ``field`` say where).
        :raises InvalidIdentifier: bad ``job_id`` or ``workspace_id`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        job_id, workspace_id = self._ids(job_id, workspace_id)
        return self._run(ops.get(self.context, job_id, workspace_id), "get", workspace_id)

    def update_status(
        self,
        job_id: str,
        status: JobStatus | str,
        *,
        workspace_id: str,
        result: Any = None,
        error: str | None = None,
        claim: str | None = None,
    ) -> Job:
        """Move a job to ``status``, setting ``result``/``error`` when given (None: unchanged).

        Atomic: concurrent updates never interleave. Never creates a record. ``claim``: the
        worker's ``job.claim`` from :meth:`dequeue`; the update is then refused once another
        worker has taken the job over (a move out of ``running`` ends the claim and its lease).

        :raises JobNotFound: no such job in this workspace.
        :raises LeaseLost: ``claim`` no longer holds the job; nothing was written.
        :raises InvalidTransition: the move is not allowed (terminal states are final).
        :raises CorruptRecord: a copy of the job cannot be decoded; nothing was written.
        :raises InvalidIdentifier, InvalidArgument, PayloadTooLarge: bad input (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        job_id, workspace_id = self._ids(job_id, workspace_id)
        status = validation.status(status)
        if claim is not None and (not isinstance(claim, str) or not claim or len(claim) > 1024):
            raise InvalidArgument("claim", f"must be a job's claim (a non-empty str), not {claim!r}")
        changes: dict[str, str] = {}
        if result is not None:
            changes["result"] = (validation.json_value("result", result) if self.codec is JSON
                                 else _encode(self.codec, "result", validation.checked_json("result", result)))
        if error is not None:
            changes["error"] = validation.error_text(error)
        validation.record_size(changes, self.max_record_bytes)
        return self._run(self._writes.update_status(self.context, job_id, workspace_id, status,
                                                    changes, claim), "update_status", workspace_id)

    def list(
        self, workspace_id: str, *, status: JobStatus | str | None = None, limit: int = 100,
        errors: str = "skip",
    ) -> list[Job]:
        """The workspace's jobs, newest first, optionally only those in ``status``.

        Reads the workspace index: never KEYS, never a scan of the keyspace. A record that cannot
        be decoded is reported to ``events.corrupt_record`` and left out (``errors="skip"``), or
        raised (``errors="raise"``).

        :raises CorruptRecord: with ``errors="raise"``, the first record that cannot be decoded.
        :raises InvalidIdentifier, InvalidArgument: bad input (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        workspace_id = validation.identifier("workspace_id", workspace_id)
        wanted = None if status is None else validation.status(status)
        limit = validation.limit(limit)
        if errors not in ("skip", "raise"):
            raise InvalidArgument("errors", f"must be 'skip' or 'raise', not {errors!r}")
        return self._run(ops.list_jobs(self.context, workspace_id, wanted, limit, errors), "list",
                         workspace_id)

    def dequeue(self, timeout: float | None = 0, *, lease: float | None = None) -> Job | None:
        """Claim the oldest pending job and return it, now ``running``.

        Each job goes to exactly one caller. ``timeout``: 0 returns None at once when nothing
        is pending, a number waits up to that many seconds, None waits until a job arrives.

        The job is leased to the caller for ``lease`` seconds (default: the store's ``lease``):
        :meth:`extend` renews it, a move out of ``running`` ends it. A job whose lease ran out
        is handed out again before any pending job, to the next dequeue (``attempts`` + 1, a
        new ``claim``), or, after ``max_attempts`` hand-outs, set ``failed`` with the reason.
        A queue entry that cannot be parsed, or whose job record cannot be decoded, is moved to
        the dead letters (:meth:`dead_letters`), its record left as it is, and the next entry
        is taken.

        :raises InvalidArgument: bad ``timeout`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        timeout = validation.timeout(timeout)
        lease_ms = None if lease is None else _lease_ms("lease", lease, InvalidArgument)
        return self._run(self._writes.dequeue(self.context, timeout, lease_ms), "dequeue", None)

    def extend(self, job: Job, seconds: float | None = None) -> None:
        """Renew the lease of a job this worker dequeued: it runs out ``seconds`` from now
        (default: the store's ``lease``), by Redis's clock. Call it from a heartbeat, well
        within the lease. A lease that ran out is still renewed while no other dequeue has
        taken the job over.

        :raises LeaseLost: the claim has ended (taken over, or the job finished or was deleted).
        :raises InvalidArgument: ``job`` is not a job from :meth:`dequeue`, or bad ``seconds``.
        :raises StoreUnavailable: Redis could not be reached.
        """
        if not isinstance(job, Job) or not job.claim:
            raise InvalidArgument("job", "must be a Job returned by dequeue (it carries a claim)")
        lease_ms = self.context.lease_ms if seconds is None else _lease_ms("seconds", seconds,
                                                                           InvalidArgument)
        self._run(self._writes.extend(self.context, job, lease_ms), "extend", job.workspace_id)

    def leave_legacy_queue(self, batch: int = 1000) -> dict[str, int]:
        """Move the compatible queue's pending ids into jobstore's own queue, and switch every
        store to it (the queue mode becomes ``left`` first: enqueues push to jobstore's queue from
        then on; dequeues still drain what the compatible queue holds).

        Atomic per batch (each id moves once), safe under live traffic, and resumable: run it
        again after an interruption. Returns ``moved`` (ids now in jobstore's queue, in their
        order, before every job enqueued since), ``dropped`` (ids whose job no longer exists) and
        ``remaining`` (0 when done; more only if old producers still push).

        :raises ConfigError: the store has no ``legacy_queue``.
        :raises InvalidArgument: bad ``batch`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        if not self.legacy_queue:
            raise ConfigError("leave_legacy_queue needs a store opened with legacy_queue=...")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100_000:
            raise InvalidArgument("batch", f"must be an int from 1 to 100000, not {batch!r}")
        return self._run(ops.leave_legacy_queue(self.context, batch), "leave_legacy_queue", None)

    def dead_letters(self, limit: int = 100) -> builtins.list[DeadLetter]:
        """The newest ``limit`` queue entries ``dequeue`` set aside, newest first.

        The list keeps the newest 10,000 (:data:`jobstore.dead_letters.MAX_DEAD_LETTERS`).

        :raises InvalidArgument: bad ``limit`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        limit = validation.limit(limit)
        return self._run(ops.dead_letters(self.context, limit), "dead_letters", None)

    def delete(self, job_id: str, *, workspace_id: str) -> bool:
        """Delete the job from every schema of the strategy; False if there was none.

        :raises InvalidIdentifier: bad ``job_id`` or ``workspace_id`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        job_id, workspace_id = self._ids(job_id, workspace_id)
        return self._run(self._writes.delete(self.context, job_id, workspace_id), "delete", workspace_id)

    def migration(self) -> Migration:
        """The :class:`jobstore.migration.Migration` between this ``dual`` store's schemas.

        :raises ConfigError: the store's strategy is not ``dual``.
        """
        from .migration import Migration

        source, target = getattr(self.strategy, "source", None), getattr(self.strategy, "target", None)
        if source is None or target is None:
            raise ConfigError(f"strategy {self.strategy.name!r} has no migration; open the store with 'dual'")
        return Migration(self.client, source=source.name, target=target.name, prefix=self.prefix,
                         own_prefix=self.own_prefix, url=self.url, events=self.events,
                         allow_eviction=self.allow_eviction)

    def close(self) -> None:
        """Release the store's connections."""
        self.driver.tidier.close()
        self.client.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<JobStore {self.url} strategy={self.strategy.describe()}>"

    # -- internals ---------------------------------------------------------------------------

    def _ids(self, job_id: Any, workspace_id: Any) -> tuple[str, str]:
        return (
            validation.identifier("job_id", job_id),
            validation.identifier("workspace_id", workspace_id),
        )

    def _new_job(self, workspace_id: Any, action: Any, params: Any = None,
                 job_id: Any = None) -> tuple[Job, dict[str, str]]:
        workspace_id = validation.identifier("workspace_id", workspace_id)
        action = validation.action(action)
        if self.codec is JSON:
            encoded = validation.params_json(params)
            # The job holds what get() will return (params as the stored JSON decodes), not
            # the caller's object.
            decoded = params and plain_params(params)
        else:
            encoded = _encode(self.codec, "params", validation.params(params))
            try:  # what get() will return
                decoded = self.codec.decode("params", encoded) if encoded else {}
            except Exception as exc:  # noqa: BLE001 - a plugin's codec that cannot read itself
                raise PluginError(f"codec {self.codec!r} cannot decode the params it just "
                                  f"encoded ({encoded[:80]!r}): {type(exc).__name__}: {exc}") from exc
        job_id = uuid.uuid4().hex if job_id is None else validation.identifier("job_id", job_id)
        job, fields = Job.pending(job_id, workspace_id, action, encoded, time.time(),
                                  self.time_format, decoded)
        fields[rules.REV] = "1"  # the record's write count (jobstore.rules): its first write
        fields[rules.OP] = self.context.new_token()  # the enqueue call's (jobstore.rules.OP)
        validation.record_size(fields, self.max_record_bytes)
        return job, fields

    def _run(self, op: ops.Op[T], name: str, workspace_id: str | None,
             dual_writes: builtins.list[str] | None = None) -> T:
        """Run an operation and tell ``events`` how it went.

        ``dual_writes``: the workspace of each job an enqueue writes; reported as dual writes
        (succeeded or failed) when the routing writes more than one schema.
        """
        started = time.perf_counter()
        outcome = "ok"
        try:
            if not self._eviction_checked:
                self._check_eviction()
            result = self.driver.run(op)
        except JobStoreError as exc:
            outcome = type(exc).__name__
            for job in getattr(exc, "created", ()):  # enqueue_many: the rest of the batch landed
                self.events.enqueued(job.workspace_id)
            raise
        else:
            if dual_writes is not None:
                for ws in dual_writes:
                    self.events.enqueued(ws)
        finally:
            self.events.operation(name, self.strategy.name, workspace_id, outcome,
                                  time.perf_counter() - started)
            if dual_writes is not None and outcome in ("ok", "StoreUnavailable"):
                for ws in dual_writes:
                    if len(self.strategy.routing(ws).writes) > 1:
                        self.events.dual_write(ws, outcome == "ok")
        return result

    def _check_eviction(self) -> None:
        """Refuse a Redis too old for jobstore, or (unless ``allow_eviction``) one that may
        evict keys: once per store, before anything else is sent (one INFO).

        A failed check is not remembered: the next operation checks again (so a store follows
        a policy fixed meanwhile, without a restart).
        """
        with self._eviction_lock:
            if not self._eviction_checked:
                eviction.check(self.client, allow=self.allow_eviction, label=self._eviction_label)
                self._eviction_checked = True


def _encode(codec: Codec, field: str, value: Any) -> str:
    """``value`` (checked JSON) as ``codec`` stores it; InvalidArgument naming ``field`` if the
    codec cannot encode it."""
    try:
        text = codec.encode(field, value)
    except Exception as exc:  # noqa: BLE001 - a plugin's codec
        raise InvalidArgument(field, f"codec {codec.name!r} cannot encode it: "
                                     f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(text, str):
        raise PluginError(f"codec {codec!r} encoded {field} as {type(text).__name__}, not str")
    if not text.isascii():
        problem = validation.text_problem(text)
        if problem is not None:  # jobstore writes only UTF-8: a record that reads back
            raise PluginError(f"codec {codec!r} encoded {field} as text that {problem}")
    return text
