"""The machine of every strategy and phase at once, with migrations running:
:class:`MultiStrategyMachine`, its :class:`FakeClock` and the steps of its cycle
(:data:`MIGRATION_CYCLE`)."""

from __future__ import annotations

import time
from functools import partial

from hypothesis import note, strategies as st
from hypothesis.stateful import precondition, rule

from ..builtins.dual import DualStrategy
from ..errors import MigrationRefused
from ..migration import Migration, PassReport
from ..migration.aio import AsyncMigration
from ..phases import Phase
from .harness import _Harness
from .outcomes import Migrating, Store, StoreMigration, Subject, _describe, _outcome

PHASES = tuple(p.value for p in Phase)


class FakeClock:
    """A clock whose ``wait`` advances time instead of sleeping: ``Migration(..., clock=clock,
    wait=clock.wait)``, a store's ``context.clock`` (the times records carry) and
    ``context.timer`` (deadlines), or a migration's ``timer``.

    ``start``: the first reading (default: now). ``tick``: how far every reading moves it on:
    by default a millisecond, as a real clock would between two calls (a switch rule compares
    a verify's start with the moment dual writes began: they must not be equal); 0: it stands
    still until a wait moves it. ``waits``: every wait asked for, in order.
    """

    def __init__(self, start: float | None = None, tick: float = 0.001) -> None:
        self.now = time.time() if start is None else start
        self.tick = tick
        self.waits: list[float] = []

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += max(0.0, seconds)


# One lap of a migration and back, each entry one step. The machine starts in ``off``.
MIGRATION_CYCLE = (
    "dual-write", "backfill", "verify", "read-target", "target-only", "cleanup",
    "reverse-sync", "read-target", "reverse-sync", "dual-write", "off",
)



# Outcomes of a migration pass that mean a record could not be placed. The machines never give
# two workspaces one id where the schemas differ in id scope, so a correct schema has none.
_TROUBLE = ("foreign", "unroutable", "not_a_record", "error")
_TROUBLE_HINT = (
    "foreign: a record whose workspace_id is not the workspace its key parses to, or whose "
    "place on the other side holds another workspace's job; unroutable: no usable workspace; "
    "not_a_record: scan_pattern found a key that is not a record hash. Each schema's parse_key "
    "must give back exactly the ids its job_key was given, case and length included"
)



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

    ``flavour="async"``: the stores are :class:`jobstore.aio.AsyncJobStore` and the migrations
    :class:`jobstore.migration.aio.AsyncMigration` (:mod:`jobstore.testing.flavours`).
    """

    generated_ids = False
    cross_workspace_ids = False

    def __init__(self, url: str = "memory://", schemas: tuple[str, ...] = (), *,
                 pinned: tuple[str, ...] = PHASES,
                 migrations: tuple[tuple[str, str], ...] | None = None, flavour: str = "sync"):
        super().__init__(url, flavour=flavour)
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
            migration = self._migration(source, target, prefix)
            migration.set_phase("off")
            self.subjects[name] = Migrating(name, self._open_dual(prefix, source, target),
                                            migration=migration, prefix=prefix, source=source,
                                            target=target)
        note(f"{'stores' if flavour == 'sync' else 'asyncio stores'}: {', '.join(self.subjects)}")

    def _migration(self, source: str, target: str, prefix: str) -> StoreMigration:
        """The migration of a migrating store, of the machine's flavour, on the fake clock."""
        if self.flavour == "sync":
            return Migration(self.client, source=source, target=target, prefix=prefix,
                             clock=self.clock, wait=self.clock.wait)
        return self._blocking(AsyncMigration(self.async_client, source=source, target=target,
                                             prefix=prefix, clock=self.clock, wait=self.clock.wait))

    def _open_dual(self, prefix: str, source: str, target: str) -> Store:
        return self._store("dual", prefix=prefix, source=source, target=target)

    def _reopen(self, subject: Migrating) -> None:
        subject.store = self._open_dual(subject.prefix, subject.source, subject.target)

    def _misplaced(self, migration: StoreMigration) -> str:
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
