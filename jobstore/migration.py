"""Driving a migration: phase switches, backfill, verify, reverse sync and cleanup.

Every pass is safe while traffic runs: each record is copied, compared-and-repaired or deleted
by one Lua script that re-reads both sides at that instant (``SYNC_RECORD``,
``CLEANUP_RECORD``), so a pass never overwrites a newer record, never revives a job deleted
meanwhile, and can be stopped and resumed at any point. Passes are generators of steps, like
the store's operations, run by the same driver.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

from . import validation
from .connection import connect, redact
from .driver import SyncDriver
from .errors import ConfigError, MigrationRefused
from .events import Events
from .layout import StoreKeys
from .phases import STATE_MAX_AGE, MigrationState, Phase, parse_phase, refusal, switched
from .plugins import get_registry
from .schema import KeySchema
from .ops import as_record
from .scripts import CLEANUP_RECORD, READ_RECORDS, SET_STATE, SYNC_RECORD
from . import sync_cluster
from .steps import Batch, Command, Pause, Primaries, Script

Progress = Callable[[str, int, "int | None", dict], None]
MUTABLE = frozenset({"status", "result", "error", "updated_at"})


@dataclass
class PassReport:
    """What a backfill, reverse sync or cleanup did. ``counts`` by outcome (see the scripts)."""

    step: str
    dry_run: bool = False
    scanned: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    seconds: float = 0.0
    finished: bool = False

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    """Record-by-record comparison of source and target."""

    phase: str
    checked_source: int = 0
    checked_target: int = 0
    same: int = 0
    target_newer: int = 0  # the target moved on after target-only: expected there, a problem before
    missing: int = 0  # in the source, not in the target
    differing: int = 0
    orphaned: int = 0  # in the target, not in the source (expected in target-only)
    unroutable: int = 0  # source records without a workspace_id: cannot be placed
    repaired: int = 0
    sampled: bool = False
    examples: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def problems(self) -> int:
        only_target = Phase(self.phase) is Phase.TARGET_ONLY
        return (
            self.missing
            + self.differing
            + self.unroutable
            + (0 if only_target else self.orphaned + self.target_newer)
        )

    @property
    def clean(self) -> bool:
        return self.problems == 0

    def example(self, kind: str, limit: int, **detail: Any) -> None:
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < limit:
            bucket.append(detail)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problems": self.problems, "clean": self.clean}


def open_migration(url: str, *, source: str = "legacy", target: str = "workspace",
                   prefix: str = "ai", client_options: dict | None = None,
                   events: Events | None = None) -> "Migration":
    """A :class:`Migration` on ``url`` between two registered schemas.

    :raises ConfigError, UnknownStrategy: bad URL, prefix or schema name.
    """
    return Migration(connect(url, client_options), source=source, target=target, prefix=prefix,
                     url=url, events=events)


class Migration:
    """The source -> target migration of one store prefix: its phase and its passes."""

    def __init__(self, client, *, source: str = "legacy", target: str = "workspace",
                 prefix: str = "ai", url: str | None = None, events: Events | None = None,
                 clock: Callable[[], float] = time.time, wait: Callable[[float], None] = time.sleep):
        validation.prefix(prefix)
        registry = get_registry()
        self.source: KeySchema = registry.schema(source, prefix)
        self.target: KeySchema = registry.schema(target, prefix)
        if self.source.lua_template == self.target.lua_template:
            raise ConfigError(f"source and target are the same schema {source!r}")
        self.client = client
        self.name = f"{source}:{target}"
        self.keys = StoreKeys(prefix)
        self.state_key = self.keys.migration(source, target)
        self.log_key = self.keys.migration_part(source, target, "log")
        self.events = events or Events()
        self.clock = clock
        self.wait = wait
        self.driver = SyncDriver(client, None, redact(url) if url else repr(client))

    # -- phase -------------------------------------------------------------------------------

    def state(self) -> MigrationState:
        return self.driver.run(self._read_state())

    def _read_state(self) -> Iterator:
        (raw,) = yield Batch((Command(("HGETALL", self.state_key)),))
        return MigrationState.from_hash(raw or {})

    def set_phase(self, phase: str | Phase, *, force: bool = False, reason: str = "",
                  wait: bool = True) -> MigrationState:
        """Switch the phase, fleet-wide. Refused with the reason when it could strand or lose
        data, unless ``force`` (recorded in the log with ``reason``). With ``wait``, returns once
        every store has followed (about a second).

        :raises MigrationRefused: the switch is unsafe (and not forced), or raced another switch.
        :raises InvalidArgument: an unknown phase (a ValueError too).
        """
        new = parse_phase(phase)
        state = self.state()
        why = refusal(state, new)
        if why and not force:
            raise MigrationRefused(why)
        now = self.clock()
        after = switched(state, new, now)
        entry = {"at": now, "event": "phase", "from": state.phase.value, "to": new.value,
                 "forced": bool(why), "refusal": why or "", "reason": reason}
        self._store_state(state, after, entry)
        self.events.phase(self.name, after.phase.value)
        if wait:
            self.wait(STATE_MAX_AGE + 0.1)
        return after

    def set_rollout(self, *, percent: float | None = None, allow: list[str] | None = None,
                    deny: list[str] | None = None) -> MigrationState:
        """Change which workspaces read the target first in ``read-target``.

        :raises ValueError: a percentage outside 0-100 or a bad workspace id.
        """
        state = self.state()
        rollout = state.rollout
        if percent is not None:
            if isinstance(percent, bool) or not 0 <= float(percent) <= 100:
                raise validation.InvalidArgument("percent", f"must be 0-100, not {percent!r}")
            if float(percent) < rollout.percent and state.phase is Phase.TARGET_ONLY:
                raise MigrationRefused("the rollout cannot shrink in target-only")
            rollout = replace(rollout, percent=float(percent))
        if allow is not None:
            rollout = replace(rollout, allow=frozenset(validation.identifier("allow", w) for w in allow))
        if deny is not None:
            rollout = replace(rollout, deny=frozenset(validation.identifier("deny", w) for w in deny))
        after = replace(state, rollout=rollout, stored=True)
        entry = {"at": self.clock(), "event": "rollout", "percent": rollout.percent,
                 "allow": sorted(rollout.allow), "deny": sorted(rollout.deny)}
        self._store_state(state, after, entry)
        return after

    def _store_state(self, before: MigrationState, after: MigrationState, entry: dict) -> None:
        expected = before.phase.value if before.stored else ""
        flat = [part for item in after.to_hash().items() for part in item]
        script = Script(SET_STATE, (self.state_key, self.log_key),
                        (expected, json.dumps(entry, sort_keys=True), *flat))
        (written,) = self.driver.run(_one(Batch((script,))))
        if not written:
            raise MigrationRefused("the phase changed while this switch was being decided; retry")

    def log(self, limit: int = 20) -> list[dict]:
        raw = self.client.lrange(self.log_key, 0, limit - 1)
        return [json.loads(item) for item in raw]

    def status(self) -> dict[str, Any]:
        """Phase, rollout, what the switch rules would say next, and the passes' checkpoints."""
        state = self.state()
        nxt = [p for p in Phase if p.rank == state.phase.rank + 1]
        back = [p for p in Phase if p.rank == state.phase.rank - 1]
        checkpoints = {
            part: self.client.hgetall(self.keys.migration_part(*self.name.split(":"), part))
            for part in ("backfill", "reverse-sync", "cleanup")
        }
        return {
            "migration": self.name,
            "phase": state.phase.value,
            "phase_stored": state.stored,
            "rollout": {"percent": state.rollout.percent, "allow": sorted(state.rollout.allow),
                        "deny": sorted(state.rollout.deny)},
            "verified_clean_at": state.verified_clean or None,
            "reverse_synced_at": state.reverse_synced or None,
            "source_gap": state.source_gap,
            "next": {p.value: refusal(state, p) or "allowed" for p in nxt + back},
            "checkpoints": {k: v for k, v in checkpoints.items() if v},
            "log": self.log(5),
        }

    # -- passes ------------------------------------------------------------------------------

    def backfill(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                 restart: bool = False, progress: Progress | None = None) -> PassReport:
        """Copy every source record missing in the target (resumable, throttled).

        :raises MigrationRefused: the phase does not write both sides yet.
        """
        state = self.state()
        if not state.phase.writes_both and not dry_run:
            raise MigrationRefused(
                f"backfill needs dual writes (phase dual-write or read-target), phase is {state.phase}: "
                "records copied now would not follow later updates"
            )
        self._await(state.dual_since)
        return self._run_pass("backfill", self.source, self.target, "copy", batch, rate,
                              dry_run, restart, progress)

    def reverse_sync(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                     restart: bool = False, progress: Progress | None = None) -> PassReport:
        """Bring the source up to date from the target, so a rollback loses nothing."""
        state = self.state()
        started = self.clock()
        self._await(state.phase_since)
        report = self._run_pass("reverse-sync", self.target, self.source, "merge", batch, rate,
                                dry_run, restart, progress)
        if report.finished and not dry_run:
            # Records the source layout cannot hold (foreign) keep a rollback refused.
            fields = {"reverse_synced": repr(started), "unplaceable": str(report.counts.get("foreign", 0))}
            after = self.state()
            if after.phase is Phase.READ_TARGET and started > after.phase_since:
                fields["source_gap"] = "0"  # both sides are written again and now agree
            self.client.hset(self.state_key, mapping=fields)
        return report

    def cleanup(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                restart: bool = False, progress: Progress | None = None) -> PassReport:
        """Delete source records whose target copy holds the same record (target-only only).

        :raises MigrationRefused: the phase is not target-only.
        """
        state = self.state()
        if state.phase is not Phase.TARGET_ONLY and not dry_run:
            raise MigrationRefused(f"cleanup runs only in target-only; phase is {state.phase}")
        self._await(state.phase_since)
        return self._run_pass("cleanup", self.source, self.target, "cleanup", batch, rate,
                              dry_run, restart, progress)

    def verify(self, *, sample: int | None = None, repair: bool = False, examples: int = 10,
               batch: int = 500, progress: Progress | None = None) -> VerifyReport:
        """Compare source and target record by record; ``repair`` fixes what it finds.

        A full verify that finds nothing to fix is recorded: it allows ``target-only``.
        """
        state = self.state()
        started = self.clock()
        report = self.driver.run(
            self._verify(state.phase, sample, repair, examples, batch, progress)
        )
        report.seconds = self.clock() - started
        self.events.verify_result(self.name, report)
        if report.clean and not sample and not report.repaired:
            self.client.hset(self.state_key, "verified_clean", repr(started))
        return report

    # -- pass machinery ----------------------------------------------------------------------

    def _await(self, moment: float) -> None:
        # A switch reaches every store within STATE_MAX_AGE; passes start after that.
        delay = moment - self.clock()
        if delay > 0:
            self.wait(delay)

    def _run_pass(self, step, scan_schema, other, mode, batch, rate, dry_run, restart, progress):
        checkpoint_key = self.keys.migration_part(*self.name.split(":"), step)
        if batch < 1:
            raise validation.InvalidArgument("batch", f"must be >= 1, not {batch!r}")
        if rate is not None and rate <= 0:
            raise validation.InvalidArgument("rate", f"must be > 0, not {rate!r}")
        started = self.clock()
        report = self.driver.run(
            self._pass(step, scan_schema, other, mode, batch, rate, dry_run, restart,
                       progress, checkpoint_key)
        )
        report.seconds = self.clock() - started
        self.events.pass_result(self.name, report)
        return report

    def _pass(self, step, scan_schema, other, mode, batch, rate, dry_run, restart, progress,
              checkpoint_key):
        report = PassReport(step, dry_run=dry_run)
        cursors: dict[str, str] = {}  # per primary: the next SCAN cursor, or "done"
        if not dry_run:
            (saved,) = yield Batch((Command(("HGETALL", checkpoint_key)),))
            if saved and saved.get("finished") != "1" and not restart:
                cursors = json.loads(saved.get("cursors", "{}"))
                report.resumed = True
                report.scanned = int(saved.get("scanned", 0))
                report.counts = json.loads(saved.get("counts", "{}"))
        nodes = yield Primaries()
        total = yield from self._count(scan_schema, nodes)
        begun = time.monotonic()
        done_at_start = report.scanned
        for node in nodes:
            name = node or "standalone"
            while cursors.get(name) != "done":
                cursor, keys = yield from _scan(scan_schema, node, cursors.get(name, "0"), batch)
                placed = yield from self._place(scan_schema, other, keys, report)
                outcomes = yield from self._apply(mode, placed, dry_run)
                for outcome in outcomes:
                    report.add(outcome)
                report.scanned += len(placed)
                cursors[name] = "done" if cursor == "0" else cursor
                finished = all(cursors.get(n or "standalone") == "done" for n in nodes)
                if not dry_run:
                    # Written once the batch's records are settled: a crash re-does at most
                    # this batch, and every step of it is safe to repeat.
                    state = {"cursors": json.dumps(cursors), "scanned": report.scanned,
                             "counts": json.dumps(report.counts),
                             "finished": "1" if finished else "0", "updated_at": repr(self.clock())}
                    yield Batch((Command(("HSET", checkpoint_key, *_flat(state))),))
                self.events.migration_progress(self.name, step, report.scanned, total, report.counts)
                if progress:
                    progress(step, report.scanned, total, dict(report.counts))
                if rate and not finished:
                    due = (report.scanned - done_at_start) / rate - (time.monotonic() - begun)
                    if due > 0:
                        yield Pause(due)
        report.finished = True
        return report

    def _apply(self, mode: str, placed: list, dry_run: bool):
        """Copy, merge or clean up each placed record; its outcome, in order."""
        if not placed:
            return []
        if self.driver.cluster:
            return (yield from sync_cluster.settle(self.keys, mode, placed, dry_run, self.clock()))
        calls = []
        for ws, job_id, scan_key, other_key in placed:
            if mode == "cleanup":
                calls.append(Script(CLEANUP_RECORD, (scan_key, other_key), (ws, "1" if dry_run else "0")))
            else:
                calls.append(Script(SYNC_RECORD, (scan_key, other_key, self.keys.index(ws)),
                                    (ws, job_id, mode, "1" if dry_run else "0")))
        return (yield Batch(tuple(calls)))

    def _count(self, schema: KeySchema, nodes: list):
        """How many keys the pass will see (for progress and ETA)."""
        total = 0
        for node in nodes:
            cursor = "0"
            while True:
                cursor, keys = yield from _scan(schema, node, cursor, 1000)
                total += sum(1 for key in keys if schema.parse_key(key))
                if cursor == "0":
                    break
        return total

    def _compare_pairs(self, side: str, placed: list):
        """``(kind, record, counterpart)`` for each placed record (see ``_compare``).

        On standalone Redis every pair is read in one script, at one instant: a dual write or
        delete landing between two reads would otherwise look like a difference. On a cluster the
        two copies sit on different nodes; ``_verify`` looks again at what differs.
        """
        keys = tuple(key for _, _, a, b in placed for key in (a, b))
        if not keys:
            return []
        if self.driver.cluster:
            records = yield Batch(tuple(Command(("HGETALL", key)) for key in keys))
        else:
            (flat,) = yield Batch((Script(READ_RECORDS, keys, ()),))
            records = [as_record(r) for r in flat]
        found = []
        for i, (ws, _, _, _) in enumerate(placed):
            mine, theirs = records[2 * i] or {}, records[2 * i + 1] or {}
            kind = "vanished" if mine.get("workspace_id") != ws else _compare(side, mine, theirs, ws)
            found.append((kind, mine, theirs))
        return found

    def _place(self, scan_schema: KeySchema, other: KeySchema, keys: list[str], report):
        """``(workspace_id, job_id, key, other_key)`` for every record key in ``keys``.

        A schema without the workspace in its keys (legacy) keeps it in the record; a record
        deleted since the scan is dropped, one without a usable workspace_id is ``unroutable``.
        """
        parsed = [(key, scan_schema.parse_key(key)) for key in keys]
        parsed = [(key, ids) for key, ids in parsed if ids]
        need = [key for key, (ws, _) in parsed if ws is None]
        owners: dict[str, tuple[str | None, int]] = {}
        if need:
            replies = yield Batch(tuple(
                Command(args) for key in need for args in (("HGET", key, "workspace_id"), ("EXISTS", key))
            ))
            owners = {key: (replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(need)}
        placed = []
        for key, (ws, job_id) in parsed:
            if ws is None:
                ws, exists = owners[key]
                if not exists:
                    continue  # deleted since the scan
            if not ws or not validation.IDENTIFIER.fullmatch(ws):
                report.add("unroutable")
                continue
            placed.append((ws, job_id, key, other.job_key(ws, job_id)))
        return placed

    def _verify(self, phase, sample, repair, examples, batch, progress):
        report = VerifyReport(phase.value, sampled=bool(sample))
        nodes = yield Primaries()
        for side, node in [(side, node) for side in ("source", "target") for node in nodes]:
            schema, other = (self.source, self.target) if side == "source" else (self.target, self.source)
            cursor = "0"
            seen = report.checked_source if side == "source" else report.checked_target
            while True:
                cursor, keys = yield from _scan(schema, node, cursor, batch)
                unroutable = _Counter()
                placed = yield from self._place(schema, other, keys, unroutable)
                if side == "source":
                    report.unroutable += unroutable.n
                if sample:
                    placed = placed[: max(0, sample - seen)]
                seen += len(placed)
                found = yield from self._compare_pairs(side, placed)
                if self.driver.cluster:
                    # The two copies sit on different nodes and a write reaches them one after
                    # the other: look again at what differs before calling it a problem.
                    for pause in (0.05, 0.25):
                        suspects = [i for i, (kind, _, _) in enumerate(found)
                                    if kind not in ("same", "vanished")]
                        if not suspects:
                            break
                        yield Pause(pause)
                        again = yield from self._compare_pairs(side, [placed[i] for i in suspects])
                        for i, result in zip(suspects, again):
                            found[i] = result
                fixes = []
                for (ws, job_id, key, other_key), (kind, mine, theirs) in zip(placed, found):
                    if kind == "vanished":
                        continue  # deleted since the scan
                    if side == "source":
                        report.checked_source += 1
                    else:
                        report.checked_target += 1
                    if kind == "same":
                        report.same += side == "source"
                        continue
                    if kind == "target_newer":
                        report.target_newer += 1
                        if phase is Phase.TARGET_ONLY:
                            continue
                    elif kind == "missing":
                        report.missing += 1
                    elif kind == "orphaned":
                        report.orphaned += 1
                        if phase is Phase.TARGET_ONLY:
                            continue
                    else:
                        report.differing += 1
                    report.example(kind, examples, workspace_id=ws, job_id=job_id, key=key,
                                   other_key=other_key, fields=list(_diff(mine, theirs)))
                    if repair:
                        source_key, target_key = (key, other_key) if side == "source" else (other_key, key)
                        fixes.append((ws, job_id, source_key, target_key))
                if fixes:
                    outcomes = yield from self._apply("merge", fixes, False)
                    report.repaired += sum(1 for o in outcomes if o in REPAIRED)
                if progress:
                    progress(f"verify {side}", seen, None, {})
                if cursor == "0" or (sample and seen >= sample):
                    break
        return report


REPAIRED = ("copied", "copied-back", "merged", "deleted")


def _scan(schema: KeySchema, node: str | None, cursor: str, count: int):
    """One SCAN step of one primary over a schema's keys: ``(next cursor, keys)``."""
    (reply,) = yield Batch((Command(("SCAN", cursor, "MATCH", schema.scan_pattern(), "COUNT", count), node=node),))
    return str(reply[0]), reply[1]


class _Counter:
    """Counts what ``_place`` reports, for verify."""

    n = 0

    def add(self, outcome: str, n: int = 1) -> None:
        self.n += n


def _compare(side: str, mine: dict, theirs: dict, ws: str) -> str:
    if side == "target":
        return "same" if theirs.get("workspace_id") == ws else "orphaned"
    if theirs.get("workspace_id") != ws:
        return "missing"
    if mine == theirs:
        return "same"
    identical_identity = all(mine.get(k) == theirs.get(k) for k in mine if k not in MUTABLE) and all(
        theirs.get(k) == mine.get(k) for k in theirs if k not in MUTABLE
    )
    if identical_identity and float(theirs.get("updated_at") or 0) >= float(mine.get("updated_at") or 0):
        return "target_newer"
    return "differing"


def _diff(a: dict, b: dict) -> tuple[str, ...]:
    return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def _flat(mapping: dict) -> list:
    return [part for item in mapping.items() for part in item]


def _one(batch: Batch):
    replies = yield batch
    return replies
