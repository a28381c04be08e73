"""``JobStore``: validates arguments, runs operations against Redis, maps failures to errors."""

from __future__ import annotations

import builtins
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import config, ops
from .ops import cluster as ops_cluster
from .connection import Client, block_slice, connect, is_asyncio, is_cluster, redact
from .codec import JSON, Codec
from .errors import ConfigError
from .dead_letters import DeadLetter
from .job import Job, JobStatus
from .layout import StoreKeys
from .plugins import create_strategy
from .driver import SyncDriver
from .events import Events
from .store_core import Call, StoreCore, _Writes
from .store_core import _encode as _encode  # noqa: F401  (importable from here, as before)

if TYPE_CHECKING:
    from .migration import Migration

T = TypeVar("T")

# The defaults are jobstore.config's, which declares every option once.
DEFAULT_LEASE: float = config.default("lease")
DEFAULT_MAX_ATTEMPTS: int = config.default("max_attempts")
_lease_ms = config.lease_ms


def open(url: str, strategy: str = config.default("strategy"), **options: Any) -> JobStore:  # noqa: A001
    """Open a store on ``url`` (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``redis+sentinel://``, ``memory://``).

    ``options``: those of :data:`jobstore.config.OPTIONS` (docs/reference/configuration.md),
    and whatever the strategy takes (``dual``: ``source``, ``target``, ``phase``). Nothing is
    sent to Redis until the first operation.

    :raises ConfigError: a bad URL, option or option value.
    :raises UnknownStrategy: ``strategy`` is not registered.
    """
    client_options = options.pop("client_options", None)
    client = connect(url, client_options)
    return JobStore(client, strategy, url=url, **options)


class JobStore(StoreCore):
    """Background-job records in Redis, laid out by a pluggable strategy.

    Thread-safe: one store may serve many threads (redis-py pools connections).
    """

    # What __init__ runs operations with, and what from_env opens a URL with: the asyncio store
    # (jobstore.aio.AsyncJobStore) runs the same __init__ and from_env with its own.
    _driver_class: type[SyncDriver] = SyncDriver
    driver: SyncDriver
    _asyncio = False  # which redis-py clients it runs on: the synchronous ones

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
        finished_ttl: float | None = None,
        dead_letter_ttl: float | None = None,
        **strategy_options: Any,
    ) -> None:
        """A store over ``client``. Every option is declared, with its default and what it may
        be, in :data:`jobstore.config.OPTIONS` (docs/reference/configuration.md); a bad one
        raises :class:`ConfigError` naming it, before anything is sent. ``url`` is only shown
        (password hidden) in messages and ``repr``; ``strategy_options`` go to the strategy.
        """
        if is_asyncio(client) is not self._asyncio:
            wanted = ("a redis.asyncio client (jobstore.aio.open makes one)" if self._asyncio
                      else "a synchronous redis-py client (jobstore.open makes one)")
            raise ConfigError(f"client: {type(self).__name__} runs on {wanted}, not on "
                              f"{type(client).__module__}.{type(client).__name__}")
        own_prefix = config.check(
            prefix=prefix, own_prefix=own_prefix, lease=lease, max_attempts=max_attempts,
            time_format=time_format, max_record_bytes=max_record_bytes,
            wait_replicas=wait_replicas, wait_timeout=wait_timeout, allow_eviction=allow_eviction,
            legacy_queue=legacy_queue, finished_ttl=finished_ttl, dead_letter_ttl=dead_letter_ttl)
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
                                   codec=None if self.codec is JSON else self.codec,
                                   finished_ttl_ms=config.ttl_ms("finished_ttl", finished_ttl),
                                   dead_letter_ttl_ms=config.ttl_ms("dead_letter_ttl",
                                                                    dead_letter_ttl))
        self.finished_ttl = finished_ttl
        self.lease = lease_ms / 1000
        self.max_attempts = max_attempts
        self.driver = self._driver_class(client, self.strategy, self.url, self.events,
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
        return cls._open_url(url, strategy, **options)

    # -- operations --------------------------------------------------------------------------

    def enqueue(
        self,
        workspace_id: str,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        job_id: str | None = None,
        ttl: float | None = None,
    ) -> Job:
        """Store a new pending job and queue it, together or not at all.

        A generated ``job_id`` is a uuid4 hex. Safe to retry: a re-sent call recognises its own
        earlier write. ``ttl``: seconds the job's records live once it is finished (default:
        the store's ``finished_ttl``; an update's ``ttl=`` wins; docs/retention.md).

        :raises JobExists: a job with this id exists; nothing was changed.
        :raises InvalidIdentifier, InvalidArgument, PayloadTooLarge: bad input (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        return self._run(self._call_enqueue(workspace_id, action, params, job_id, ttl))

    def enqueue_many(self, items: Iterable[Sequence[Any]], *, ttl: float | None = None) -> list[Job]:
        """Enqueue ``(workspace_id, action[, params[, job_id]])`` tuples in one pipeline
        (``ttl``: every job's, as :meth:`enqueue`'s).

        Every item is validated before anything is sent. Each job is written atomically on
        its own; when some ids already existed, :class:`JobExists` is raised after the others
        were enqueued, with ``job_ids`` the existing ids and ``created`` the new jobs.

        :raises JobExists, InvalidIdentifier, InvalidArgument, PayloadTooLarge, StoreUnavailable:
        """
        call = self._call_enqueue_many(items, ttl)
        return [] if call is None else self._run(call)

    def get(self, job_id: str, *, workspace_id: str) -> Job | None:
        """The job, or None if it does not exist or belongs to another workspace.

        :raises CorruptRecord: the record cannot be decoded (``key`` and ``field`` say where).
        :raises InvalidIdentifier: bad ``job_id`` or ``workspace_id`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        return self._run(self._call_get(job_id, workspace_id))

    def update_status(
        self,
        job_id: str,
        status: JobStatus | str,
        *,
        workspace_id: str,
        result: Any = None,
        error: str | None = None,
        claim: str | None = None,
        ttl: float | None = None,
    ) -> Job:
        """Move a job to ``status``, setting ``result``/``error`` when given (None: unchanged).

        A move to a final status (completed, failed, cancelled) makes every copy of the job
        expire ``ttl`` seconds later (default: the ``ttl`` its enqueue gave, else the store's
        ``finished_ttl``, else never); other moves never set an expiry (docs/retention.md).

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
        return self._run(self._call_update_status(job_id, status, workspace_id, result, error,
                                                  claim, ttl))

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
        return self._run(self._call_list(workspace_id, status, limit, errors))

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
        return self._run(self._call_dequeue(timeout, lease))

    def extend(self, job: Job, seconds: float | None = None) -> None:
        """Renew the lease of a job this worker dequeued: it runs out ``seconds`` from now
        (default: the store's ``lease``), by Redis's clock. Call it from a heartbeat, well
        within the lease. A lease that ran out is still renewed while no other dequeue has
        taken the job over.

        :raises LeaseLost: the claim has ended (taken over, or the job finished or was deleted).
        :raises InvalidArgument: ``job`` is not a job from :meth:`dequeue`, or bad ``seconds``.
        :raises StoreUnavailable: Redis could not be reached.
        """
        self._run(self._call_extend(job, seconds))

    def finish(self, job: Job, status: JobStatus | str = "completed", *, result: Any = None,
               error: str | None = None, take_next: bool = True,
               lease: float | None = None, ttl: float | None = None) -> Job | None:
        """The worker loop's call: move ``job`` (from :meth:`dequeue`) to ``status`` under its
        claim, and with ``take_next`` claim the next job, in one round trip on standalone Redis.

        What ``update_status(job.job_id, status, workspace_id=job.workspace_id, result=result,
        error=error, claim=job.claim)`` then ``dequeue(timeout=0, lease=lease)`` do, with the
        same errors, events, leases and dead letters, and the same exactly-once guarantees (a
        re-sent call neither moves the job twice nor claims a second job). ``status``:
        ``completed``, ``failed`` or ``cancelled``. ``lease``: the next job's (default: the
        store's). ``ttl``: the finished job's retention, as :meth:`update_status`'s. Returns
        the next job, now ``running``, or None (nothing pending, or ``take_next=False``).
        Nothing is claimed unless the move was made.

        :raises LeaseLost: ``job.claim`` no longer holds the job; nothing written or claimed.
        :raises InvalidTransition, JobNotFound, CorruptRecord, PayloadTooLarge: as
            :meth:`update_status`; nothing written or claimed.
        :raises InvalidArgument: ``job`` is not a job from :meth:`dequeue`, ``status`` is not
            final, or bad ``result``, ``error``, ``take_next`` or ``lease`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        return self._run(self._call_finish(job, status, result, error, take_next, lease, ttl))

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
        return self._run(self._call_leave_legacy_queue(batch))

    def dead_letters(self, limit: int = 100) -> builtins.list[DeadLetter]:
        """The newest ``limit`` queue entries ``dequeue`` set aside, newest first.

        The list keeps the newest 10,000 (:data:`jobstore.dead_letters.MAX_DEAD_LETTERS`).

        :raises InvalidArgument: bad ``limit`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        return self._run(self._call_dead_letters(limit))

    def delete(self, job_id: str, *, workspace_id: str) -> bool:
        """Delete the job from every schema of the strategy; False if there was none.

        :raises InvalidIdentifier: bad ``job_id`` or ``workspace_id`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        return self._run(self._call_delete(job_id, workspace_id))

    def sweep(self, batch: int = 500, *, max_entries: int | None = None,
              max_seconds: float | None = None) -> dict[str, int]:
        """Prune what expired records leave behind (docs/retention.md): drop dead letters older
        than ``dead_letter_ttl``; walk the workspace indexes, ``batch`` entries a step, and drop
        the entries whose records are gone; give finished jobs that have no expiry yet (finished
        before a retention was set) their enqueue's ``ttl``, else the store's ``finished_ttl``.
        Safe under live traffic and beside another sweep (every step re-checks what it removes).

        Bounded: ``max_entries`` (index entries examined plus dead letters dropped) and
        ``max_seconds`` (checked before each step) stop a run; where it stopped is kept in
        Redis (per primary on a cluster) and the next run resumes there, so that runs on a
        schedule cover a keyspace of any size. Without bounds a run goes on to the end.

        Returns the counts: ``indexes``, ``entries`` (examined), ``pruned``, ``expiring``
        (records given an expiry), ``dead_letters`` (dropped); ``resumed`` (it began where an
        earlier run stopped) and ``complete`` (it reached the end of every index: the next run
        begins again from the start).

        :raises InvalidArgument: bad ``batch``, ``max_entries`` or ``max_seconds`` (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        return self._run(self._call_sweep(batch, max_entries, max_seconds))

    def migration(self) -> Migration:
        """The :class:`jobstore.migration.Migration` between the two schemas whose migration this
        store's strategy follows (``dual``'s source and target; any strategy's
        :meth:`~jobstore.Strategy.migration_schemas`).

        :raises ConfigError: the store's strategy follows no migration.
        """
        from .migration import Migration

        return Migration(self.client, **self._migration_options())

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

    @staticmethod
    def _open_url(url: str, strategy: str, **options: Any) -> JobStore:
        return open(url, strategy, **options)

    def _run(self, call: Call[T]) -> T:
        """Run a checked call (the server check first, until it passes) and tell ``events``
        how it went."""
        with self._observed(call):
            if not self._eviction_checked:
                self._check_eviction()
            return self.driver.run(call.op)

    def _check_eviction(self) -> None:
        """Refuse a Redis too old for jobstore, or (unless ``allow_eviction``) one that may
        evict keys: once per store, before anything else is sent (one INFO).

        A failed check is not remembered: the next operation checks again (so a store follows
        a policy fixed meanwhile, without a restart).
        """
        with self._eviction_lock:
            if not self._eviction_checked:
                self.driver.run(self._server_check(), plain=True)
                self._eviction_checked = True


