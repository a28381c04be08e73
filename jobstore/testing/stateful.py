"""State machines that drive real stores and the model with the same operations.

:class:`StoreMachine` feeds one store (or several stores that must behave the same, such as
``dual`` pinned in each phase) and a :class:`~jobstore.testing.model.StoreModel` with a random
stream of enqueues, batch enqueues, reads, legal and illegal status moves, lists, dequeues and
deletes, over three workspaces and a small pool of job ids (so ids collide, within and across
workspaces). Each run draws its pools from the whole identifier alphabet (``A-Z a-z 0-9 _ . -``,
1 to 128 characters), always with two ids that differ only by case and two long ids that differ
only in their last character, so that a schema that folds case or truncates ids gives two jobs
one key. Every outcome, a result or an error, must equal the model's, and after every step
every workspace is listed and compared: the first step where a store differs from the model
stops the run with a :class:`Divergence` naming the store, the operation, what the model
expected and what the store did.

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

import contextlib
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

from hypothesis import HealthCheck, Phase as HypothesisPhase, note, settings as Settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ..builtins.dual import DualStrategy
from ..connection import connect
from ..errors import JobExists, JobStoreError, MigrationRefused
from ..job import ALLOWED_MOVES, Job, JobStatus
from ..migration import Migration, PassReport
from ..phases import Phase
from ..store import JobStore
from .model import BY_DESIGN, JobView, ModelJob, StoreModel, ids_per_store, job_view
from .profiles import kit_settings, selected, shrink_seconds

__all__ = [
    "ID_CHARS",
    "MIGRATION_CYCLE",
    "Divergence",
    "FakeClock",
    "MultiStrategyMachine",
    "StoreMachine",
    "run_machine",
    "shrink_limit",
]

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
MAX_ID = 128
PHASES = tuple(p.value for p in Phase)

# Until a run draws its own pools (its first step), and for machines that skip that step.
WORKSPACES = ("ws-a", "ws-b", "ws-c")
JOB_IDS = ("j0", "j1", "j2", "j3")


@st.composite
def _word(draw: st.DrawFn, max_size: int = 12) -> str:
    """A short id with at least one letter, so that its case twin differs from it."""
    letter = draw(st.sampled_from(ID_CHARS[:52]))
    before = draw(st.text(ID_CHARS, max_size=max_size // 2))
    return (before + letter + draw(st.text(ID_CHARS, max_size=max_size // 2)))[:max_size]


@st.composite
def _long_pair(draw: st.DrawFn) -> tuple[str, str]:
    """Two ids of ``MAX_ID`` characters that differ only in the last one: a schema that cuts
    ids anywhere short of ``MAX_ID`` gives both one key."""
    stem = (draw(_word(3)) * MAX_ID)[: MAX_ID - 1]
    first = draw(st.sampled_from(ID_CHARS))
    second = draw(st.sampled_from(ID_CHARS).filter(lambda c: c != first))
    return stem + first, stem + second


@st.composite
def workspace_pools(draw: st.DrawFn) -> tuple[str, str, str]:
    """Three workspaces: a word, the same word in the other case, and a third id; or, in about
    half the runs, a long id, its case twin, and a long id that differs from the first only in
    its last character."""
    if draw(st.booleans()):
        first, third = draw(_long_pair())
    else:
        first = draw(_word())
        third = draw(st.text(ID_CHARS, min_size=1, max_size=12))
    twin = first.swapcase()
    return first, twin, third if third not in (first, twin) else third + "_"


@st.composite
def job_id_pools(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """Four job ids: a word, its case twin, and two long ids that differ only in their last
    character."""
    word = draw(_word())
    return (word, word.swapcase(), *draw(_long_pair()))


# A run's own pools, drawn in its first step (``_Harness.draw_ids``).
workspaces = st.runner().flatmap(lambda machine: st.sampled_from(machine.workspaces))
pool_ids = st.runner().flatmap(lambda machine: st.sampled_from(machine.job_ids))
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

    The deadline is always off: a step's time is Redis latency, not a bug. Under the ``ci``
    profile a failing run shrinks for at most
    :data:`~jobstore.testing.profiles.SHRINK_SECONDS` seconds (see :func:`shrink_limit`).
    """
    base = settings if settings is not None else kit_settings()
    limit = shrink_seconds()
    started = time.perf_counter()
    with shrink_limit(limit) as shrinks:
        try:
            run_state_machine_as_test(
                # Hypothesis annotates a machine class; it documents (and runs) any factory.
                factory,  # type: ignore[arg-type]
                settings=Settings(base, deadline=None,
                                  phases=base.phases if shrinks else
                                  [p for p in base.phases if p is not HypothesisPhase.shrink],
                                  suppress_health_check=[*base.suppress_health_check,
                                                         HealthCheck.too_slow]),
            )
        except Exception as exc:
            if limit is not None:
                spent = time.perf_counter() - started
                how = (f"shrinks a failing run for at most {limit:g} s (this one took {spent:.0f} s "
                       "in all; a warning of Hypothesis's about five minutes of shrinking means "
                       "this limit)" if shrinks else "does not shrink a failing run")
                _add_note(exc, f"jobstore kit: the {selected()} profile {how}, so the steps "
                               "above may not be the shortest; JOBSTORE_HYPOTHESIS_PROFILE=dev "
                               "shrinks fully")
            raise


def _add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also before Python 3.11 (pytest shows ``__notes__`` there too)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


@contextlib.contextmanager
def shrink_limit(seconds: float | None) -> Iterator[bool]:
    """Within the block, Hypothesis stops shrinking a failure after ``seconds`` (None: its own
    five minutes). Yields whether shrinking is on at all.

    Hypothesis has no setting for this: it stops after its module constant
    ``MAX_SHRINKING_SECONDS``, which it lets users monkeypatch; the old value is put back when
    the block ends. A Hypothesis without it gets no shrinking within a limit at all.
    """
    if seconds is None:
        yield True
        return
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError:  # pragma: no cover - a Hypothesis that moved its engine
        patchable = False
    else:
        patchable = hasattr(engine, "MAX_SHRINKING_SECONDS")
    if not patchable:  # pragma: no cover
        yield False
        return
    before = engine.MAX_SHRINKING_SECONDS
    # Hypothesis declares an int, and adds it to a perf_counter() reading: a float does as well.
    engine.MAX_SHRINKING_SECONDS = seconds  # type: ignore[assignment]
    try:
        yield True
    finally:
        engine.MAX_SHRINKING_SECONDS = before


class FakeClock:
    """A clock for :class:`Migration` whose ``wait`` advances time instead of sleeping.

    Every reading moves on by a millisecond, as a real clock would between two calls (a switch
    rule compares a verify's start with the moment dual writes began: they must not be equal).
    """

    def __init__(self, start: float | None = None) -> None:
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


# ``(kind, value)``: ``("ok", what the call returned)`` or ``("raised", the error)``.
Outcome = tuple[str, Any]
# A rule's own comparison of the model's result with a store's: ``(subject, the model's result,
# the store's, operation)``; it stops the run (:meth:`_Harness._diverged`) where they differ.
Check = Callable[[Subject, Any, Any, str], None]
# An item of a batch enqueue: ``(workspace_id, action, params, job_id)``.
Item = tuple[str, str, dict[str, Any] | None, str]


@dataclass
class Migrating(Subject):
    """A ``dual`` store whose phase the machine moves through :data:`MIGRATION_CYCLE`."""

    migration: Migration = field(kw_only=True)
    prefix: str = ""
    source: str = "legacy"
    target: str = "workspace"
    phase: str = "off"
    step: int = 0
    laps: int = 0
    # Updates made in ``off`` after the target held records leave stale target copies, which
    # only ``verify --repair`` brings back in line (a backfill never overwrites).
    target_stale: bool = False
    reached: set[str] = field(default_factory=set)  # the cycle's steps this store went through


# Outcomes of a migration pass that mean a record could not be placed. The machines never give
# two workspaces one id where the schemas differ in id scope, so a correct schema has none.
_TROUBLE = ("foreign", "unroutable", "not_a_record", "error")
_TROUBLE_HINT = (
    "foreign: a record whose workspace_id is not the workspace its key parses to, or whose "
    "place on the other side holds another workspace's job; unroutable: no usable workspace; "
    "not_a_record: scan_pattern found a key that is not a record hash. Each schema's parse_key "
    "must give back exactly the ids its job_key was given, case and length included"
)


class Divergence(AssertionError):
    """A store did something other than what the model of the contract says, or a migration
    step did not do its job. Its message names the step, the store, the operation, what the
    model expected and what the store did.

    Every check of the machines raises it from one place, so Hypothesis takes every divergence
    for one failure and reports the shortest run it found, not each follow-on failure apart.
    """


def _outcome(call: Callable[[], Any], *, anything: bool = False) -> Outcome:
    """``("ok", result)`` or ``("raised", error)``: jobstore's errors, or with ``anything``
    every exception (a store that crashes is a store that differs from the model)."""
    try:
        return "ok", call()
    except JobStoreError as exc:
        return "raised", exc
    except Divergence:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the store's outcome
        if not anything:
            raise
        return "raised", exc


def _describe(outcome: Outcome) -> str:
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


def _error_details(exc: Exception) -> tuple[object, ...]:
    if isinstance(exc, JobExists):
        return (exc.job_ids, [job_view(j) for j in exc.created])
    for attrs in (("current", "requested"), ("argument",), ("job_id", "workspace_id")):
        if all(hasattr(exc, a) for a in attrs):
            return tuple(getattr(exc, a) for a in attrs)
    return ()


_LONG = re.compile(r"[A-Za-z0-9_.\-]{33,}")


def _abbreviate(text: str) -> str:
    """``text`` with every run of id characters longer than 32 cut to its ends and its length:
    ids go up to 128 characters, and two of a run's ids differ only in their last one. The
    steps Hypothesis prints keep every value whole."""
    return _LONG.sub(lambda m: f"{m[0][:12]}…[{len(m[0])} chars]…{m[0][-6:]}", text)


def _unique_prefix() -> str:
    return f"jst{uuid.uuid4().hex[:10]}"


def _other_id(job_id: str, tag: str) -> str:
    """An id of one workspace's own for ``job_id`` (``tag`` tells workspaces apart), within
    ``MAX_ID`` characters: long ids keep a checksum of what was cut."""
    suffix = f".{tag}"
    if len(job_id) + len(suffix) > MAX_ID:
        job_id = f"{job_id[: MAX_ID - len(suffix) - 9]}.{zlib.crc32(job_id.encode()):08x}"
    return job_id + suffix


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
        self.workspaces: tuple[str, ...] = WORKSPACES
        self.job_ids: tuple[str, ...] = JOB_IDS
        self.steps = 0
        self.last_operation = "draw_ids"

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

    @initialize(workspaces=workspace_pools(), job_ids=job_id_pools())
    def draw_ids(self, workspaces: tuple[str, str, str], job_ids: tuple[str, str, str, str]) -> None:
        """This run's ids: three workspaces and four job ids from the whole alphabet, with case
        twins and long ids that differ only at the end."""
        self.workspaces, self.job_ids = tuple(workspaces), tuple(job_ids)

    # -- comparing ------------------------------------------------------------------------

    def _step(self, operation: str) -> str:
        """Count the step and note what it does (Hypothesis prints the notes of a failing run)."""
        self.steps += 1
        self.last_operation = operation
        note(_abbreviate(f"step {self.steps}: {operation}"))
        return operation

    def _diverged(self, subject: Subject, operation: str, expected: str, actual: str,
                  why: str = "") -> NoReturn:
        """Stop the run: ``subject`` did ``actual`` where the model says ``expected``."""
        __tracebackhide__ = True  # pytest shows the rule that failed, not the kit's checks
        message = (
            f"step {self.steps}, store {subject.name}: {operation}\n"
            f"  the contract (model) {expected}\n"
            f"  the store {actual}"
        )
        if why:
            message += f"\n  ({why})"
        short = _abbreviate(message)
        if short != message:
            short += "\n  (long ids shortened to their ends; the steps above give them whole)"
        raise Divergence(short)

    def _apply(self, operation: str, model_call: Callable[[], Any],
               store_call: Callable[[JobStore], Any], check: Check | None = None) -> Outcome:
        """Run ``model_call`` once and ``store_call`` on every subject; outcomes must agree."""
        __tracebackhide__ = True
        self._step(operation)
        expected = _outcome(model_call)
        for subject in self.subjects.values():
            actual = _outcome(partial(store_call, subject.store), anything=True)
            self._same(subject, operation, expected, actual, check)
        return expected

    def _same(self, subject: Subject, operation: str, expected: Outcome, actual: Outcome,
              check: Check | None = None) -> None:
        __tracebackhide__ = True
        (kind, want), (got_kind, got) = expected, actual
        if kind != got_kind or (kind == "raised" and type(want) is not type(got)):
            self._diverged(subject, operation, _describe(expected), _describe(actual))
        if kind == "raised":
            if _error_details(want) != _error_details(got):
                self._diverged(subject, operation, _describe(expected), _describe(actual),
                               f"the errors' details differ: the model's {_error_details(want)!r}, "
                               f"the store's {_error_details(got)!r}")
            if isinstance(got, JobExists):
                for job in got.created:
                    self._created(subject, job, operation)
            return
        if check is not None:
            check(subject, want, got, operation)
            return
        if _views(want) != _views(got):
            self._diverged(subject, operation, _describe(expected), _describe(actual))
        for job in got if isinstance(got, list) else [got]:
            if isinstance(job, Job):
                self._created_at_kept(subject, job, operation)

    def _created(self, subject: Subject, job: Job, operation: str) -> None:
        __tracebackhide__ = True
        if not job.created_at == job.updated_at > 0:
            self._diverged(subject, operation, "gives a new job created_at == updated_at > 0",
                           f"returned {job_view(job)!r} with created_at={job.created_at!r}, "
                           f"updated_at={job.updated_at!r}")
        subject.created[(job.workspace_id, job.job_id)] = job.created_at

    def _created_at_kept(self, subject: Subject, job: Job, operation: str) -> None:
        __tracebackhide__ = True
        known = subject.created.get((job.workspace_id, job.job_id))
        if known is not None and job.created_at != known:
            self._diverged(subject, operation, f"keeps the job's created_at {known!r}",
                           f"returned {job_view(job)!r} with created_at {job.created_at!r}")

    def _check_listing(self, subject: Subject, want: list[ModelJob], got: list[Job], operation: str,
                       every: list[ModelJob], limit: int) -> None:
        """Newest first by the creation time the store gave each job; ties in any order."""
        __tracebackhide__ = True
        by_time: dict[float, list[JobView | None]] = {}
        for job in every:
            by_time.setdefault(subject.created.get(job.key, 0.0), []).append(job_view(job))
        groups = [Counter(by_time[t]) for t in sorted(by_time, reverse=True)]
        if not isinstance(got, list) or not all(isinstance(j, Job) for j in got):
            self._diverged(subject, operation, f"returned {[job_view(j) for j in want]!r}",
                           f"returned {got!r}", "not a list of jobs")
        views = [job_view(j) for j in got]
        problem = None
        if len(views) != min(limit, len(every)):
            problem = f"{len(views)} jobs where the model has {min(limit, len(every))}"
        else:
            position = 0
            for group in groups:
                taken = Counter(views[position : position + sum(group.values())])
                if not taken:
                    break
                if not taken <= group:
                    problem = f"at position {position}: {dict(taken)} is not among {dict(group)}"
                    break
                position += sum(taken.values())
        if problem:
            self._diverged(subject, operation, f"returned {[job_view(j) for j in want]!r}",
                           f"returned {views!r}", problem)
        for listed in got:
            self._created_at_kept(subject, listed, operation)

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
            tag = str(self.workspaces.index(workspace_id)) if workspace_id in self.workspaces else "x"
            return _other_id(job_id, tag)
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
    def enqueue(self, ws: str, action: str, params: dict[str, Any] | None, job_id: str | None) -> None:
        if job_id is None and self.generated_ids and len(self.subjects) == 1:
            self._enqueue_generated(ws, action, params)
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

    def _enqueue_generated(self, ws: str, action: str, params: dict[str, Any] | None) -> None:
        """Without a job id: the store makes one (a uuid4 hex), and the model takes it."""
        __tracebackhide__ = True
        (subject,) = self.subjects.values()
        operation = self._step(f"enqueue({ws!r}, {action!r}, {params!r})  # the store makes the id")
        kind, job = _outcome(lambda: subject.store.enqueue(ws, action, params), anything=True)
        if kind == "raised" or not isinstance(job, Job) or not re.fullmatch(r"[0-9a-f]{32}", job.job_id):
            self._diverged(subject, operation, "returns a new pending job with a uuid4 hex id",
                           _describe((kind, job)))
        self._check_enqueued(subject, self.model.enqueue(ws, action, params, job.job_id), job, operation)

    def _check_enqueued(self, subject: Subject, want: ModelJob, got: object, operation: str) -> None:
        __tracebackhide__ = True
        if not isinstance(got, Job) or job_view(want) != job_view(got) or got.status is not JobStatus.PENDING:
            self._diverged(subject, operation, f"returned {job_view(want)!r}", _describe(("ok", got)))
        self._created(subject, got, operation)

    @rule(items=st.lists(st.tuples(workspaces, actions, params_values, pool_ids), min_size=1,
                         max_size=4, unique_by=lambda item: item[3]),
          repeat=st.sampled_from((False,) * 7 + (True,)))
    def enqueue_many(self, items: list[Item], repeat: bool) -> None:
        items = [(ws, action, params, self._job_id_for(ws, job_id)) for ws, action, params, job_id in items]
        if repeat:  # the same id twice in one batch is refused before anything is sent
            items.append(items[0])
        kept: list[Item] = []
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

    def _check_batch(self, subject: Subject, want: list[ModelJob], got: object, operation: str) -> None:
        __tracebackhide__ = True
        if not isinstance(got, list) or not all(isinstance(j, Job) for j in got) or (
                [job_view(j) for j in want] != [job_view(j) for j in got]):
            self._diverged(subject, operation, _describe(("ok", want)), _describe(("ok", got)))
        for job in got:
            self._created(subject, job, operation)

    @rule(ws=workspaces, job_id=pool_ids)
    def get(self, ws: str, job_id: str) -> None:
        self._apply(f"get({job_id!r}, workspace_id={ws!r})",
                    lambda: self.model.get(job_id, ws),
                    lambda store: store.get(job_id, workspace_id=ws))

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data(), as_owner=st.booleans())
    def get_existing(self, data: st.DataObject, as_owner: bool) -> None:
        ws, job_id = data.draw(st.sampled_from(self._job_keys()), label="job")
        if not as_owner:  # the case twin of the owner's workspace among them
            ws = data.draw(st.sampled_from([w for w in self.workspaces if w != ws]), label="reader")
        self.get(ws, job_id)

    @precondition(lambda self: any(not j.status.is_terminal for j in self.model.jobs.values()))
    @rule(data=st.data(), result=results, error=errors)
    def advance(self, data: st.DataObject, result: object, error: str | None) -> None:
        """A legal move of a job that can still move."""
        movable = [k for k in self._job_keys() if not self.model.jobs[k].status.is_terminal]
        ws, job_id = data.draw(st.sampled_from(movable), label="job")
        moves = sorted(ALLOWED_MOVES[self.model.jobs[(ws, job_id)].status], key=lambda s: s.value)
        status = data.draw(st.sampled_from(moves), label="status")
        self.update_status(ws, job_id, status, result, error)

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data(), status=statuses, result=results, error=errors)
    def update_existing(self, data: st.DataObject, status: JobStatus, result: object,
                        error: str | None) -> None:
        """Any move of an existing job: terminal states are final."""
        ws, job_id = data.draw(st.sampled_from(self._job_keys()), label="job")
        self.update_status(ws, job_id, status, result, error)

    @rule(ws=workspaces, job_id=pool_ids, status=statuses, result=results, error=errors)
    def update_status(self, ws: str, job_id: str, status: JobStatus, result: object,
                      error: str | None) -> None:
        self._mutated()
        self._apply(
            f"update_status({job_id!r}, {status.value!r}, workspace_id={ws!r}, "
            f"result={result!r}, error={error!r})",
            lambda: self.model.update_status(job_id, status, ws, result, error),
            lambda store: store.update_status(job_id, status, workspace_id=ws, result=result, error=error),
        )

    @rule(ws=workspaces, status=st.none() | statuses, limit=limits)
    def list(self, ws: str, status: JobStatus | None, limit: int) -> None:
        every = self.model.ordered(ws, status)
        self._apply(
            f"list({ws!r}, status={status and status.value!r}, limit={limit})",
            lambda: self.model.list(ws, status, limit),
            lambda store: store.list(ws, status=status, limit=limit),
            check=lambda subject, want, got, operation: self._check_listing(
                subject, want, got, operation, every, limit),
        )

    @rule()
    def dequeue(self) -> None:
        self._mutated()
        self._apply("dequeue()", self.model.dequeue, lambda store: store.dequeue(timeout=0))

    @rule(ws=workspaces, job_id=pool_ids)
    def delete(self, ws: str, job_id: str) -> None:
        self._apply(f"delete({job_id!r}, workspace_id={ws!r})",
                    lambda: self.model.delete(job_id, ws),
                    lambda store: store.delete(job_id, workspace_id=ws))
        for subject in self.subjects.values():
            if (ws, job_id) not in self.model.jobs:
                subject.created.pop((ws, job_id), None)

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data())
    def delete_existing(self, data: st.DataObject) -> None:
        ws, job_id = data.draw(st.sampled_from(self._job_keys()), label="job")
        self.delete(ws, job_id)

    @invariant()
    def every_workspace_reads_as_modelled(self) -> None:
        """After every step, every workspace lists exactly the model's jobs: a step that left a
        store's records differing from the model stops the run at that step."""
        for subject in self.subjects.values():
            self._reads_as_modelled(subject, f"step {self.steps}, {self.last_operation}")

    def _reads_as_modelled(self, subject: Subject, after: str) -> None:
        """Every workspace of ``subject`` lists exactly the model's jobs, after ``after``."""
        __tracebackhide__ = True
        for ws in self.workspaces:
            every = self.model.ordered(ws)
            operation = f"list({ws!r}) after {after}"
            kind, got = _outcome(partial(subject.store.list, ws), anything=True)
            if kind == "raised":
                self._diverged(subject, operation, _describe(("ok", every)), _describe((kind, got)))
            self._check_listing(subject, every, got, operation, every, 100)


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
    workspace, and legacy -> schema and schema -> workspace for every extra schema: the schema
    as the migration's target and as its source, each backfilled, verified, cleaned up and
    reverse-synced while the operations run).

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
            self.subjects[name] = Migrating(name, self._open_dual(prefix, source, target),
                                            migration=migration, prefix=prefix, source=source,
                                            target=target)
        note(f"stores: {', '.join(self.subjects)}")

    def _open_dual(self, prefix: str, source: str, target: str) -> JobStore:
        return JobStore(self.client, "dual", prefix=prefix, source=source, target=target)

    def _reopen(self, subject: Migrating) -> None:
        subject.store = self._open_dual(subject.prefix, subject.source, subject.target)

    def _misplaced(self, migration: Migration) -> str:
        """Why a pass could not place a record: the first record whose key parses to other ids
        than the record holds, or the hint."""
        for schema in (migration.source, migration.target):
            for key in self.client.scan_iter(match=schema.scan_pattern(), count=1000):
                parsed = schema.parse_key(key)
                if parsed is None:
                    continue
                kind, record = _outcome(partial(self.client.hgetall, key), anything=True)
                if kind == "raised":
                    return f"scan_pattern {schema.scan_pattern()!r} finds {key!r}, not a record hash"
                held = (record.get("workspace_id"), record.get("job_id"))
                if parsed[1] != held[1] or parsed[0] not in (None, held[0]):
                    return (f"schema {schema.name!r}: parse_key({key!r}) gives {parsed!r}, but the "
                            f"record there is workspace_id={held[0]!r}, job_id={held[1]!r}: "
                            "parse_key must give back exactly the ids job_key was given")
        return _TROUBLE_HINT

    @precondition(lambda self: any(isinstance(s, Migrating) for s in self.subjects.values()))
    @rule(steps=st.integers(1, 6))
    def migrate(self, steps: int) -> None:
        """Move every migrating store ``steps`` steps further along the migration cycle."""
        self._step(f"migrate({steps})")
        for _ in range(steps):
            for subject in self.subjects.values():
                if isinstance(subject, Migrating):
                    self._migration_step(subject)

    def _migration_step(self, subject: Migrating) -> None:
        step = MIGRATION_CYCLE[subject.step % len(MIGRATION_CYCLE)]
        operation = f"migration step {step!r} (in phase {subject.phase})"
        note(f"{subject.name}: {operation}")
        kind, done = _outcome(lambda: self._run_migration_step(subject, step, operation), anything=True)
        if kind == "raised":
            self._diverged(subject, operation, "completes the step", _describe((kind, done)))
        subject.step += 1
        if subject.step % len(MIGRATION_CYCLE) == 0:
            subject.laps += 1
        subject.reached.add(step)
        # Each step on its own: a step that loses a job stops the run there, not after the rule.
        self._reads_as_modelled(subject, f"step {self.steps}, {operation}")

    def _run_migration_step(self, subject: Migrating, step: str, operation: str) -> None:
        migration = subject.migration

        def finished(report: PassReport) -> None:
            """A pass that went through every record and placed each one."""
            trouble = {k: n for k, n in report.counts.items() if k in _TROUBLE and n}
            if not report.finished or trouble:
                self._diverged(subject, operation, "finishes and places every record",
                               f"gave {report.as_dict()}",
                               self._misplaced(migration) if trouble else "")

        if step in PHASES:
            migration.set_phase(step)
            subject.phase = step
            self._reopen(subject)
            subject.store.get(self.job_ids[0], workspace_id=self.workspaces[0])  # reads the phase
            strategy = subject.store.strategy
            if not isinstance(strategy, DualStrategy):
                self._diverged(subject, operation, f"opens dual stores in phase {step}",
                               f"opened a {type(strategy).__name__}")
            if strategy.phase.value != step:
                self._diverged(subject, operation, f"opens stores in phase {step}",
                               f"opened one in phase {strategy.phase.value}")
        elif step == "backfill":
            finished(migration.backfill())
        elif step == "verify":
            report = migration.verify()
            if not report.clean:
                if not subject.target_stale:
                    self._diverged(subject, operation, "finds the copies clean after a backfill",
                                   f"reported {report.as_dict()}")
                note(f"{subject.name}: stale target copies after the rollback to off; repairing")
                migration.verify(repair=True)
                report = migration.verify()
                if not report.clean:
                    self._diverged(subject, operation, "finds the copies clean after a repair",
                                   f"reported {report.as_dict()}")
            subject.target_stale = False
        elif step == "cleanup":
            finished(migration.cleanup())
        elif step == "reverse-sync":
            back = "read-target" if subject.phase == "target-only" else "dual-write"
            refused = _outcome(lambda: migration.set_phase(back, wait=False))
            if refused[0] == "ok" or not isinstance(refused[1], MigrationRefused):
                self._diverged(subject, operation,
                               f"refuses {subject.phase} -> {back} before a reverse sync",
                               _describe(refused))
            finished(migration.reverse_sync())
