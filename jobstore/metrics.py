"""Prometheus metrics for jobstore: what a store and a migration report, as prometheus-client metrics.

    from jobstore.metrics import PrometheusEvents, serve

    events = PrometheusEvents("ai")                      # the store's key prefix; REGISTRY by default
    store = jobstore.open(url, "dual", prefix="ai", events=events)
    migration = store.migration()                        # shares the store's events
    serve(9108)                                          # or expose REGISTRY from your web app

Metric names start with the key prefix made a valid metric name (:func:`metric_prefix`): the
store prefix ``ai`` gives ``ai_jobs_total``, ``ai_jobs_dual_write_total`` and
``ai_job_latency_seconds``, the names the dashboards of the migrated system already use.
docs/metrics.md lists every metric.

Metric objects are created once per (registry, metric prefix) and shared: any number of stores
and migrations in one process may each get their own ``PrometheusEvents`` on the same registry.
The hot path (``operation``, ``dual_write``, ``read_fallback``, ``shadow_read``) is a dict
lookup of a cached labelled child and prometheus-client's own increment; it takes no lock of its
own except the first time a workspace is admitted to the workspace label.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from typing import Any

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from .errors import ConfigError
from .events import Events
from .job import TEXT_FIELDS

__all__ = ["PrometheusEvents", "metric_prefix", "serve", "listen_address", "DEFAULT_BUCKETS",
           "OTHER", "ALL", "NONE"]

log = logging.getLogger(__name__)

# Redis operations take well under a millisecond to a few milliseconds: the default
# prometheus-client buckets (from 5 ms) could not tell a p99 of 1 ms from one of 4 ms.
DEFAULT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OTHER = "__other__"  # workspaces beyond max_workspaces
ALL = "__all__"  # every workspace, with workspace_label=False
NONE = "__none__"  # operations without a workspace (enqueue_many, dequeue, dead_letters)

PHASES = ("off", "dual-write", "read-target", "target-only")
# The fields whose problems make a record undecodable (jobstore.job.record_problem); anything
# else reported is counted as __other__, so the label stays bounded.
LEASE_OUTCOMES = ("reclaimed", "failed")
CORRUPT_FIELDS = TEXT_FIELDS
DEAD_LETTER_KINDS = ("record", "entry")
VERIFY_KINDS = ("missing", "differing", "orphaned", "target_newer", "unroutable")


def metric_prefix(key_prefix: str) -> str:
    """The metric name prefix for a key prefix.

    Every character other than ``A-Z a-z 0-9 _`` (the key prefix may hold ``:``, ``-`` and
    ``.``) becomes ``_``, and a prefix starting with a digit gets a leading ``_``:
    ``ai`` -> ``ai``, ``svc:jobs`` -> ``svc_jobs``, ``my-app.v2`` -> ``my_app_v2``,
    ``9x`` -> ``_9x``. Distinct key prefixes can map to one metric prefix (``a-b``, ``a:b``):
    their stores then share the metrics; give them different registries to keep them apart.
    """
    if not isinstance(key_prefix, str) or not key_prefix:
        raise ConfigError(f"metrics prefix must be a non-empty str, not {key_prefix!r}")
    name = re.sub(r"[^A-Za-z0-9_]", "_", key_prefix)
    return "_" + name if name[0].isdigit() else name


class _Metrics:
    """The metric objects of one (registry, metric prefix), shared by every PrometheusEvents on it."""

    def __init__(self, registry, p: str, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.lock = threading.Lock()  # admission of workspaces and phase changes only
        self.workspaces: set[str] = set()
        self.phases: dict[str, str] = {}

        def make(cls, name, doc, labels, **kwargs):
            return _register(registry, cls, f"{p}_{name}", doc, labels, **kwargs)

        ws = "workspace_id"
        self.jobs = make(Counter, "jobs_total", "Jobs enqueued: stored and queued by an enqueue.", (ws,))
        self.dual_write = make(Counter, "jobs_dual_write_total",
                               "Jobs written to two schemas in one atomic write (result succeeded), "
                               "or whose two-schema write failed (result failed).", (ws, "result"))
        self.latency = make(Histogram, "job_latency_seconds",
                            "Time a store operation took, from call to return (errors included).",
                            (ws, "operation", "strategy"), buckets=buckets)
        self.operations = make(Counter, "jobs_operations_total",
                               "Store operations by outcome (ok, or the error class name).",
                               ("operation", "strategy", "outcome"))
        self.read_fallback = make(Counter, "jobs_read_fallback_total",
                                  "Reads that found the job only in a later schema of the read "
                                  "order (the source, in read-target).", (ws,))
        self.shadow = make(Counter, "jobs_shadow_reads_total",
                           "Shadow reads of the target in dual-write, by result "
                           "(match, mismatch, missing).", ("result",))
        self.corrupt = make(Counter, "jobs_corrupt_records_total",
                            "Records a store met and could not decode (get, list, update_status, "
                            "dequeue), by the first bad field.", ("field",))
        self.dead_letters = make(Counter, "jobs_dead_letters_total",
                                 "Queue entries dequeue moved to the dead-letter list, by kind "
                                 "(record: the job's record cannot be decoded; entry: the entry "
                                 "cannot be parsed).", ("kind",))
        self.leases_expired = make(Counter, "jobs_leases_expired_total",
                                   "Dequeued jobs whose lease ran out (their worker stopped "
                                   "renewing it), by what a later dequeue did: reclaimed (handed "
                                   "out again) or failed (max_attempts reached).", ("outcome",))
        mp = ("migration", "step")
        self.records = make(Counter, "jobs_migration_records_total",
                            "Records a migration pass handled, by outcome.", mp + ("outcome",))
        self.scanned = make(Gauge, "jobs_migration_scanned_records",
                            "Records the current or last pass has scanned.", mp)
        self.expected = make(Gauge, "jobs_migration_expected_records",
                             "Records the pass counted before it started.", mp)
        self.remaining = make(Gauge, "jobs_migration_remaining_records",
                              "Expected records the pass has not scanned yet.", mp)
        self.ratio = make(Gauge, "jobs_migration_progress_ratio",
                          "Scanned / expected records of the pass (0 to 1).", mp)
        self.rate = make(Gauge, "jobs_migration_rate_records_per_second",
                         "Records per second since the pass started in this process.", mp)
        self.eta = make(Gauge, "jobs_migration_eta_seconds",
                        "Remaining records / rate: the estimated time to the end of the pass.", mp)
        self.last_progress = make(Gauge, "jobs_migration_last_progress_timestamp_seconds",
                                  "Unix time the pass last finished a batch.", mp)
        self.finished = make(Gauge, "jobs_migration_pass_finished",
                             "1 once the pass has finished, 0 while it runs.", mp)
        self.phase = make(Gauge, "jobs_migration_phase",
                          "The migration's current phase (1) and the others (0), as a store "
                          "or the migration last saw it.", ("migration", "phase"))
        self.verify_problems = make(Gauge, "jobs_verify_problems",
                                    "Problems the last verify found, by kind (the kinds that "
                                    "count as problems in its phase; they sum to its problems).",
                                    ("migration", "kind"))
        self.verify_clean = make(Gauge, "jobs_verify_clean",
                                 "1 when the last verify found no problem, else 0.", ("migration",))
        self.verify_checked = make(Gauge, "jobs_verify_checked_records",
                                   "Records the last verify checked, by side (source, target).",
                                   ("migration", "side"))
        self.verify_repaired = make(Gauge, "jobs_verify_repaired_records",
                                    "Records the last verify repaired (with --repair).", ("migration",))
        self.verify_last = make(Gauge, "jobs_verify_last_run_timestamp_seconds",
                                "Unix time the last verify ended.", ("migration",))
        # Labelled children, cached by label values: the hot path skips prometheus-client's
        # lock and label validation in labels() after the first time.
        self.c_jobs: dict = {}
        self.c_dual: dict = {}
        self.c_latency: dict = {}
        self.c_operations: dict = {}
        self.c_fallback: dict = {}
        self.c_shadow: dict = {}
        # Series an alert watches exist at 0 from the start: increase() cannot see the first
        # increment of a series that appears with value 1.
        for result in ("match", "mismatch", "missing"):
            self.c_shadow[result] = self.shadow.labels(result)
        self.c_corrupt = {field: self.corrupt.labels(field) for field in CORRUPT_FIELDS}
        self.c_dead = {kind: self.dead_letters.labels(kind) for kind in DEAD_LETTER_KINDS}
        self.c_leases = {outcome: self.leases_expired.labels(outcome)
                         for outcome in LEASE_OUTCOMES}


def _register(registry, cls, name, doc, labels, **kwargs):
    try:
        return cls(name, doc, labels, registry=registry, **kwargs)
    except ValueError as exc:
        if "Duplicated timeseries" not in str(exc):
            raise
    # Registered before by someone else (the application's own telemetry module, say): share
    # it when it is the same kind of metric with the same labels, else say what clashes.
    existing = getattr(registry, "_names_to_collectors", {}).get(name)
    if type(existing) is cls and tuple(getattr(existing, "_labelnames", ())) == tuple(labels):
        return existing
    raise ConfigError(
        f"metric {name!r} is already registered in this registry as a different metric "
        f"({existing!r}); jobstore needs a {cls.__name__} with labels {list(labels)}: remove the "
        "other definition, or pass PrometheusEvents another registry or prefix"
    )


_bundles: weakref.WeakKeyDictionary[Any, dict[str, _Metrics]] = weakref.WeakKeyDictionary()
_bundles_by_id: dict[int, tuple[Any, dict[str, _Metrics]]] = {}  # registries without weakrefs
_bundles_lock = threading.Lock()


def _metrics_for(registry, p: str, buckets: tuple[float, ...]) -> _Metrics:
    with _bundles_lock:
        try:
            per_registry = _bundles.setdefault(registry, {})
        except TypeError:  # not weak-referenceable: keep it alive with its metrics
            per_registry = _bundles_by_id.setdefault(id(registry), (registry, {}))[1]
        metrics = per_registry.get(p)
        if metrics is None:
            metrics = per_registry[p] = _Metrics(registry, p, buckets)
        elif metrics.buckets != buckets:
            raise ConfigError(
                f"{p}_job_latency_seconds already exists in this registry with buckets "
                f"{list(metrics.buckets)}; every PrometheusEvents on one registry and prefix "
                "must use the same buckets"
            )
        return metrics


class _PassState:
    __slots__ = ("counts", "done", "started", "started_done", "finished")

    def __init__(self, done: int):
        self.counts: dict[str, int] = {}
        self.done = done
        self.started = time.monotonic()
        self.started_done = done
        self.finished = False


class PrometheusEvents(Events):
    """:class:`jobstore.events.Events` that records Prometheus metrics.

    ``prefix``: the store's key prefix (``ai``); metric names start with
    ``metric_prefix(prefix)``. ``registry``: a ``prometheus_client.CollectorRegistry``
    (default ``prometheus_client.REGISTRY``). ``max_workspaces``: distinct workspace ids shown
    in the ``workspace_id`` label, per registry and prefix; later ones are counted as
    ``__other__``. ``workspace_label=False``: every workspace is ``__all__`` (the label stays,
    so queries and dashboards keep working). ``buckets``: the latency histogram's buckets.
    """

    def __init__(self, prefix: str = "ai", *, registry=None, max_workspaces: int = 100,
                 workspace_label: bool = True, buckets=DEFAULT_BUCKETS, mismatch_sample: int = 50):
        super().__init__(mismatch_sample)
        if isinstance(max_workspaces, bool) or not isinstance(max_workspaces, int) or max_workspaces < 0:
            raise ConfigError(f"max_workspaces must be an int >= 0, not {max_workspaces!r}")
        self.prefix = metric_prefix(prefix)
        self.registry = prometheus_client.REGISTRY if registry is None else registry
        self.max_workspaces = max_workspaces
        self.workspace_label = bool(workspace_label)
        self.metrics = _metrics_for(self.registry, self.prefix, tuple(float(b) for b in buckets))
        self._passes: dict[tuple[str, str], _PassState] = {}
        self._failures: set[str] = set()

    # -- the store's hot path ------------------------------------------------------------------

    def _workspace(self, workspace_id: str | None) -> str:
        if not self.workspace_label:
            return ALL
        if workspace_id is None:
            return NONE
        admitted = self.metrics.workspaces
        if workspace_id in admitted:
            return workspace_id
        if len(admitted) >= self.max_workspaces:
            return OTHER
        with self.metrics.lock:
            if workspace_id not in admitted and len(admitted) < self.max_workspaces:
                admitted.add(workspace_id)
        return workspace_id if workspace_id in admitted else OTHER

    def operation(self, name: str, strategy: str, workspace_id: str | None, outcome: str,
                  seconds: float) -> None:
        try:
            m = self.metrics
            ws = self._workspace(workspace_id)
            key = (ws, name, strategy)
            child = m.c_latency.get(key)
            if child is None:
                child = m.c_latency[key] = m.latency.labels(*key)
            child.observe(seconds)
            key = (name, strategy, outcome)
            child = m.c_operations.get(key)
            if child is None:
                child = m.c_operations[key] = m.operations.labels(*key)
            child.inc()
        except Exception:  # noqa: BLE001 - events must never raise
            self._failed("operation")

    def enqueued(self, workspace_id: str, n: int = 1) -> None:
        """``n`` jobs of ``workspace_id`` were stored and queued (``ai_jobs_total``)."""
        try:
            self._jobs(self._workspace(workspace_id), n)
        except Exception:  # noqa: BLE001
            self._failed("enqueued")

    def _jobs(self, ws: str, n: int) -> None:
        m = self.metrics
        child = m.c_jobs.get(ws)
        if child is None:
            child = m.c_jobs[ws] = m.jobs.labels(ws)
        child.inc(n)

    def dual_write(self, workspace_id: str, succeeded: bool) -> None:
        try:
            m = self.metrics
            ws = self._workspace(workspace_id)
            key = (ws, "succeeded" if succeeded else "failed")
            child = m.c_dual.get(key)
            if child is None:
                # Both results of a workspace appear together, the failed one at 0: an alert on
                # increase(...{result="failed"}) then sees the workspace's first failure.
                for result in ("succeeded", "failed"):
                    m.c_dual.setdefault((ws, result), m.dual_write.labels(ws, result))
                child = m.c_dual[key]
            child.inc()
        except Exception:  # noqa: BLE001
            self._failed("dual_write")

    def read_fallback(self, workspace_id: str) -> None:
        try:
            m = self.metrics
            ws = self._workspace(workspace_id)
            child = m.c_fallback.get(ws)
            if child is None:
                child = m.c_fallback[ws] = m.read_fallback.labels(ws)
            child.inc()
        except Exception:  # noqa: BLE001
            self._failed("read_fallback")

    def shadow_read(self, workspace_id: str, job_id: str, outcome: str,
                    fields: tuple[str, ...] = ()) -> None:
        try:
            super().shadow_read(workspace_id, job_id, outcome, fields)  # keeps the mismatch sample
            m = self.metrics
            child = m.c_shadow.get(outcome)
            if child is None:
                child = m.c_shadow[outcome] = m.shadow.labels(outcome)
            child.inc()
        except Exception:  # noqa: BLE001
            self._failed("shadow_read")

    def corrupt_record(self, key: str, field: str, reason: str, *, operation: str) -> None:
        """A record that cannot be decoded (``ai_jobs_corrupt_records_total{field}``)."""
        try:
            super().corrupt_record(key, field, reason, operation=operation)  # keeps the sample
            m = self.metrics
            child = m.c_corrupt.get(field)
            if child is None:
                child = m.c_corrupt.setdefault(OTHER, m.corrupt.labels(OTHER))
            child.inc()
        except Exception:  # noqa: BLE001
            self._failed("corrupt_record")

    def dead_letter(self, letter) -> None:
        """A queue entry dequeue set aside (``ai_jobs_dead_letters_total{kind}``)."""
        try:
            self.metrics.c_dead["entry" if letter.key is None else "record"].inc()
        except Exception:  # noqa: BLE001
            self._failed("dead_letter")

    def lease_expired(self, workspace_id: str, outcome: str) -> None:
        """A lease that ran out (``ai_jobs_leases_expired_total{outcome}``)."""
        try:
            self.metrics.c_leases[outcome].inc()
        except Exception:  # noqa: BLE001
            self._failed("lease_expired")

    # -- migrations (once per batch, phase refresh or report: not the hot path) ----------------

    def phase(self, migration: str, phase: str) -> None:
        try:
            m = self.metrics
            if m.phases.get(migration) == phase:  # the common case: nothing changed
                return
            with m.lock:
                for name in PHASES if phase in PHASES else PHASES + (phase,):
                    m.phase.labels(migration, name).set(1 if name == phase else 0)
                m.phases[migration] = phase
        except Exception:  # noqa: BLE001
            self._failed("phase")

    def migration_progress(self, migration: str, step: str, done: int, total: int | None,
                           counts: dict[str, int]) -> None:
        try:
            self._progress(migration, step, done, total, counts)
        except Exception:  # noqa: BLE001
            self._failed("migration_progress")

    def _progress(self, migration, step, done, total, counts) -> None:
        m = self.metrics
        key = (migration, step)
        with self._lock:
            state = self._passes.get(key)
            if state is None or state.finished or done < state.done or any(
                counts.get(outcome, 0) < n for outcome, n in state.counts.items()
            ):
                # A new pass (its counts start again). A pass resumed in this process continues
                # the counts of the one interrupted, so it counts on from there.
                state = self._passes[key] = _PassState(done)
            deltas = {outcome: n - state.counts.get(outcome, 0) for outcome, n in counts.items()}
            state.counts = dict(counts)
            state.done = done
            elapsed = time.monotonic() - state.started
            rate = (done - state.started_done) / elapsed if elapsed > 0 and done > state.started_done else None
        for outcome, delta in deltas.items():
            if delta > 0:
                m.records.labels(migration, step, outcome).inc(delta)
        m.scanned.labels(migration, step).set(done)
        if total is not None:
            remaining = max(total - done, 0)
            m.expected.labels(migration, step).set(total)
            m.remaining.labels(migration, step).set(remaining)
            m.ratio.labels(migration, step).set(min(done / total, 1.0) if total else 1.0)
            if rate:
                m.eta.labels(migration, step).set(remaining / rate)
        if rate is not None:
            m.rate.labels(migration, step).set(rate)
        m.last_progress.labels(migration, step).set(time.time())
        # Until the migration reports the end of the pass (pass_result), a pass that has
        # scanned every record it counted is taken as finished.
        m.finished.labels(migration, step).set(1 if total is not None and done >= total else 0)

    def pass_result(self, migration: str, report) -> None:
        """A backfill, reverse sync or cleanup returned ``report`` (a ``PassReport``).

        Idempotent: the CLI and the migration may both report the same pass.
        """
        try:
            step = report.step.replace("_", "-")
            with self._lock:
                state = self._passes.get((migration, step))
                if state is not None and report.finished:
                    state.finished = True  # the next progress of this step is a new pass
            self.metrics.finished.labels(migration, step).set(1 if report.finished else 0)
        except Exception:  # noqa: BLE001
            self._failed("pass_result")

    def verify_result(self, migration: str, report) -> None:
        """A verify returned ``report`` (a ``VerifyReport``): set the verify gauges.

        Idempotent: the CLI and the migration may both report the same verify.
        """
        try:
            m = self.metrics
            only_target = report.phase == "target-only"
            problems = {
                "missing": report.missing,
                "differing": report.differing,
                "unroutable": report.unroutable,
                # Expected in target-only (the target moved on; new jobs exist only there).
                "orphaned": 0 if only_target else report.orphaned,
                "target_newer": 0 if only_target else report.target_newer,
            }
            for kind, n in problems.items():
                m.verify_problems.labels(migration, kind).set(n)
            m.verify_clean.labels(migration).set(1 if report.clean else 0)
            m.verify_checked.labels(migration, "source").set(report.checked_source)
            m.verify_checked.labels(migration, "target").set(report.checked_target)
            m.verify_repaired.labels(migration).set(report.repaired)
            m.verify_last.labels(migration).set(time.time())
        except Exception:  # noqa: BLE001
            self._failed("verify_result")

    def _failed(self, where: str) -> None:
        if where not in self._failures:  # once per method: never flood the log from a hot path
            self._failures.add(where)
            log.warning("jobstore metrics: %s failed; metrics may be incomplete", where, exc_info=True)

    def __repr__(self) -> str:
        return (f"<PrometheusEvents prefix={self.prefix!r} max_workspaces={self.max_workspaces} "
                f"workspace_label={self.workspace_label}>")


def listen_address(value: str | int) -> tuple[str, int]:
    """``PORT``, ``ADDR:PORT`` or ``[IPV6]:PORT`` -> ``(addr, port)``; the address defaults to
    127.0.0.1 (scrapers on other hosts need ``0.0.0.0:PORT``)."""
    text = str(value).strip()
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"metrics address {value!r} must be PORT or ADDR:PORT with a port 0-65535")
    return addr, number


def serve(port: int, addr: str = "127.0.0.1", registry=None):
    """Serve ``registry`` (default ``prometheus_client.REGISTRY``) at ``http://addr:port/metrics``
    from a daemon thread; returns prometheus-client's ``(server, thread)``.

    Port 0 picks a free port (``server.server_port``). Stop it with ``server.shutdown()``.

    :raises ConfigError: the address cannot be bound (in use, not local, no permission).
    """
    registry = prometheus_client.REGISTRY if registry is None else registry
    try:
        return prometheus_client.start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
