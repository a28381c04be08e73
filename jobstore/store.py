"""``JobStore``: validates arguments, runs operations against Redis, maps failures to errors."""

from __future__ import annotations

import builtins
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import eviction, ops, ops_cluster, rules, validation
from .connection import Client, connect, redact
from .codec import JSON, TIME_FORMATS, Codec, check_codec
from .errors import ConfigError, InvalidArgument, JobStoreError, PluginError, StoreUnavailable
from .dead_letters import DeadLetter
from .job import Job, JobStatus, plain_params
from .layout import StoreKeys
from .plugins import create_strategy
from .schema import glob_regex
from .strategy import Strategy
from .driver import SyncDriver
from .events import Events

if TYPE_CHECKING:
    from .migration import Migration

T = TypeVar("T")

ENV_URL = "JOBSTORE_REDIS_URL"
ENV_STRATEGY = "JOBSTORE_STRATEGY"
ENV_PREFIX = "JOBSTORE_KEY_PREFIX"
ENV_LEGACY_FLAG = "AI_JOBS_NEW_SCHEMA"
ENV_ALLOW_EVICTION = "JOBSTORE_ALLOW_EVICTION"
ENV_DUAL_SOURCE = "JOBSTORE_DUAL_SOURCE"
ENV_DUAL_TARGET = "JOBSTORE_DUAL_TARGET"
ENV_LEASE = "JOBSTORE_LEASE"
ENV_MAX_ATTEMPTS = "JOBSTORE_MAX_ATTEMPTS"
ENV_METRICS = "JOBSTORE_METRICS"
ENV_TIME_FORMAT = "JOBSTORE_TIME_FORMAT"
ENV_LEGACY_QUEUE = "JOBSTORE_LEGACY_QUEUE"
ENV_OWN_PREFIX = "JOBSTORE_OWN_PREFIX"
DEFAULT_LEASE = 3600.0
DEFAULT_MAX_ATTEMPTS = 3
LEGACY_FLAG_VALUES = {"on": "dual", "off": "legacy"}
BOOL_VALUES = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}

def open(url: str, strategy: str = "legacy", **options: Any) -> JobStore:  # noqa: A001
    """Open a store on ``url`` (``redis://``, ``rediss://``, ``unix://``, ``memory://``).

    ``options``: ``prefix``, ``own_prefix``, ``max_record_bytes``, ``allow_eviction``, ``lease``,
    ``max_attempts``, ``wait_replicas``, ``wait_timeout``, ``events``, ``client_options``
    (keyword arguments for the redis-py client), and whatever the strategy takes (``dual``:
    ``source``, ``target``, ``phase``). Nothing is sent to Redis until the first operation.

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
        strategy: str = "legacy",
        *,
        prefix: str = "ai",
        own_prefix: str | None = None,
        max_record_bytes: int = validation.DEFAULT_MAX_RECORD_BYTES,
        url: str | None = None,
        events: Events | None = None,
        allow_eviction: bool = False,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        lease: float = DEFAULT_LEASE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        time_format: str | None = None,
        legacy_queue: str | None = None,
        codec: Codec | None = None,
        **strategy_options: Any,
    ) -> None:
        """``prefix``: where the records live (the schemas' ``${prefix}``). ``own_prefix``: where
        jobstore's own keys live (queue, workspace indexes, leases, dead letters, op markers,
        migration state); None: ``prefix``, the names every store used before the option
        existed. Another value must sit apart from ``prefix`` (``"jobstore"`` beside ``"ai"``),
        and every process and ``jobstore`` command of the deployment must name the same one
        (docs/adopting.md).

        ``allow_eviction``: run on a Redis whose ``maxmemory-policy`` is not ``noeviction``
        (jobs may then be lost). Without it the store reads the policy once, before its first
        operation sends anything, and that operation raises :class:`EvictionPolicyError`. The
        same ``INFO`` (sent with ``allow_eviction`` too) tells the server's version: one older
        than Redis 6.2 raises :class:`UnsupportedServer` there.

        ``time_format``: how new records store their times, ``"epoch"`` (seconds, the default) or
        ``"iso"`` (ISO 8601, UTC); either form is read, and an update keeps a record's own form.
        None: the codec's ``time_format``, else epoch.

        ``codec``: how ``params`` and ``result`` are stored (:class:`jobstore.Codec`); None: the
        one the strategy's schemas declare (``KeySchema.codec``), else JSON. Schemas that declare
        different codecs cannot be used together (their records are copied as they are).

        ``legacy_queue``: the key of the replaced system's queue, a Redis list of bare job ids
        (``RPUSH`` to enqueue, ``LPOP`` to take): enqueue pushes there exactly what its producers
        push and dequeue takes what they pushed, until the fleet leaves it
        (:meth:`leave_legacy_queue`). Standalone Redis only.

        ``lease``: seconds a dequeued job stays its worker's without :meth:`extend` (default an
        hour); after that the next :meth:`dequeue` hands it out again. ``max_attempts``: hand-outs
        a job gets; when the lease of the last one runs out, the job is ``failed``.
        """
        validation.prefix(prefix)
        own_prefix = validation.own_prefix(own_prefix, prefix)
        lease_ms = _lease_ms("lease", lease, ConfigError)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
        if time_format is not None and time_format not in TIME_FORMATS:
            raise ConfigError(f"time_format must be 'epoch' or 'iso', not {time_format!r}")
        if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, int) or max_record_bytes < 1:
            raise ConfigError(f"max_record_bytes must be a positive int, not {max_record_bytes!r}")
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int) or wait_replicas < 0:
            raise ConfigError(f"wait_replicas must be an int >= 0, not {wait_replicas!r}")
        if isinstance(wait_timeout, bool) or not isinstance(wait_timeout, (int, float)) or not wait_timeout > 0:
            raise ConfigError(f"wait_timeout must be a number of seconds > 0, not {wait_timeout!r}")
        if not isinstance(allow_eviction, bool):
            raise ConfigError(f"allow_eviction must be True or False, not {allow_eviction!r}")
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
        self.codec = _codec(codec, self.strategy)
        time_format = time_format or self.codec.time_format or "epoch"
        self.time_format = time_format
        routing = self.strategy.routing(None)
        # routing(None) serves dequeue, which writes nothing new: it must read, and only known schemas.
        if not routing.reads or not set(routing.reads + routing.writes) <= set(routing.known):
            raise ConfigError(f"strategy {strategy!r} routes nowhere: routing(None) must read "
                              "schemas it knows")
        self.keys = StoreKeys(own_prefix)
        self.strategy.use_keys(self.keys)
        self.url = redact(url) if url else repr(client)
        self.events = events if events is not None else Events()
        self.context = ops.Context(self.keys, self.strategy, events=self.events,
                                   block_slice=_block_slice(client),
                                   max_record_bytes=max_record_bytes, lease_ms=lease_ms,
                                   max_attempts=max_attempts, time_format=time_format,
                                   codec=None if self.codec is JSON else self.codec)
        self.lease = lease_ms / 1000
        self.max_attempts = max_attempts
        self.driver = SyncDriver(client, self.strategy, self.url, self.events,
                                 wait_replicas=wait_replicas, wait_timeout=float(wait_timeout))
        self.context.cluster = self.driver.cluster
        if legacy_queue is not None:
            if (not isinstance(legacy_queue, str) or not legacy_queue
                    or any(c.isspace() or not c.isprintable() for c in legacy_queue)):
                raise ConfigError(f"legacy_queue must be a Redis key name, not {legacy_queue!r}")
            if self.keys.holds(legacy_queue):
                raise ConfigError(
                    f"legacy_queue {legacy_queue!r} lies among jobstore's own keys (queue, "
                    f"indexes, leases, ... under {own_prefix + ':'!r}); "
                    + ("keep the record prefix and name jobstore's own keys apart: "
                       f"own_prefix='jobstore' ({ENV_OWN_PREFIX}, jobstore --own-prefix)"
                       if own_prefix == prefix else "choose another own_prefix")
                    + ", docs/adopting.md")
            for schema in self.strategy.routing(None).known:
                if schema.parse_key(legacy_queue) is not None or glob_regex(
                        schema.scan_pattern()).fullmatch(legacy_queue):
                    raise ConfigError(
                        f"legacy_queue {legacy_queue!r} is a record key of schema "
                        f"{schema.name!r}: the list would be taken for a job's record")
            if self.driver.cluster:
                raise ConfigError(
                    "legacy_queue is not supported on Redis Cluster: the compatible queue, "
                    "jobstore's queue and the job records sit in different slots, and taking a "
                    "bare job id and claiming its job must be one step (docs/adopting.md)")
            if not any(not schema.scoped and not schema.computed
                       for schema in self.strategy.routing(None).known):
                raise ConfigError(
                    f"legacy_queue needs a schema keyed by the job id alone (legacy) among the "
                    f"strategy's schemas, to find the job of a bare id; {self.strategy.name!r} "
                    "has none")
            self.context.legacy_queue = legacy_queue
        self.legacy_queue = legacy_queue
        if wait_replicas and self.driver.cluster:
            raise ConfigError("wait_replicas is not supported on Redis Cluster yet: an operation "
                              "there writes to several primaries, each with replicas of its own")
        # Writes span slots on Redis Cluster and take the per-slot path there.
        self._writes: _Writes = ops_cluster if self.driver.cluster else ops

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> JobStore:
        """Open a store configured by the environment.

        ``JOBSTORE_REDIS_URL`` (required), ``JOBSTORE_STRATEGY`` (default ``legacy``),
        ``JOBSTORE_KEY_PREFIX`` (default ``ai``), ``JOBSTORE_OWN_PREFIX`` (default: the key
        prefix), ``JOBSTORE_DUAL_SOURCE`` and
        ``JOBSTORE_DUAL_TARGET`` (``dual``'s schemas), ``JOBSTORE_ALLOW_EVICTION`` (``1``/``true``/
        ``yes``/``on`` or ``0``/``false``/``no``/``off``; default off), ``JOBSTORE_LEASE``
        (seconds), ``JOBSTORE_MAX_ATTEMPTS``, ``JOBSTORE_METRICS`` (on: Prometheus metrics in
        prometheus-client's default registry, :class:`jobstore.metrics.PrometheusEvents`). With
        ``JOBSTORE_STRATEGY`` unset, ``AI_JOBS_NEW_SCHEMA=on`` selects ``dual`` and ``off``
        selects ``legacy``. An empty variable counts as unset; ``options`` win over variables.

        :raises ConfigError: a required variable is missing or a value is not allowed.
        """
        env = os.environ if environ is None else environ
        url = env.get(ENV_URL) or ""
        if not url:
            raise ConfigError(f"{ENV_URL} is not set; set it to a URL such as redis://localhost:6379/0")
        strategy = env.get(ENV_STRATEGY) or ""
        if not strategy:
            flag = env.get(ENV_LEGACY_FLAG) or ""
            if flag and flag not in LEGACY_FLAG_VALUES:
                raise ConfigError(
                    f"{ENV_LEGACY_FLAG}={flag!r} is not allowed; use 'on' (dual) or 'off' (legacy), "
                    f"or set {ENV_STRATEGY}"
                )
            strategy = LEGACY_FLAG_VALUES.get(flag, "legacy")
        options.setdefault("prefix", env.get(ENV_PREFIX) or "ai")
        if env.get(ENV_OWN_PREFIX) and "own_prefix" not in options:
            options["own_prefix"] = env[ENV_OWN_PREFIX].strip()
        if strategy == "dual":
            for option, variable in (("source", ENV_DUAL_SOURCE), ("target", ENV_DUAL_TARGET)):
                if env.get(variable) and option not in options:
                    options[option] = env[variable]
        allow = (env.get(ENV_ALLOW_EVICTION) or "").strip()
        if allow and "allow_eviction" not in options:
            if allow.lower() not in BOOL_VALUES:
                raise ConfigError(
                    f"{ENV_ALLOW_EVICTION}={allow!r} is not allowed; use 1, true, yes or on "
                    "(run on a Redis that may evict keys), or 0, false, no or off"
                )
            options["allow_eviction"] = BOOL_VALUES[allow.lower()]
        if env.get(ENV_LEGACY_QUEUE) and "legacy_queue" not in options:
            options["legacy_queue"] = env[ENV_LEGACY_QUEUE].strip()
        if env.get(ENV_TIME_FORMAT) and "time_format" not in options:
            options["time_format"] = env[ENV_TIME_FORMAT].strip()
        for option, variable, kind in (("lease", ENV_LEASE, float),
                                       ("max_attempts", ENV_MAX_ATTEMPTS, int)):
            text = (env.get(variable) or "").strip()
            if text and option not in options:
                try:
                    options[option] = kind(text)
                except ValueError:
                    raise ConfigError(f"{variable}={text!r} is not a number") from None
        metrics = (env.get(ENV_METRICS) or "").strip().lower()
        if metrics and metrics not in BOOL_VALUES:
            raise ConfigError(f"{ENV_METRICS}={metrics!r} is not allowed; use 1, true, yes or on "
                              "(Prometheus metrics), or 0, false, no or off")
        if BOOL_VALUES.get(metrics) and "events" not in options:
            from .metrics import PrometheusEvents

            options["events"] = PrometheusEvents(options["prefix"])
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
        """The :class:`jobstore.migration.Migration` between the two schemas whose migration this
        store's strategy follows (``dual``'s source and target; any strategy's
        :meth:`~jobstore.Strategy.migration_schemas`).

        :raises ConfigError: the store's strategy follows no migration.
        """
        from .migration import Migration

        schemas = self.strategy.migration_schemas()
        if schemas is None:
            raise ConfigError(f"strategy {self.strategy.name!r} has no migration; open the store with 'dual'")
        source, target = schemas
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


def _codec(given: Any, strategy: Strategy) -> Codec:
    """The store's codec: ``given``, else the one the strategy's schemas declare, else JSON."""
    if given is not None:
        return check_codec(given, "codec")
    declared = {schema.name: schema.codec for schema in strategy.routing(None).known
                if schema.codec is not None}
    # The same codec class and name is the same encoding, whichever schema holds the instance.
    codecs = {(type(codec), getattr(codec, "name", "")): codec for codec in declared.values()}
    if len(codecs) > 1:
        named = ", ".join(f"{name!r}: {codec!r}" for name, codec in sorted(declared.items()))
        raise ConfigError(f"the schemas of strategy {strategy.name!r} declare different codecs "
                          f"({named}); a migration copies records as they are, so they must "
                          "agree: declare one codec, or give the store codec=")
    if codecs:
        name, codec = next(iter(declared.items()))
        return check_codec(codec, f"schema {name!r}'s codec")
    return JSON


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


def _lease_ms(name: str, seconds: Any, error: type[Exception]) -> int:
    """A lease in whole milliseconds, at least 1; ``error`` is raised for a bad value."""
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not 0 < seconds <= 10 ** 9):
        message = f"must be a number of seconds > 0 (at most 1e9), not {seconds!r}"
        if error is InvalidArgument:
            raise InvalidArgument(name, message)
        raise error(f"{name} {message}")
    return max(1, round(seconds * 1000))


def _block_slice(client: Client) -> float:
    """A blocking wait that ends well before the client's socket timeout would fire."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # RedisCluster: the settings every node connection is made with
        pool = getattr(client, "nodes_manager", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    timeout = kwargs.get("socket_timeout")
    return 1.0 if not timeout else max(0.01, min(1.0, timeout / 2))
