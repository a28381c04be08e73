"""The rules and checks the machines share (:class:`_Harness`), and the machine of one store or
several that must behave the same (:class:`StoreMachine`).

The stream of operations: enqueues, batch enqueues, reads, legal and illegal status moves,
lists, dequeues and deletes, over three workspaces and a small pool of job ids (so ids collide,
within and across workspaces). Every outcome, a result or an error, must equal the model's, and
after every step every workspace is listed and compared.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NoReturn

from hypothesis import note, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..connection import connect
from ..errors import JobExists
from ..job import ALLOWED_MOVES, Job, JobStatus
from ..aio import AsyncJobStore
from ..store import JobStore
from .draws import (
    JOB_IDS,
    WORKSPACES,
    actions,
    errors,
    job_id_pools,
    limits,
    params_values,
    pool_ids,
    results,
    statuses,
    workspace_pools,
    workspaces,
)
from .flavours import Blocking, async_client, check_flavour, machine_loop
from .model import BY_DESIGN, JobView, ModelJob, StoreModel, ids_per_store, job_view
from .outcomes import (
    Check,
    Divergence,
    Item,
    Migrating,
    Outcome,
    Store,
    Subject,
    _abbreviate,
    _describe,
    _error_details,
    _other_id,
    _outcome,
    _unique_prefix,
    _views,
)


class _Harness(RuleBasedStateMachine):
    """The rules and checks shared by both machines; ``self.subjects`` are the stores under test.

    Class attributes a subclass may change:

    - ``generated_ids``: also enqueue without ``job_id`` (the store makes a uuid4 hex).
    - ``cross_workspace_ids``: enqueue an id that another workspace holds. Off when stores of
      different id scopes are compared (``legacy`` refuses what ``workspace`` accepts).
    - ``steer_clear_of``: names from :data:`~jobstore.testing.model.BY_DESIGN` whose
      sequences are skipped.

    ``flavour``: ``"sync"`` drives :class:`jobstore.JobStore` stores, ``"async"``
    :class:`jobstore.aio.AsyncJobStore` ones, each call run to its end on an event loop
    (:mod:`jobstore.testing.flavours`); everything else is the same.
    """

    generated_ids = True
    cross_workspace_ids = True
    steer_clear_of: frozenset[str] = frozenset(BY_DESIGN)

    def __init__(self, url: str, *, flavour: str = "sync"):
        super().__init__()
        self.url = url
        self.flavour = check_flavour(flavour)
        self.prefix = _unique_prefix()
        self.client = connect(url)  # both flavours: the machine's own reads, scans and cleanup
        if flavour == "async":
            self.loop, self._owns_loop = machine_loop()
            self.async_client = async_client(url, self.client)
            self._async_opened: list[Blocking[Any]] = []
        self.subjects: dict[str, Subject] = {}
        self.model = StoreModel(ids_per_store=False)
        self.workspaces: tuple[str, ...] = WORKSPACES
        self.job_ids: tuple[str, ...] = JOB_IDS
        self.steps = 0
        self.last_operation = "draw_ids"

    def open_store(self, name: str, strategy: str, options: Mapping[str, Any]) -> Store:
        # Every store gets a prefix of its own on the one database.
        return self._store(strategy, prefix=f"{self.prefix}:{len(self.subjects)}", **options)

    def _store(self, strategy: str, **options: Any) -> Store:
        """A store of this machine's flavour on its connections."""
        if self.flavour == "sync":
            return JobStore(self.client, strategy, **options)
        return self._blocking(AsyncJobStore(self.async_client, strategy, **options))

    def _blocking(self, wrapped: Any) -> Blocking[Any]:
        """``wrapped`` (an asyncio store or migration) driven on this machine's loop; released
        in ``teardown``."""
        face: Blocking[Any] = Blocking(wrapped, self.loop)
        self._async_opened.append(face)
        return face

    def teardown(self) -> None:
        try:
            keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                self.client.delete(*keys[start : start + 500])
        finally:
            self.client.close()
            if self.flavour == "async":
                self._close_async()

    def _close_async(self) -> None:
        """Release the asyncio stores and migrations (their connections are the machine's own
        asyncio client's, closed last), then the loop if the machine opened it."""
        try:
            if not self.loop.closed:
                self.loop.run(_release([face.wrapped for face in self._async_opened],
                                       self.async_client))
        finally:
            if self._owns_loop:
                self.loop.close()

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
               store_call: Callable[[Store], Any], check: Check | None = None) -> Outcome:
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


async def _release(opened: list[Any], client: Any) -> None:
    """Wait for what the asyncio stores and migrations have under way (coalesced enqueues,
    deletes of spent keys), then close their shared client."""
    try:
        for wrapped in opened:
            if isinstance(wrapped, AsyncJobStore):
                await wrapped._enqueues.close()  # not close(): that closes the shared client
            await wrapped.driver.close()
    finally:
        await client.aclose()


class StoreMachine(_Harness):
    """One store, or several that must behave identically, against the model.

    ``StoreMachine(url, "hashtag")`` tests one strategy; ``StoreMachine(url, stores={name:
    (strategy, options), ...})`` feeds the same stream to several stores of the same id scope
    (e.g. ``dual`` pinned in each phase) and requires each to match the model.
    ``flavour="async"`` drives asyncio stores (:class:`jobstore.aio.AsyncJobStore`) instead.
    """

    def __init__(self, url: str = "memory://", strategy: str = "legacy", *,
                 stores: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
                 flavour: str = "sync", **options: Any):
        super().__init__(url, flavour=flavour)
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
        note(f"{'stores' if flavour == 'sync' else 'asyncio stores'}: "
             f"{', '.join(f'{n} ({s.store.strategy.describe()})' for n, s in self.subjects.items())}")
