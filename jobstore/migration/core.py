"""What the parts of a migration share: its schemas and keys, its state and clock, the placing
of scanned keys as records, and the shape of its calls. How records are settled and compared
(one script over both copies on standalone Redis, single-slot steps on Redis Cluster) is chosen
once per migration: ``self.settler`` (:mod:`jobstore.migration.settle`).

Every public call of a migration is its checks (made at once, before anything is sent) and one
operation, a generator of steps (:class:`Run`): :class:`~jobstore.migration.Migration` runs it
on the synchronous driver, :class:`~jobstore.migration.aio.AsyncMigration` awaits it on the
asyncio one. Waits are ``Pause`` steps; the server check, the state node and the server's time
are steps too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from .. import eviction, server_check, validation
from ..connection import Client, redact
from ..driver import SyncDriver
from ..errors import ConfigError, InvalidArgument, MigrationRefused
from ..events import Events
from ..layout import StoreKeys
from ..ops import Op
from ..phases import MigrationState, Phase, changed_fields, migration_name
from ..plugins import get_registry
from ..schema import KeySchema
from ..ops import migration_calls
from ..steps import Batch, Command, NodeOf, Pause
from .reports import MigrationInterrupted, PassReport
from .settle import Placed, Prefer, settler_for

T = TypeVar("T")
# ``progress(step, done, total or None, counts)``: how far a pass or a verify is.
Progress = Callable[[str, int, int | None, dict[str, int]], None]
# Every module of the package logs as ``jobstore.migration`` (the name it always had).
log = logging.getLogger("jobstore.migration")
# A verify whose scan keeps landing on a changed server (restarts, failovers) gives up after
# this many fresh starts, and is then not clean: it could not vouch for every key. (Set-aside
# gives up after as many.)
VERIFY_ATTEMPTS = 3


@dataclass(frozen=True)
class Run(Generic[T]):
    """One checked call of a migration: its operation, and for a pass, a verify or a set-aside,
    what a Ctrl-C during it becomes: ``interrupted()`` is an operation (a verify records what it
    found) returning the :class:`MigrationInterrupted` to raise, or None (it had not begun: the
    KeyboardInterrupt goes on as it is)."""

    op: Op[T]
    interrupted: Callable[[], Op[MigrationInterrupted | None]] | None = None


class MigrationCore:
    """A migration's schemas, keys, state and clock, and the steps its passes, verify and
    set-aside share (see :class:`jobstore.migration.Migration`)."""

    # The driver of the migration's facade (its ``client`` is that driver's kind).
    _driver_class: ClassVar[Callable[..., Any]] = SyncDriver

    def __init__(self, client: Client, *, source: str = "legacy", target: str = "workspace",
                 prefix: str = "ai", url: str | None = None, events: Events | None = None,
                 clock: Callable[[], float] | None = None,
                 wait: Callable[[float], Any] = time.sleep, allow_eviction: bool = False,
                 own_prefix: str | None = None) -> None:
        validation.prefix(prefix)
        own_prefix = validation.own_prefix(own_prefix, prefix)
        registry = get_registry()
        self.source: KeySchema = registry.schema(source, prefix)
        self.target: KeySchema = registry.schema(target, prefix)
        if self.source.identity == self.target.identity:
            raise ConfigError(f"source and target are the same schema {source!r}")
        self.client = client
        self.name = migration_name(source, target)
        self._names = (source, target)
        self.keys = StoreKeys(own_prefix)
        self.state_key = self.keys.migration(source, target)
        self.log_key = self._part_key("log")
        self.events = events or Events()
        self.clock = clock
        self.wait = wait
        # What durations are measured with (a report's seconds, a pass's pace, the plan's
        # rates): a test may put a fake clock's in its place.
        self.timer: Callable[[], float] = time.monotonic
        self.allow_eviction = allow_eviction
        self._redis_checked = False
        # Its clock waits (Pause(clock=True)) go to self.wait, read when they happen.
        self.driver = self._driver_class(client, None, redact(url) if url else repr(client),
                                         wait=lambda seconds: self.wait(seconds))
        # Standalone Redis or Cluster: how records are settled and compared, chosen once.
        self.settler = settler_for(self.driver.cluster, self.keys)

    def _interrupted(self, report: PassReport, began: list[float],
                     logged: bool = False) -> Callable[[], Op[MigrationInterrupted | None]]:
        """What Ctrl-C during a pass or a set-aside raises: its ``report`` so far, marked
        interrupted, with its seconds until now, once it has begun (``began``: when, empty until
        then). ``logged``: say so in the log too."""

        def interrupted() -> Op[MigrationInterrupted | None]:
            if not began:
                return None
            yield from ()
            report.interrupted = True
            report.seconds = self.timer() - began[0]
            if logged:
                log.warning("%s: %s interrupted after %.1fs: %d records scanned; %s", self.label,
                            report.step, report.seconds, report.scanned, _short(report.counts))
            return MigrationInterrupted(report)

        return interrupted

    def _call_state(self) -> Run[MigrationState]:
        return Run(self._state())

    def _call_now(self) -> Run[float]:
        return Run(self._now())

    def _state(self) -> Op[MigrationState]:
        """The stored state (after the server check)."""
        yield from self._checked()
        return (yield from self._read_state())

    def _part_key(self, part: str) -> str:
        """The key of one of the migration's parts: a pass's checkpoint, the log."""
        return self.keys.migration_part(*self._names, part)

    def _read_state(self) -> Op[MigrationState]:
        (raw,) = yield Batch((Command(("HGETALL", self.state_key)),))
        return MigrationState.from_hash(raw or {})

    def _state_and_now(self) -> Op[tuple[MigrationState, float]]:
        """The state and the server's time, read together."""
        if self.clock is not None:
            state = yield from self._read_state()
            return state, self.clock()
        node = yield NodeOf(self.state_key)  # None on standalone Redis
        if node is not None:
            state = yield from self._read_state()
            (now,) = yield Batch((Command(("TIME",), node=node),))
        else:
            raw, now = yield Batch((Command(("HGETALL", self.state_key)), Command(("TIME",))))
            state = MigrationState.from_hash(raw or {})
        return state, _seconds(now)

    def _now(self) -> Op[float]:
        """The migration's clock: the server's time (or the injected ``clock``)."""
        if self.clock is not None:
            return self.clock()
        return (yield from self._state_and_now())[1]

    @property
    def label(self) -> str:
        """How log lines name this migration: ``migration legacy:workspace (prefix ai)``."""
        own = "" if self.keys.prefix == self.source.prefix else f", own keys {self.keys.prefix}"
        return f"migration {self.name} (prefix {self.source.prefix}{own})"

    def _checked(self) -> Op[None]:
        """Refuse a Redis that may evict keys (once per migration, until it passes): a pass or
        a phase switch on it could lose jobs or the migration state itself."""
        if not self._redis_checked:
            yield from server_check.check(self.allow_eviction, eviction.label_of(self.client))
            self._redis_checked = True

    def _store_state(self, before: MigrationState, after: MigrationState,
                     entry: dict[str, Any] | None,
                     *, same_since: bool = False, same_evidence: bool = False) -> Op[bool]:
        """Write the fields that change from ``before`` to ``after``, only while the stored phase
        (and with ``same_since`` its start) is still the one ``before`` was read with, and with
        ``same_evidence`` while no verify has recorded problems since (a switch a verify gates).

        :raises MigrationRefused: the phase or the evidence changed meanwhile (with a log
            ``entry``: a switch or a rollout change). Without an entry, returns False instead.
        """
        expected = before.phase.value if before.stored else ""
        since = repr(before.phase_since) if same_since and before.stored else ""
        evidence = str(before.failed_ticket) if same_evidence else ""
        script = migration_calls.set_state(
            state=self.state_key, log=self.log_key, phase=expected, since=since,
            entry=json.dumps(entry, sort_keys=True) if entry else "", failed_ticket=evidence,
            fields=changed_fields(before, after))
        (written,) = yield Batch((script,))
        if not written and entry is not None:
            raise MigrationRefused("the phase, or the newest verify's verdict, changed while this "
                                   "switch was being decided; retry (jobstore migrate status says "
                                   "what it needs now)")
        return bool(written)

    def _await(self, moment: float) -> Op[None]:
        # A switch reaches every store within STATE_MAX_AGE; passes start after that.
        delay = moment - (yield from self._now())
        if delay > 0:
            yield Pause(delay, clock=True)

    def _in_lua(self, other: KeySchema) -> bool:
        """Whether a pass settles its keys with PASS_BATCH: standalone Redis, and the other
        side's keys follow a format (the script builds them)."""
        return self.settler.batches and other.lua_template is not None

    def _reads_target(self, state: MigrationState) -> Prefer:
        """``f(workspace_id)``: the workspace reads the target first in this state (the copy its
        readers have been served, which wins a conflict)."""
        return _Authority(self.name, state, to_is_target=True)

    def _reads_source(self, state: MigrationState) -> Prefer:
        return _Authority(self.name, state, to_is_target=False)

    @staticmethod
    def _rescanned(report: PassReport, name: str, why: str) -> None:
        report.rescans += 1
        note = f"{name}: {why}; its scan started again from the beginning"
        log.info("%s: %s", report.step, note)
        if note not in report.notes:
            report.notes.append(note)

    def _topology_moved(self, schema: KeySchema, nodes: Sequence[str | None],
                        servers: dict[str, str]) -> Op[tuple[list[str], list[str]] | None]:
        """On Redis Cluster, after every primary's scan is done: ``(primaries, names to scan
        again)`` when a primary appeared or the slots a scanned one serves changed (keys may
        have moved to a server already scanned); None when nothing moved."""
        return (yield from self.settler.topology_moved(schema, nodes, servers))

    def _apply(self, mode: str, placed: list[Placed], dry_run: bool,
               prefer_to: Prefer | None = None) -> Op[list[str]]:
        """Copy, merge or clean up each placed record; its outcome, in order. ``prefer_to``:
        ``f(workspace_id)``, True where the 'to' side wins a conflict (jobstore.rules.wins)."""
        if not placed:
            return []
        prefer_to = prefer_to or (lambda ws: False)
        return (yield from self.settler.apply(mode, placed, dry_run, prefer_to))

    def _place(self, scan_schema: KeySchema, other: KeySchema, keys: list[str],
               report: PassReport | _Counter,
               unroutable: list[str] | None = None) -> Op[list[Placed]]:
        """``(workspace_id, job_id, key, other_key)`` for every record key in ``keys``.

        A schema without the workspace in its keys (legacy) keeps it in the record; a record
        deleted since the scan is dropped, one without a usable workspace_id is ``unroutable``
        (its key goes to ``unroutable`` too), a key that is not a hash is ``not_a_record``
        (reported and skipped).
        """
        parsed = [(key, ids) for key in keys if (ids := scan_schema.parse_key(key))]
        need = [key for key, (ws, _) in parsed if ws is None]
        owners: dict[str, tuple[Any, Any]] = {}
        if need:
            replies = yield Batch(tuple(
                Command(args) for key in need for args in (("HGET", key, "workspace_id"), ("EXISTS", key))
            ), tolerate_errors=True)
            owners = {key: (replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(need)}
        placed: list[Placed] = []
        for key, (ws, job_id) in parsed:
            if ws is None:
                ws, exists = owners[key]
                if isinstance(ws, Exception):
                    report.add("not_a_record")
                    continue
                if not exists:
                    continue  # deleted since the scan
            if not ws or not validation.IDENTIFIER.fullmatch(ws):
                report.add("unroutable")
                if unroutable is not None:
                    unroutable.append(key)
                continue
            placed.append((ws, job_id, key, other.job_key(ws, job_id)))
        return placed


def _short(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"


def _seconds(reply: Any) -> float:
    """A TIME reply (``(seconds, microseconds)``) as epoch seconds."""
    seconds, micros = reply
    return int(seconds) + int(micros) / 1e6


@dataclass(frozen=True)
class _Authority:
    """``f(workspace_id)``: True where the 'to' side of a pass wins a conflict, because it is the
    copy the phase reads first for that workspace (jobstore.rules.wins); ``uniform`` is that
    answer when it is the same for every workspace (PASS_BATCH then needs no workspace's)."""

    migration: str
    state: MigrationState
    to_is_target: bool

    def reads_target(self, workspace_id: str) -> bool:
        phase = self.state.phase
        return phase is Phase.TARGET_ONLY or (
            phase is Phase.READ_TARGET and self.state.rollout.includes(self.migration, workspace_id))

    def __call__(self, workspace_id: str) -> bool:
        return self.reads_target(workspace_id) == self.to_is_target

    @property
    def uniform(self) -> bool | None:
        phase, rollout = self.state.phase, self.state.rollout
        if phase is Phase.TARGET_ONLY:
            target = True
        elif phase is not Phase.READ_TARGET:
            target = False
        elif rollout.percent >= 100 and not rollout.deny:
            target = True
        elif rollout.percent <= 0 and not rollout.allow:
            target = False
        else:
            return None
        return target == self.to_is_target


def _authority(prefer_to: Prefer | None) -> str:
    """PASS_BATCH's ARGV[3]: '1' the 'to' copy wins a conflict, '0' the 'from' copy, '?' it
    depends on the workspace (the script hands such records back to be settled one by one)."""
    if prefer_to is None:
        return "0"
    uniform = prefer_to.uniform if isinstance(prefer_to, _Authority) else None
    return "?" if uniform is None else "1" if uniform else "0"


def _check_batch(batch: Any) -> None:
    """:raises InvalidArgument: ``batch`` (keys per SCAN step) is not an int >= 1."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidArgument("batch", f"must be an int >= 1, not {batch!r}")


class _Counter:
    """Counts what ``_place`` reports, for verify."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n


def _flat(mapping: dict[str, Any]) -> list[Any]:
    return [part for item in mapping.items() for part in item]


def _one(batch: Batch) -> Op[list[Any]]:
    replies: list[Any] = yield batch
    return replies
