"""What the synchronous :class:`jobstore.JobStore` and the asyncio
:class:`jobstore.aio.AsyncJobStore` share: each public operation's argument checks and the
operation they build (``_call_<name>`` returns a :class:`Call`), how a call is reported to the
events, and the server check. Nothing here sends anything: a facade runs the call's operation
with its driver, awaited or not."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from . import config, eviction, ops, rules, server_check, validation
from .ops import finish as ops_finish
from .ops import retention as ops_retention
from .ops.context import new_job_id
from .codec import JSON, Codec
from .dead_letters import DeadLetter
from .errors import ConfigError, InvalidArgument, JobStoreError, PluginError, StoreUnavailable
from .job import Job, JobStatus, plain_params

if TYPE_CHECKING:
    from .events import Events
    from .layout import StoreKeys
    from .strategy import Strategy

T = TypeVar("T")


class _Writes(Protocol):
    """The write operations: the module jobstore.ops on standalone Redis, jobstore.ops.cluster on
    Redis Cluster (where a job's keys span slots)."""

    def enqueue(self, ctx: ops.Context, job: Job, fields: dict[str, str]) -> ops.Op[Job]: ...

    def enqueue_many(self, ctx: ops.Context,
                     jobs: list[tuple[Job, dict[str, str]]]) -> ops.Op[list[Job]]: ...

    def update_status(self, ctx: ops.Context, job_id: str, workspace_id: str, status: JobStatus,
                      changes: dict[str, str], claim: str | None = None,
                      ttl_ms: int | None = None) -> ops.Op[Job]: ...

    def delete(self, ctx: ops.Context, job_id: str, workspace_id: str) -> ops.Op[bool]: ...

    def dequeue(self, ctx: ops.Context, timeout: float | None,
                lease_ms: int | None = None) -> ops.Op[Job | None]: ...

    def extend(self, ctx: ops.Context, job: Job, lease_ms: int) -> ops.Op[None]: ...


@dataclass
class Call(Generic[T]):
    """One public call, checked: the operation to run and how the events name it.

    ``dual_writes``: the workspace of each job an enqueue writes (reported as dual writes when
    the routing writes more than one schema). ``attempted``: the jobs of an enqueue_many, named
    on a StoreUnavailable (which of them landed is unknown; retrying with their ids is safe).
    """

    op: ops.Op[T]
    name: str
    workspace_id: str | None
    dual_writes: builtins.list[str] | None = None
    attempted: builtins.list[Job] | None = None


class StoreCore:
    """The checks and operations of a store, for a facade that runs them (sync or asyncio).

    The attributes are set by :meth:`jobstore.JobStore.__init__` (which both facades run).
    """

    client: Any
    codec: Codec
    context: ops.Context
    events: Events
    keys: StoreKeys
    strategy: Strategy
    max_record_bytes: int
    time_format: str
    legacy_queue: str | None
    allow_eviction: bool
    prefix: str
    own_prefix: str
    url: str
    _writes: _Writes
    _eviction_checked: bool
    _eviction_label: str | None

    # -- operations: checks, then the operation (nothing sent) ---------------------------------

    def _call_enqueue(self, workspace_id: Any, action: Any, params: Any = None,
                      job_id: Any = None, ttl: Any = None) -> Call[Job]:
        return self._enqueue_call(*self._new_job(workspace_id, action, params, job_id,
                                                 ttl_ms=config.ttl_ms("ttl", ttl)))

    def _enqueue_call(self, job: Job, fields: dict[str, str]) -> Call[Job]:
        """The enqueue of a checked job (``_new_job``'s)."""
        return Call(self._writes.enqueue(self.context, job, fields), "enqueue", job.workspace_id,
                    dual_writes=[job.workspace_id])

    def _call_enqueue_many(self, items: Iterable[Sequence[Any]],
                           ttl: Any = None) -> Call[builtins.list[Job]] | None:
        """None: an empty batch (nothing to run; the caller returns [])."""
        ttl_ms = config.ttl_ms("ttl", ttl)
        batch: list[tuple[Job, dict[str, str]]] = []
        seen: set[str] = set()
        for position, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or not 2 <= len(item) <= 4:
                raise InvalidArgument(
                    f"items[{position}]", "must be (workspace_id, action[, params[, job_id]])"
                )
            job, fields = self._new_job(*item, ttl_ms=ttl_ms)
            if job.job_id in seen:
                raise InvalidArgument(
                    f"items[{position}]", f"job_id {job.job_id!r} appears twice in the batch"
                )
            seen.add(job.job_id)
            batch.append((job, fields))
        if not batch:
            return None
        return Call(self._writes.enqueue_many(self.context, batch), "enqueue_many", None,
                    dual_writes=[job.workspace_id for job, _ in batch],
                    attempted=[job for job, _ in batch])

    def _call_get(self, job_id: Any, workspace_id: Any) -> Call[Job | None]:
        job_id, workspace_id = self._ids(job_id, workspace_id)
        return Call(ops.get(self.context, job_id, workspace_id), "get", workspace_id)

    def _call_update_status(self, job_id: Any, status: Any, workspace_id: Any, result: Any,
                            error: Any, claim: Any, ttl: Any = None) -> Call[Job]:
        job_id, workspace_id = self._ids(job_id, workspace_id)
        status = validation.status(status)
        if claim is not None and (not isinstance(claim, str) or not claim or len(claim) > 1024):
            raise InvalidArgument("claim", f"must be a job's claim (a non-empty str), not {claim!r}")
        ttl_ms = config.ttl_ms("ttl", ttl)
        changes = self._changes(result, error)
        return Call(self._writes.update_status(self.context, job_id, workspace_id, status,
                                               changes, claim, ttl_ms), "update_status",
                    workspace_id)

    def _call_finish(self, job: Any, status: Any, result: Any, error: Any, take_next: Any,
                     lease: Any, ttl: Any = None) -> Call[Job | None]:
        if not isinstance(job, Job) or not isinstance(job.claim, str) or not job.claim:
            raise InvalidArgument("job", "must be a Job returned by dequeue (it carries a claim)")
        self._ids(job.job_id, job.workspace_id)
        status = validation.status(status)
        if not status.is_terminal:
            raise InvalidArgument("status", "must be completed, failed or cancelled (a worker "
                                            f"finishes its job), not {status.value!r}")
        if not isinstance(take_next, bool):
            raise InvalidArgument("take_next", f"must be True or False, not {take_next!r}")
        lease_ms = None if lease is None else _lease_ms("lease", lease, InvalidArgument)
        ttl_ms = config.ttl_ms("ttl", ttl)
        changes = self._changes(result, error)
        return Call(ops_finish.finish(self.context, job, status, changes, take_next, lease_ms,
                                      ttl_ms),
                    "finish", job.workspace_id)

    def _changes(self, result: Any, error: Any) -> dict[str, str]:
        """An update's ``result`` and ``error``, checked and encoded as the record stores them."""
        changes: dict[str, str] = {}
        if result is not None:
            changes["result"] = (validation.json_value("result", result) if self.codec is JSON
                                 else _encode(self.codec, "result", validation.checked_json("result", result)))
        if error is not None:
            changes["error"] = validation.error_text(error)
        validation.record_size(changes, self.max_record_bytes)
        return changes

    def _call_list(self, workspace_id: Any, status: Any, limit: Any,
                   errors: Any) -> Call[builtins.list[Job]]:
        workspace_id = validation.identifier("workspace_id", workspace_id)
        wanted = None if status is None else validation.status(status)
        limit = validation.limit(limit)
        if errors not in ("skip", "raise"):
            raise InvalidArgument("errors", f"must be 'skip' or 'raise', not {errors!r}")
        return Call(ops.list_jobs(self.context, workspace_id, wanted, limit, errors), "list",
                    workspace_id)

    def _call_dequeue(self, timeout: Any, lease: Any) -> Call[Job | None]:
        timeout = validation.timeout(timeout)
        lease_ms = None if lease is None else _lease_ms("lease", lease, InvalidArgument)
        return Call(self._writes.dequeue(self.context, timeout, lease_ms), "dequeue", None)

    def _call_extend(self, job: Any, seconds: Any) -> Call[None]:
        if not isinstance(job, Job) or not job.claim:
            raise InvalidArgument("job", "must be a Job returned by dequeue (it carries a claim)")
        lease_ms = self.context.lease_ms if seconds is None else _lease_ms("seconds", seconds,
                                                                           InvalidArgument)
        return Call(self._writes.extend(self.context, job, lease_ms), "extend", job.workspace_id)

    def _call_leave_legacy_queue(self, batch: Any) -> Call[dict[str, int]]:
        if not self.legacy_queue:
            raise ConfigError("leave_legacy_queue needs a store opened with legacy_queue=...")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100_000:
            raise InvalidArgument("batch", f"must be an int from 1 to 100000, not {batch!r}")
        return Call(ops.leave_legacy_queue(self.context, batch), "leave_legacy_queue", None)

    def _call_dead_letters(self, limit: Any) -> Call[builtins.list[DeadLetter]]:
        limit = validation.limit(limit)
        return Call(ops.dead_letters(self.context, limit), "dead_letters", None)

    def _call_sweep(self, batch: Any, max_entries: Any = None,
                    max_seconds: Any = None) -> Call[dict[str, int]]:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise InvalidArgument("batch", f"must be an int from 1 to 10000, not {batch!r}")
        if max_entries is not None and (isinstance(max_entries, bool)
                                        or not isinstance(max_entries, int) or max_entries < 1):
            raise InvalidArgument("max_entries", f"must be an int >= 1 or None, not {max_entries!r}")
        if max_seconds is not None and (isinstance(max_seconds, bool)
                                        or not isinstance(max_seconds, (int, float))
                                        or not 0 < max_seconds < float("inf")):
            raise InvalidArgument("max_seconds",
                                  f"must be a number of seconds above 0 or None, not {max_seconds!r}")
        return Call(ops_retention.sweep(self.context, batch, self.context.finished_ttl_ms,
                                        max_entries, max_seconds), "sweep", None)

    def _call_delete(self, job_id: Any, workspace_id: Any) -> Call[bool]:
        job_id, workspace_id = self._ids(job_id, workspace_id)
        return Call(self._writes.delete(self.context, job_id, workspace_id), "delete", workspace_id)

    def _migration_options(self) -> dict[str, Any]:
        """What a Migration (sync or asyncio) between the two schemas whose migration this
        store's strategy follows (:meth:`jobstore.Strategy.migration_schemas`) is made with.

        :raises ConfigError: the store's strategy follows no migration.
        """
        schemas = self.strategy.migration_schemas()
        if schemas is None:
            raise ConfigError(f"strategy {self.strategy.name!r} has no migration; open the store with 'dual'")
        source, target = schemas
        return dict(source=source.name, target=target.name, prefix=self.prefix,
                    own_prefix=self.own_prefix, url=self.url, events=self.events,
                    allow_eviction=self.allow_eviction)

    # -- running: what a facade does around its driver -----------------------------------------

    def _server_check(self) -> ops.Op[None]:
        """The check a store runs before its first operation (until it passes): a Redis too old
        for jobstore, or (unless ``allow_eviction``) one that may evict keys, is refused."""
        label = self._eviction_label or eviction.label_of(self.client)
        return server_check.check(self.allow_eviction, label)

    def _observed(self, call: Call[Any]) -> _Observed:
        """Tell ``events`` how ``call`` went (the facade runs it inside): ``ok``, or the class
        name of what it raised (a jobstore error, ``CancelledError``, ``KeyboardInterrupt``...)."""
        return _Observed(self, call)

    # -- internals ------------------------------------------------------------------------------

    def _ids(self, job_id: Any, workspace_id: Any) -> tuple[str, str]:
        return (
            validation.identifier("job_id", job_id),
            validation.identifier("workspace_id", workspace_id),
        )

    def _new_job(self, workspace_id: Any, action: Any, params: Any = None,
                 job_id: Any = None, *, ttl_ms: int | None = None) -> tuple[Job, dict[str, str]]:
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
        job_id = new_job_id() if job_id is None else validation.identifier("job_id", job_id)
        job, fields = Job.pending(job_id, workspace_id, action, encoded, time.time(),
                                  self.time_format, decoded)
        fields[rules.REV] = "1"  # the record's write count (jobstore.rules): its first write
        fields[rules.OP] = self.context.new_token()  # the enqueue call's (jobstore.rules.OP)
        if ttl_ms is not None:  # the retention the job gets when it finishes (rules.TTL)
            fields[rules.TTL] = str(ttl_ms)
        validation.record_size(fields, self.max_record_bytes)
        return job, fields


class _Observed:
    """The context of one call's run (:meth:`StoreCore._observed`): on its way out, ``events``
    hear how it went. A plain class, not a generator-based context manager: every operation
    runs inside one."""

    __slots__ = ("store", "call", "started")

    def __init__(self, store: StoreCore, call: Call[Any]) -> None:
        self.store = store
        self.call = call
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        store, call = self.store, self.call
        outcome = "ok"
        try:
            if exc is not None:  # a cancellation or an interrupt is no success either
                outcome = type(exc).__name__
                if isinstance(exc, JobStoreError):
                    for job in getattr(exc, "created", ()):  # enqueue_many: the rest landed
                        store.events.enqueued(job.workspace_id)
                    if isinstance(exc, StoreUnavailable) and call.attempted is not None:
                        # Which jobs landed is unknown; their ids are not: enqueue_many again
                        # with these job_ids and each comes back created or in JobExists,
                        # never twice.
                        exc.attempted = call.attempted
            else:
                for ws in call.dual_writes or ():
                    store.events.enqueued(ws)
        finally:
            store.events.operation(call.name, store.strategy.name, call.workspace_id, outcome,
                                   time.perf_counter() - self.started)
            if call.dual_writes is not None and outcome in ("ok", "StoreUnavailable"):
                for ws in call.dual_writes:
                    if len(store.strategy.routing(ws).writes) > 1:
                        store.events.dual_write(ws, outcome == "ok")


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


# A lease in whole milliseconds (the lease option's one check, jobstore.config).
_lease_ms = config.lease_ms
