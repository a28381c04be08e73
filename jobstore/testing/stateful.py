"""State machines that drive real stores and the model with the same operations.

:class:`StoreMachine` feeds one store (or several stores that must behave the same, such as
``dual`` pinned in each phase) and a :class:`~jobstore.testing.model.StoreModel` with a random
stream of enqueues, batch enqueues, reads, legal and illegal status moves, lists, dequeues and
deletes, over a few workspaces and a small pool of job ids (so ids collide, within and across
workspaces). Every outcome, a result or an error, must equal the model's, and after every step
every workspace is listed and compared.

:class:`MultiStrategyMachine` feeds the same stream to stores of every strategy (``legacy``,
``workspace``, extra schemas, ``dual`` pinned in each phase) plus ``dual`` stores whose phase is
moved through a whole migration and back (:class:`jobstore.migration.Migration`) while the
stream runs: every store must read exactly what the model says, whatever its layout or phase.

Both are plain Hypothesis ``RuleBasedStateMachine`` classes; :func:`run_machine` runs one under
the kit's profile (:func:`jobstore.testing.profiles.kit_settings`)::

    run_machine(lambda: StoreMachine("memory://", "hashtag"))

Every run uses a fresh random key prefix on the given database and deletes its own keys when it
ends, so runs never see each other and nothing else in the database is touched.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hypothesis import HealthCheck, note, settings as Settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ..connection import connect
from ..errors import JobExists, JobStoreError, MigrationRefused
from ..job import ALLOWED_MOVES, Job, JobStatus
from ..migration import Migration
from ..phases import Phase
from ..store import JobStore
from .model import BY_DESIGN, ModelJob, StoreModel, ids_per_store, job_view
from .profiles import kit_settings

__all__ = [
    "MIGRATION_CYCLE",
    "FakeClock",
    "MultiStrategyMachine",
    "StoreMachine",
    "run_machine",
]

WORKSPACES = ("ws-a", "ws-b", "ws-c")
JOB_IDS = ("j0", "j1", "j2", "j3")
PHASES = tuple(p.value for p in Phase)

workspaces = st.sampled_from(WORKSPACES)
pool_ids = st.sampled_from(JOB_IDS)
statuses = st.sampled_from(tuple(JobStatus))
actions = st.sampled_from(("summarise", "embed", "résumé ✓", "a" * 256))
_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text("aé☃ \"\\{}:*", max_size=4)
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text("ab", max_size=2), inner, max_size=2),
    max_leaves=4,
)
params_values = st.none() | st.dictionaries(st.text("abk{:", max_size=3), json_values, max_size=2)
results = st.none() | json_values  # None: leave the result unchanged
errors = st.none() | st.sampled_from(("", "boom", "timed out after 30 s", "ünïcode ✗"))
limits = st.sampled_from((1, 2, 3, 100))


def run_machine(factory: Callable[[], RuleBasedStateMachine], settings: Settings | None = None) -> None:
    """Run a machine as a test under the kit's profile (or ``settings``), leaving the caller's
    global Hypothesis settings alone.

    The deadline is always off: a step's time is Redis latency, not a bug.
    """
    base = settings if settings is not None else kit_settings()
    run_state_machine_as_test(
        factory,
        settings=Settings(base, deadline=None,
                          suppress_health_check=[*base.suppress_health_check, HealthCheck.too_slow]),
    )


class FakeClock:
    """A clock for :class:`Migration` whose ``wait`` advances time instead of sleeping.

    Every reading moves on by a millisecond, as a real clock would between two calls (a switch
    rule compares a verify's start with the moment dual writes began: they must not be equal).
    """

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


# One lap of a migration and back, each entry one step. The machine starts in ``off``.
MIGRATION_CYCLE = (
    "dual-write", "backfill", "verify", "read-target", "target-only", "cleanup",
    "reverse-sync", "read-target", "reverse-sync", "dual-write", "off",
)


@dataclass
class Subject:
    """One store under test, and the creation time it gave each of its jobs."""

    name: str
    store: JobStore
    created: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass
class Migrating(Subject):
    """A ``dual`` store whose phase the machine moves through :data:`MIGRATION_CYCLE`."""

    migration: Migration | None = None
    prefix: str = ""
    source: str = "legacy"
    target: str = "workspace"
    phase: str = "off"
    step: int = 0
    laps: int = 0
    # Updates made in ``off`` after the target held records leave stale target copies, which
    # only ``verify --repair`` brings back in line (a backfill never overwrites).
    target_stale: bool = False


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except JobStoreError as exc:
        return "raised", exc


def _describe(outcome: tuple[str, Any]) -> str:
    kind, value = outcome
    if kind == "raised":
        return f"raised {type(value).__name__}({value})"
    return f"returned {_views(value)!r}"


def _views(value: Any) -> Any:
    if isinstance(value, (Job, ModelJob)):
        return job_view(value)
    if isinstance(value, list):
        return [_views(v) for v in value]
    return value


def _error_details(exc: Exception) -> tuple:
    if isinstance(exc, JobExists):
        return (exc.job_ids, [job_view(j) for j in exc.created])
    for attrs in (("current", "requested"), ("argument",), ("job_id", "workspace_id")):
        if all(hasattr(exc, a) for a in attrs):
            return tuple(getattr(exc, a) for a in attrs)
    return ()


def _unique_prefix() -> str:
    return f"jst{uuid.uuid4().hex[:10]}"


class _Harness(RuleBasedStateMachine):
    """The rules and checks shared by both machines; ``self.subjects`` are the stores under test.

    Class attributes a subclass may change:

    - ``generated_ids``: also enqueue without ``job_id`` (the store makes a uuid4 hex).
    - ``cross_workspace_ids``: enqueue an id that another workspace holds. Off when stores of
      different id scopes are compared (``legacy`` refuses what ``workspace`` accepts).
    - ``steer_clear_of``: names from :data:`~jobstore.testing.model.BY_DESIGN` whose
      sequences are skipped.
    """

    generated_ids = True
    cross_workspace_ids = True
    steer_clear_of: frozenset[str] = frozenset(BY_DESIGN)

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.prefix = _unique_prefix()
        self.client = connect(url)
        self.subjects: dict[str, Subject] = {}
        self.model = StoreModel(ids_per_store=False)

    def open_store(self, name: str, strategy: str, options: Mapping[str, Any]) -> JobStore:
        # Every store gets a prefix of its own on the one database.
        return JobStore(self.client, strategy, prefix=f"{self.prefix}:{len(self.subjects)}", **options)

    def teardown(self) -> None:
        try:
            keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                self.client.delete(*keys[start : start + 500])
        finally:
            self.client.close()

    # -- comparing ------------------------------------------------------------------------

    def _apply(self, description: str, model_call: Callable[[], Any],
               store_call: Callable[[JobStore], Any], check: Callable | None = None) -> tuple[str, Any]:
        """Run ``model_call`` once and ``store_call`` on every subject; outcomes must agree."""
        note(description)
        expected = _outcome(model_call)
        for subject in self.subjects.values():
            actual = _outcome(lambda: store_call(subject.store))
            self._same(subject, description, expected, actual, check)
        return expected

    def _same(self, subject: Subject, description: str, expected, actual, check=None) -> None:
        where = f"{subject.name}: {description}"
        (kind, want), (got_kind, got) = expected, actual
        if kind != got_kind or (kind == "raised" and type(want) is not type(got)):
            raise AssertionError(
                f"{where}\n  the contract (model) {_describe(expected)}\n  the store {_describe(actual)}"
            )
        if kind == "raised":
            assert _error_details(want) == _error_details(got), (
                f"{where}: error details differ: model {_error_details(want)!r}, "
                f"store {_error_details(got)!r}"
            )
            if isinstance(got, JobExists):
                for job in got.created:
                    self._created(subject, job)
            return
        if check is not None:
            check(subject, want, got, where)
            return
        assert _views(want) == _views(got), (
            f"{where}\n  the contract (model) {_describe(expected)}\n  the store {_describe(actual)}"
        )
        for job in got if isinstance(got, list) else [got]:
            if isinstance(job, Job):
                self._created_at_kept(subject, job, where)

    def _created(self, subject: Subject, job: Job) -> None:
        assert job.created_at == job.updated_at > 0, f"{subject.name}: new job's times {job!r}"
        subject.created[(job.workspace_id, job.job_id)] = job.created_at

    def _created_at_kept(self, subject: Subject, job: Job, where: str) -> None:
        known = subject.created.get((job.workspace_id, job.job_id))
        assert known is None or job.created_at == known, (
            f"{where}: created_at changed from {known!r} to {job.created_at!r}"
        )

    def _check_listing(self, subject: Subject, want: list[ModelJob], got: list[Job], where: str,
                       every: list[ModelJob], limit: int) -> None:
        """Newest first by the creation time the store gave each job; ties in any order."""
        by_time: dict[float, list] = {}
        for job in every:
            by_time.setdefault(subject.created.get(job.key, 0.0), []).append(job_view(job))
        groups = [Counter(by_time[t]) for t in sorted(by_time, reverse=True)]
        views = [job_view(j) for j in got]
        problem = None
        if len(views) != min(limit, len(every)):
            problem = f"{len(views)} jobs, expected {min(limit, len(every))}"
        else:
            position = 0
            for group in groups:
                taken = Counter(views[position : position + sum(group.values())])
                if not taken:
                    break
                if not taken <= group:
                    problem = f"position {position}: {dict(taken)} is not among {dict(group)}"
                    break
                position += sum(taken.values())
        if problem:
            raise AssertionError(
                f"{where}: {problem}\n  the contract (model) {[job_view(j) for j in want]!r}"
                f"\n  the store returned {views!r}"
            )
        for job in got:
            self._created_at_kept(subject, job, where)

    # -- steering -------------------------------------------------------------------------

    def _skip_enqueue(self, workspace_id: str, job_id: str) -> str | None:
        """Why this enqueue is left out of the stream, or None."""
        others = self.model.holders(job_id) - {workspace_id}
        if others and not self.cross_workspace_ids:
            return "its id is held by another workspace (stores of different id scopes differ by design)"
        if others and "target-only-id-scope" in self.steer_clear_of and self.model.ids_per_store:
            for subject in self.subjects.values():
                routing = subject.store.strategy.routing(workspace_id)
                if all(s.scoped for s in routing.writes):
                    return "by design: target-only-id-scope"
        return None

    def _job_id_for(self, workspace_id: str, job_id: str | None) -> str:
        """The id to enqueue: a fresh one for None; without cross-workspace ids, a pool id held
        by another workspace becomes an id of this workspace's own."""
        if job_id is None:
            return f"g{self.model._seq + 1}"
        if not self.cross_workspace_ids and self.model.holders(job_id) - {workspace_id}:
            return f"{job_id}.{workspace_id}"
        return job_id

    def _job_keys(self) -> list[tuple[str, str]]:
        """The model's jobs in enqueue order. Not sorted by key: generated ids are random, and
        draws must not depend on them, or Hypothesis could not replay a failing run."""
        return [job.key for job in sorted(self.model.jobs.values(), key=lambda j: j.seq)]

    def _mutated(self) -> None:
        """A write that may leave a migrating store's target copies stale (in ``off``)."""
        for subject in self.subjects.values():
            if isinstance(subject, Migrating) and subject.phase == "off" and subject.laps:
                subject.target_stale = True

    # -- rules ----------------------------------------------------------------------------

    @rule(ws=workspaces, action=actions, params=params_values, job_id=st.none() | pool_ids)
    def enqueue(self, ws, action, params, job_id):
        if job_id is None and self.generated_ids and len(self.subjects) == 1:
            (subject,) = self.subjects.values()
            note(f"enqueue({ws!r}, {action!r}, {params!r})  # generated id")
            job = subject.store.enqueue(ws, action, params)
            assert re.fullmatch(r"[0-9a-f]{32}", job.job_id), f"generated id {job.job_id!r}"
            assert job_view(job) == job_view(self.model.enqueue(ws, action, params, job.job_id))
            self._created(subject, job)
            return
        job_id = self._job_id_for(ws, job_id)
        why = self._skip_enqueue(ws, job_id)
        if why:
            note(f"(skipped enqueue of {job_id!r} in {ws!r}: {why})")
            return
        self._apply(
            f"enqueue({ws!r}, {action!r}, {params!r}, job_id={job_id!r})",
            lambda: self.model.enqueue(ws, action, params, job_id),
            lambda store: store.enqueue(ws, action, params, job_id=job_id),
            check=self._check_enqueued,
        )

    def _check_enqueued(self, subject, want, got, where):
        assert job_view(want) == job_view(got), f"{where}: model {job_view(want)!r}, store {job_view(got)!r}"
        assert got.status is JobStatus.PENDING
        self._created(subject, got)

    @rule(items=st.lists(st.tuples(workspaces, actions, params_values, pool_ids), min_size=1,
                         max_size=4, unique_by=lambda item: item[3]),
          repeat=st.sampled_from((False,) * 7 + (True,)))
    def enqueue_many(self, items, repeat):
        items = [(ws, action, params, self._job_id_for(ws, job_id)) for ws, action, params, job_id in items]
        if repeat:  # the same id twice in one batch is refused before anything is sent
            items.append(items[0])
        kept = []
        for item in items:
            why = self._skip_enqueue(item[0], item[3])
            if why:
                note(f"(left {item[3]!r} in {item[0]!r} out of the batch: {why})")
            else:
                kept.append(item)
        if not kept:
            return
        self._apply(
            f"enqueue_many({kept!r})",
            lambda: self.model.enqueue_many(kept),
            lambda store: store.enqueue_many(kept),
            check=self._check_batch,
        )

    def _check_batch(self, subject, want, got, where):
        assert [job_view(j) for j in want] == [job_view(j) for j in got], (
            f"{where}: model {[job_view(j) for j in want]!r}, store {[job_view(j) for j in got]!r}"
        )
        for job in got:
            self._created(subject, job)

    @rule(ws=workspaces, job_id=pool_ids)
    def get(self, ws, job_id):
        self._apply(f"get({job_id!r}, workspace_id={ws!r})",
                    lambda: self.model.get(job_id, ws),
                    lambda store: store.get(job_id, workspace_id=ws))

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data(), as_owner=st.booleans())
    def get_existing(self, data, as_owner):
        ws, job_id = data.draw(st.sampled_from(self._job_keys()), label="job")
        if not as_owner:
            ws = data.draw(st.sampled_from([w for w in WORKSPACES if w != ws]), label="reader")
        self.get(ws, job_id)

    @precondition(lambda self: any(not j.status.is_terminal for j in self.model.jobs.values()))
    @rule(data=st.data(), result=results, error=errors)
    def advance(self, data, result, error):
        """A legal move of a job that can still move."""
        movable = [k for k in self._job_keys() if not self.model.jobs[k].status.is_terminal]
        ws, job_id = data.draw(st.sampled_from(movable), label="job")
        moves = sorted(ALLOWED_MOVES[self.model.jobs[(ws, job_id)].status], key=lambda s: s.value)
        status = data.draw(st.sampled_from(moves), label="status")
        self.update_status(ws, job_id, status, result, error)

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data(), status=statuses, result=results, error=errors)
    def update_existing(self, data, status, result, error):
        """Any move of an existing job: terminal states are final."""
        ws, job_id = data.draw(st.sampled_from(self._job_keys()), label="job")
        self.update_status(ws, job_id, status, result, error)

    @rule(ws=workspaces, job_id=pool_ids, status=statuses, result=results, error=errors)
    def update_status(self, ws, job_id, status, result, error):
        self._mutated()
        self._apply(
            f"update_status({job_id!r}, {status.value!r}, workspace_id={ws!r}, "
            f"result={result!r}, error={error!r})",
            lambda: self.model.update_status(job_id, status, ws, result, error),
            lambda store: store.update_status(job_id, status, workspace_id=ws, result=result, error=error),
        )

    @rule(ws=workspaces, status=st.none() | statuses, limit=limits)
    def list(self, ws, status, limit):
        every = self.model.ordered(ws, status)
        self._apply(
            f"list({ws!r}, status={status and status.value!r}, limit={limit})",
            lambda: self.model.list(ws, status, limit),
            lambda store: store.list(ws, status=status, limit=limit),
            check=lambda subject, want, got, where: self._check_listing(
                subject, want, got, where, every, limit),
        )

    @rule()
    def dequeue(self):
        self._mutated()
        self._apply("dequeue()", self.model.dequeue, lambda store: store.dequeue(timeout=0))

    @rule(ws=workspaces, job_id=pool_ids)
    def delete(self, ws, job_id):
        self._apply(f"delete({job_id!r}, workspace_id={ws!r})",
                    lambda: self.model.delete(job_id, ws),
                    lambda store: store.delete(job_id, workspace_id=ws))
        for subject in self.subjects.values():
            if (ws, job_id) not in self.model.jobs:
                subject.created.pop((ws, job_id), None)

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data())
    def delete_existing(self, data):
        ws, job_id = data.draw(st.sampled_from(self._job_keys()), label="job")
        self.delete(ws, job_id)

    @invariant()
    def every_workspace_reads_as_modelled(self):
        for ws in WORKSPACES:
            every = self.model.ordered(ws)
            for subject in self.subjects.values():
                got = subject.store.list(ws)
                self._check_listing(subject, every, got, f"{subject.name}: list({ws!r}) after the step",
                                    every, 100)


class StoreMachine(_Harness):
    """One store, or several that must behave identically, against the model.

    ``StoreMachine(url, "hashtag")`` tests one strategy; ``StoreMachine(url, stores={name:
    (strategy, options), ...})`` feeds the same stream to several stores of the same id scope
    (e.g. ``dual`` pinned in each phase) and requires each to match the model.
    """

    def __init__(self, url: str = "memory://", strategy: str = "legacy", *,
                 stores: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None, **options: Any):
        super().__init__(url)
        specs = dict(stores) if stores else {strategy: (strategy, options)}
        for name, (strategy_name, strategy_options) in specs.items():
            self.subjects[name] = Subject(name, self.open_store(name, strategy_name, strategy_options))
        scopes = {ids_per_store(s.store.strategy) for s in self.subjects.values()}
        if len(scopes) != 1:
            raise ValueError(
                "StoreMachine stores must share an id scope (one job per id per store, or per "
                "workspace); compare stores of different scopes with MultiStrategyMachine"
            )
        self.model = StoreModel(ids_per_store=scopes.pop())
        note(f"stores: {', '.join(f'{n} ({s.store.strategy.describe()})' for n, s in self.subjects.items())}")


class MultiStrategyMachine(_Harness):
    """Stores of every strategy and phase, fed the same stream, must all read as the model.

    Stores, each under a prefix of its own on one database: ``legacy``, ``workspace``, every
    name in ``schemas`` alone, ``dual`` (``legacy`` -> ``workspace``) pinned in each phase, and
    one ``dual`` store per ``(source, target)`` in ``migrations`` whose phase is moved through
    :data:`MIGRATION_CYCLE` by a :class:`Migration` with a :class:`FakeClock` (default: legacy ->
    workspace, and legacy -> schema and schema -> workspace for every extra schema).

    A job's layout and the phase decide nothing a reader can see, with one exception the
    contract makes: ``legacy`` holds one job per id, ``workspace`` one per workspace. So this
    machine never enqueues an id that another workspace holds (StoreMachine covers that).

    After a phase switch the machine opens a fresh store for the migrating ``dual``: a store
    follows a switch within a second (it caches the phase for up to ``STATE_MAX_AGE`` of
    ``time.monotonic()``), and a fresh store is exactly what every store is once that second
    has passed, without sleeping and without reaching into the strategy's cache.
    """

    generated_ids = False
    cross_workspace_ids = False

    def __init__(self, url: str = "memory://", schemas: tuple[str, ...] = (), *,
                 pinned: tuple[str, ...] = PHASES,
                 migrations: tuple[tuple[str, str], ...] | None = None):
        super().__init__(url)
        self.clock = FakeClock()
        names = ["legacy", "workspace", *[s for s in schemas if s not in ("legacy", "workspace")]]
        for name in names:
            self.subjects[name] = Subject(name, self.open_store(name, name, {}))
        for phase in pinned:
            name = f"dual[{phase}]"
            self.subjects[name] = Subject(name, self.open_store(name, "dual", {"phase": phase}))
        if migrations is None:
            migrations = (("legacy", "workspace"),)
            for schema in schemas:
                migrations += tuple(
                    pair for pair in (("legacy", schema), (schema, "workspace"))
                    if pair[0] != pair[1] and pair not in migrations
                )
        for source, target in migrations:
            name = f"dual[{source}->{target}, migrating]"
            prefix = f"{self.prefix}:{len(self.subjects)}"
            migration = Migration(self.client, source=source, target=target, prefix=prefix,
                                  clock=self.clock, wait=self.clock.wait)
            migration.set_phase("off")
            subject = Migrating(name, None, migration=migration, prefix=prefix, source=source,
                                target=target)
            self._reopen(subject)
            self.subjects[name] = subject
        note(f"stores: {', '.join(self.subjects)}")

    def _reopen(self, subject: Migrating) -> None:
        subject.store = JobStore(self.client, "dual", prefix=subject.prefix,
                                 source=subject.source, target=subject.target)

    @precondition(lambda self: any(isinstance(s, Migrating) for s in self.subjects.values()))
    @rule(steps=st.integers(1, 6))
    def migrate(self, steps):
        """Move every migrating store ``steps`` steps further along the migration cycle."""
        for _ in range(steps):
            for subject in self.subjects.values():
                if isinstance(subject, Migrating):
                    self._migration_step(subject)

    def _migration_step(self, subject: Migrating) -> None:
        step = MIGRATION_CYCLE[subject.step % len(MIGRATION_CYCLE)]
        migration = subject.migration
        note(f"{subject.name}: migration step {step!r} (phase {subject.phase})")
        if step in PHASES:
            migration.set_phase(step)
            subject.phase = step
            self._reopen(subject)
            subject.store.get(JOB_IDS[0], workspace_id=WORKSPACES[0])  # reads the phase
            assert subject.store.strategy.phase.value == step, (
                f"{subject.name}: a store opened after the switch runs in "
                f"{subject.store.strategy.phase.value}, not {step}"
            )
        elif step == "backfill":
            report = migration.backfill()
            assert report.finished, report.as_dict()
        elif step == "verify":
            report = migration.verify()
            if not report.clean:
                assert subject.target_stale, (
                    f"{subject.name}: verify after backfill is not clean: {report.as_dict()}"
                )
                note(f"{subject.name}: stale target copies after the rollback to off; repairing")
                migration.verify(repair=True)
                report = migration.verify()
                assert report.clean, f"{subject.name}: not clean after repair: {report.as_dict()}"
            subject.target_stale = False
        elif step == "cleanup":
            report = migration.cleanup()
            assert report.finished, report.as_dict()
        elif step == "reverse-sync":
            back = "read-target" if subject.phase == "target-only" else "dual-write"
            try:
                migration.set_phase(back, wait=False)
            except MigrationRefused:
                pass
            else:
                raise AssertionError(f"{subject.name}: {subject.phase} -> {back} before a reverse sync was allowed")
            report = migration.reverse_sync()
            assert report.finished, report.as_dict()
            assert not report.counts.get("foreign"), (
                f"{subject.name}: reverse sync could not place records: {report.as_dict()}"
            )
        subject.step += 1
        if subject.step % len(MIGRATION_CYCLE) == 0:
            subject.laps += 1
