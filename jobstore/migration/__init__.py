"""Driving a migration: phase switches, backfill, verify, reverse sync and cleanup.

Every pass is safe while traffic runs: each record is copied, compared-and-repaired or deleted
by one Lua script that re-reads both sides at that instant (``SYNC_RECORD``,
``CLEANUP_RECORD``), so a pass never overwrites a newer record, never revives a job deleted
meanwhile, and can be stopped and resumed at any point. Passes are generators of steps, like
the store's operations, run by the same driver.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.cluster import RedisCluster

from .. import validation
from ..connection import Client, connect, redact
from ..driver import SyncDriver
from ..errors import ConfigError, InvalidArgument, MigrationRefused
from ..events import Events
from ..layout import StoreKeys
from ..phases import (STATE_MAX_AGE, MigrationState, Phase, changed_fields, parse_phase, refusal,
                     switched)
from ..plugins import get_registry
from ..schema import WORKSPACE_MARK, KeySchema
from ..ops import Op, as_record
from ..scripts import (CLEANUP_RECORD, PASS_BATCH, READ_RECORDS, RECORD_VERIFY_FAILED,
                      RESTORE_ASIDE, SET_ASIDE, SET_STATE, SYNC_RECORD, VERIFY_TICKET)
from .. import eviction, rules, sync_cluster
from ..steps import Batch, Call, Command, Pause, Primaries, Scan, Script
from .reports import (MAX_SET_ASIDE_LISTED, MigrationInterrupted, PassReport, SetAsideReport,
                      VerifyReport, plural)

__all__ = [
    "Progress",
    "Prefer",
    "Placed",
    "Compared",
    "Sent",
    "Paced",
    "MUTABLE",
    "VERIFY_ATTEMPTS",
    "CHUNK",
    "CHUNKS_PER_TRIP",
    "MAX_KEYS_PER_CALL",
    "RATE_CALLS_PER_SECOND",
    "RATE_CHUNK_MIN",
    "EXACT_COUNT_UP_TO",
    "COUNT_SAMPLES",
    "CHECKPOINT_EVERY",
    "PassReport",
    "SetAsideReport",
    "MAX_SET_ASIDE_LISTED",
    "VerifyReport",
    "plural",
    "MigrationInterrupted",
    "open_migration",
    "Migration",
    "REPAIRED",
    "NOT_A_HASH",
]

# ``progress(step, done, total or None, counts)``: how far a pass or a verify is.
Progress = Callable[[str, int, int | None, dict[str, int]], None]
# ``f(workspace_id)``: True where the side a pass writes to wins a conflict (rules.wins).
Prefer = Callable[[str], bool]
# A record a pass or verify acts on: ``(workspace_id, job_id, its key, the other side's key)``.
Placed = tuple[str, str, str, str]
# What verify found of one placed record: ``(kind, the record, its counterpart)``.
Compared = tuple[str, dict[str, str], dict[str, str]]
# A key sent to PASS_BATCH: ``(key, the script's reply for it)``.
Sent = tuple[str, Any]
# A pass under a rate: how to wait until ``n`` more records are due, and keys per script call.
Paced = tuple[Callable[[int], Op[None]], int]
log = logging.getLogger(__name__)
MUTABLE = rules.MUTABLE
# A verify whose scan keeps landing on a changed server (restarts, failovers) gives up after
# this many fresh starts, and is then not clean: it could not vouch for every key.
VERIFY_ATTEMPTS = 3
# Keys settled by one pass_batch script call by default (standalone Redis, schemas with a key
# format; a pass's keys_per_call chooses otherwise). Redis serves nobody else while a script
# runs: at about 20 us per record, 50 keys hold a live request back by about a millisecond.
# Calls go one per round trip: Redis runs everything one read of a pipeline holds (16 KB, some
# 340 keys) back to back, and the pass's own Python work between round trips stays short (a
# get in a thread of the same process waits for it). Measured (docs/migration.md): 50 keys had
# the best p99 of a live get; larger calls go faster (200: backfill 1.6x, verify 1.6x) and
# hold live requests 2-4 times longer.
CHUNK = 50
CHUNKS_PER_TRIP = 1
# The most keys_per_call a pass accepts: a call of 1,000 keys holds Redis some 20 ms.
MAX_KEYS_PER_CALL = 1000
# Under a rate, calls are made smaller to come about this often (each then holds Redis for a
# small fraction of a millisecond), and never hold fewer than RATE_CHUNK_MIN keys: at 5,000
# records a second, 5 keys every millisecond (measured against 10 and 50: docs/performance.md).
RATE_CALLS_PER_SECOND = 1000
RATE_CHUNK_MIN = 5
# Up to this many keys in the database, a pass counts its records exactly before it starts (one
# SCAN of the keyspace); above, it estimates them from DBSIZE and a sample of RANDOMKEY.
EXACT_COUNT_UP_TO = 2_000
COUNT_SAMPLES = 64
# A checkpoint rides along with the next batch's scripts; after this many SCAN steps that found
# nothing to settle (a sparse keyspace), it is written on its own.
CHECKPOINT_EVERY = 16

def open_migration(url: str, *, source: str = "legacy", target: str = "workspace",
                   prefix: str = "ai", client_options: dict[str, Any] | None = None,
                   events: Events | None = None, allow_eviction: bool = False,
                   own_prefix: str | None = None) -> Migration:
    """A :class:`Migration` on ``url`` between two registered schemas (``own_prefix``: as the
    stores', :class:`jobstore.JobStore`).

    :raises ConfigError, UnknownStrategy: bad URL, prefix or schema name.
    """
    return Migration(connect(url, client_options), source=source, target=target, prefix=prefix,
                     url=url, events=events, allow_eviction=allow_eviction, own_prefix=own_prefix)


class Migration:
    """The source -> target migration of one store prefix: its phase and its passes.

    Every time the migration records (phase switches, the start of a verify or a reverse sync)
    is read from the Redis server holding its state (``TIME``), so that the rules comparing them
    hold whatever the clocks of the machines running ``jobstore migrate`` say. ``clock`` replaces
    that server clock (tests); ``wait`` is how the migration sleeps.
    """

    def __init__(self, client: Client, *, source: str = "legacy", target: str = "workspace",
                 prefix: str = "ai", url: str | None = None, events: Events | None = None,
                 clock: Callable[[], float] | None = None,
                 wait: Callable[[float], None] = time.sleep, allow_eviction: bool = False,
                 own_prefix: str | None = None) -> None:
        validation.prefix(prefix)
        own_prefix = validation.own_prefix(own_prefix, prefix)
        registry = get_registry()
        self.source: KeySchema = registry.schema(source, prefix)
        self.target: KeySchema = registry.schema(target, prefix)
        if self.source.identity == self.target.identity:
            raise ConfigError(f"source and target are the same schema {source!r}")
        self.client = client
        self.name = f"{source}:{target}"
        self._names = (source, target)
        self.keys = StoreKeys(own_prefix)
        self.state_key = self.keys.migration(source, target)
        self.log_key = self._part_key("log")
        self.events = events or Events()
        self.clock = clock
        self.wait = wait
        self.allow_eviction = allow_eviction
        self._redis_checked = False
        self.driver = SyncDriver(client, None, redact(url) if url else repr(client))

    # -- phase -------------------------------------------------------------------------------

    def state(self) -> MigrationState:
        self._check_redis()
        return self.driver.run(self._read_state())

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
        if self.driver.cluster:
            state = yield from self._read_state()
            (now,) = yield Batch((Command(("TIME",), node=self._state_node()),))
        else:
            raw, now = yield Batch((Command(("HGETALL", self.state_key)), Command(("TIME",))))
            state = MigrationState.from_hash(raw or {})
        return state, _seconds(now)

    def now(self) -> float:
        """The migration's clock: the server's time (or the injected ``clock``)."""
        if self.clock is not None:
            return self.clock()
        return self.driver.run(self._state_and_now())[1]

    @property
    def label(self) -> str:
        """How log lines name this migration: ``migration legacy:workspace (prefix ai)``."""
        own = "" if self.keys.prefix == self.source.prefix else f", own keys {self.keys.prefix}"
        return f"migration {self.name} (prefix {self.source.prefix}{own})"

    def _state_node(self) -> str:
        assert isinstance(self.client, RedisCluster), "asked on Redis Cluster only"
        # redis-py leaves RedisCluster.get_node_from_key unannotated.
        node = self.client.get_node_from_key(self.state_key)  # type: ignore[no-untyped-call]
        return str(node.name)

    def _check_redis(self) -> None:
        """Refuse a Redis that may evict keys (once per Migration): a pass or a phase switch on
        it could lose jobs or the migration state itself."""
        if self._redis_checked:
            return
        eviction.check(self.client, allow=self.allow_eviction)
        self._redis_checked = True

    def set_phase(self, phase: str | Phase, *, force: bool = False, reason: str = "",
                  wait: bool = True) -> MigrationState:
        """Switch the phase, fleet-wide. Refused with the reason when it could strand or lose
        data, unless ``force`` (recorded in the log with ``reason``). With ``wait``, returns once
        every store has followed (about a second).

        :raises MigrationRefused: the switch is unsafe (and not forced), or raced another switch.
        :raises InvalidArgument: an unknown phase (a ValueError too).
        """
        new = parse_phase(phase)
        self._check_redis()
        state, now = self.driver.run(self._state_and_now())
        why = refusal(state, new)
        if not why and new is Phase.TARGET_ONLY and not self.driver.cluster:
            (mode,) = self.driver.run(_one(Batch((Command(("HGET", self.keys.queue_mode, "mode")),))))
            if mode == "shared":
                why = ("a compatible queue (legacy_queue) is still shared with the replaced "
                       "system: its bare job ids are found through the source's records, which "
                       "target-only stops writing and cleanup deletes. Leave it first (jobstore "
                       "legacy-queue leave, or store.leave_legacy_queue()) once no old process "
                       "remains")
        if why and not force:
            raise MigrationRefused(why)
        after = switched(state, new, now)
        entry = {"at": now, "event": "phase", "from": state.phase.value, "to": new.value,
                 "forced": bool(why), "refusal": why or "", "reason": reason}
        self._store_state(state, after, entry, same_since=True)
        self.events.phase(self.name, after.phase.value)
        if why:
            log.warning("%s: phase %s -> %s FORCED although %s (reason: %s)", self.label,
                        state.phase, new, why, reason or "none given")
        elif state.phase is not new or not state.stored:
            log.info("%s: phase %s -> %s%s", self.label, state.phase, new,
                     f" (reason: {reason})" if reason else "")
        if wait:
            self.wait(STATE_MAX_AGE + 0.1)
        return after

    def set_rollout(self, *, percent: float | None = None, allow: list[str] | None = None,
                    deny: list[str] | None = None) -> MigrationState:
        """Change which workspaces read the target first in ``read-target``.

        :raises ValueError: a percentage outside 0-100 or a bad workspace id.
        """
        if percent is not None and (isinstance(percent, bool) or not 0 <= float(percent) <= 100):
            raise InvalidArgument("percent", f"must be 0-100, not {percent!r}")
        allowed = None if allow is None else frozenset(validation.identifier("allow", w) for w in allow)
        denied = None if deny is None else frozenset(validation.identifier("deny", w) for w in deny)
        self._check_redis()
        state, now = self.driver.run(self._state_and_now())
        if not state.stored:
            raise MigrationRefused(
                "no phase is stored yet: store one first (jobstore migrate phase off or dual-write), "
                "so that a rollout change cannot switch the fleet's phase as a side effect")
        rollout = state.rollout
        shrinks = (percent is not None and float(percent) < rollout.percent) or bool(
            denied is not None and denied - rollout.deny)
        if shrinks and state.phase is Phase.TARGET_ONLY:
            raise MigrationRefused("the rollout cannot shrink in target-only")
        if shrinks and state.source_gap:
            raise MigrationRefused(
                "the rollout cannot shrink while the source misses the writes of the target-only "
                "period (workspaces taken out would read the stale source): run a reverse sync first")
        if percent is not None:
            rollout = replace(rollout, percent=float(percent))
        if allowed is not None:
            rollout = replace(rollout, allow=allowed)
        if denied is not None:
            rollout = replace(rollout, deny=denied)
        after = replace(state, rollout=rollout, stored=True)
        entry = {"at": now, "event": "rollout", "percent": rollout.percent,
                 "allow": sorted(rollout.allow), "deny": sorted(rollout.deny)}
        self._store_state(state, after, entry, same_since=True)
        log.info("%s: read rollout %g%%, allow %s, deny %s", self.label, rollout.percent,
                 sorted(rollout.allow), sorted(rollout.deny))
        return after

    def _store_state(self, before: MigrationState, after: MigrationState,
                     entry: dict[str, Any] | None,
                     *, same_since: bool = False) -> bool:
        """Write the fields that change from ``before`` to ``after``, only while the stored phase
        (and with ``same_since`` its start) is still the one ``before`` was read with.

        :raises MigrationRefused: the phase changed meanwhile (with a log ``entry``: a switch or
            a rollout change). Without an entry, returns False instead.
        """
        expected = before.phase.value if before.stored else ""
        since = repr(before.phase_since) if same_since and before.stored else ""
        flat = _flat(changed_fields(before, after))
        script = Script(SET_STATE, (self.state_key, self.log_key),
                        (expected, since, json.dumps(entry, sort_keys=True) if entry else "", *flat))
        (written,) = self.driver.run(_one(Batch((script,))))
        if not written and entry is not None:
            raise MigrationRefused("the phase changed while this switch was being decided; retry")
        return bool(written)

    def log(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last ``limit`` phase switches and rollout changes, newest first.

        :raises StoreUnavailable: Redis could not be reached.
        """
        (raw,) = self.driver.run(_one(Batch((Command(("LRANGE", self.log_key, 0, limit - 1)),))))
        return [json.loads(item) for item in raw or []]

    def status(self) -> dict[str, Any]:
        """Phase, rollout, what the switch rules would say next, and the passes' checkpoints,
        as typed values (times in epoch seconds or None, counts as ints, the checkpoints'
        ``counts``, ``cursors`` and ``servers`` as objects, ``finished`` as a bool).

        :raises StoreUnavailable: Redis could not be reached (at any of its reads).
        """
        state = self.state()
        nxt = [p for p in Phase if p.rank == state.phase.rank + 1]
        back = [p for p in Phase if p.rank == state.phase.rank - 1]
        parts = ("backfill", "reverse-sync", "cleanup")
        replies = self.driver.run(_one(Batch(tuple(
            Command(("HGETALL", self._part_key(part)))
            for part in parts))))
        checkpoints = dict(zip(parts, (reply or {} for reply in replies)))
        return {
            "migration": self.name,
            "phase": state.phase.value,
            "phase_stored": state.stored,
            "phase_since": state.phase_since or None,
            "dual_since": state.dual_since or None,
            "rollout": {"percent": state.rollout.percent, "allow": sorted(state.rollout.allow),
                        "deny": sorted(state.rollout.deny)},
            "verified_clean_at": state.verified_clean or None,
            "verify_failed_at": state.verify_failed or None,
            "verify_failed_note": state.verify_failed_note or None,
            "verified": state.vouched(),
            "reverse_synced_at": state.reverse_synced or None,
            "unplaceable": state.unplaceable,
            "source_gap": state.source_gap,
            "target_gap": state.target_gap,
            "next": {p.value: refusal(state, p) or "allowed" for p in nxt + back},
            "checkpoints": {k: _checkpoint(v) for k, v in checkpoints.items() if v},
            "log": self.log(5),
        }

    # -- passes ----------------------------------------------------------------------------

    def backfill(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                 restart: bool = False, progress: Progress | None = None,
                 keys_per_call: int | None = None) -> PassReport:
        """Copy every source record missing in the target, and bring target copies that missed
        writes (the phase was ``off``) up to date (resumable, throttled).

        ``keys_per_call``: records one script call settles, on standalone Redis (default 50,
        about a millisecond of Redis time): larger calls make the pass faster and keep live
        requests waiting longer behind each call (docs/migration.md).

        :raises MigrationRefused: the phase does not write both sides yet.
        """
        chunk = _keys_per_call(keys_per_call)
        self._check_redis()
        state, _ = self.driver.run(self._state_and_now())
        if not state.phase.writes_both and not dry_run:
            raise MigrationRefused(
                f"backfill needs dual writes (phase dual-write or read-target), phase is {state.phase}: "
                "records copied now would not follow later updates"
            )
        self._await(state.dual_since)
        return self._run_pass("backfill", self.source, self.target, "copy", batch, rate,
                              dry_run, restart, progress, prefer_to=self._reads_target(state),
                              chunk=chunk)

    def reverse_sync(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                     restart: bool = False, progress: Progress | None = None,
                     keys_per_call: int | None = None) -> PassReport:
        """Bring the source up to date from the target, so a rollback loses nothing.
        ``keys_per_call``: as for :meth:`backfill`."""
        chunk = _keys_per_call(keys_per_call)
        self._check_redis()
        state, started = self.driver.run(self._state_and_now())
        self._await(state.phase_since)
        report = self._run_pass("reverse-sync", self.target, self.source, "merge", batch, rate,
                                dry_run, restart, progress,
                                prefer_to=self._reads_source(state), chunk=chunk)
        if report.finished and not dry_run:
            # Records the source layout cannot hold (foreign) keep a rollback refused.
            after = self.state()
            if not after.stored:
                report.notes.append("no phase is stored: the reverse sync is not recorded")
                return report
            fields = replace(after, reverse_synced=started, unplaceable=report.counts.get("foreign", 0))
            if after.phase is Phase.READ_TARGET and started > after.phase_since:
                fields = replace(fields, source_gap=False)  # both sides written again, and agree
            if not self._store_state(after, fields, None, same_since=True):
                report.notes.append("the phase changed while the reverse sync ran: not recorded")
            else:
                log.info("%s: reverse sync recorded (%d target jobs could not be written back)",
                         self.label, fields.unplaceable)
        return report

    def cleanup(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                restart: bool = False, progress: Progress | None = None,
                keys_per_call: int | None = None) -> PassReport:
        """Delete source records whose target copy holds the same record (target-only only).
        ``keys_per_call``: as for :meth:`backfill`.

        :raises MigrationRefused: the phase is not target-only.
        """
        chunk = _keys_per_call(keys_per_call)
        self._check_redis()
        state = self.state()
        if state.phase is not Phase.TARGET_ONLY and not dry_run:
            raise MigrationRefused(f"cleanup runs only in target-only; phase is {state.phase}")
        self._await(state.phase_since)
        return self._run_pass("cleanup", self.source, self.target, "cleanup", batch, rate,
                              dry_run, restart, progress, chunk=chunk)

    def verify(self, *, sample: int | None = None, repair: bool = False, examples: int = 10,
               batch: int = 500, progress: Progress | None = None,
               keys_per_call: int | None = None) -> VerifyReport:
        """Compare source and target record by record; ``repair`` fixes what it finds.
        ``keys_per_call``: records one script call compares (as for :meth:`backfill`).

        A full verify that finds nothing to fix, and whose scans all ran on the servers they
        started on, is recorded: it allows ``target-only`` (and ``read-target`` after a gap).
        A verify that shows the target may not be right (``VerifyReport.evidence_against``: it
        found problems, a sample too, repaired some, or gave up on changing servers) is recorded
        as well, at the time it finished: the newest verify decides, and a clean one counts only
        when it started after that (``MigrationState.vouched``).

        :raises MigrationInterrupted: Ctrl-C (a KeyboardInterrupt); its ``report`` is what was
            found until then (recorded when it is evidence against the target).
        """
        chunk = _keys_per_call(keys_per_call)
        _check_batch(batch)
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)
                                   or sample < 1):
            raise InvalidArgument("sample", f"must be an int >= 1 or None, not {sample!r}")
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
            raise InvalidArgument("examples", f"must be an int >= 0, not {examples!r}")
        self._check_redis()
        state, started = self.driver.run(self._state_and_now())
        ticket = 0
        if state.stored:  # orders this verify among the others (MigrationState.vouched)
            (ticket,) = self.driver.run(_one(Batch((Script(VERIFY_TICKET, (self.state_key,), ()),))))
        begun = time.monotonic()
        log.info("%s: verify started (phase %s%s%s)", self.label, state.phase,
                 f", sample {sample}" if sample else "", ", repairing" if repair else "")
        current: list[VerifyReport] = []  # the attempt running, for an interruption
        try:
            report = self.driver.run(
                self._verify(state, sample, repair, examples, batch, progress, chunk, current)
            )
        except KeyboardInterrupt as exc:
            report = current[-1] if current else VerifyReport(state.phase.value, sampled=bool(sample))
            report.interrupted = True
            report.seconds = time.monotonic() - begun
            log.warning("%s: verify interrupted after %.1fs: %s", self.label, report.seconds,
                        report.summary())
            self._record_verify(state, started, int(ticket), report, sample)
            raise MigrationInterrupted(report) from exc
        report.seconds = time.monotonic() - begun
        self.events.verify_result(self.name, report)
        log.info("%s: verify finished in %.1fs: %s; %d source and %d target records checked, "
                 "missing %d, differing %d, orphaned %d, target newer %d, unroutable %d, "
                 "repaired %d", self.label, report.seconds,
                 "clean" if report.clean else f"{report.problems} problems", report.checked_source,
                 report.checked_target, report.missing, report.differing, report.orphaned,
                 report.target_newer, report.unroutable, report.repaired)
        self._record_verify(state, started, int(ticket), report, sample)
        return report

    def _record_verify(self, state: MigrationState, started: float, ticket: int,
                       report: VerifyReport, sample: int | None) -> None:
        """Record what the verify that started at ``started`` (with ``ticket``) shows, for the
        gates: a full clean run (not a repair that repaired anything) with its start, evidence
        against the target with a ticket taken as it finished; a clean sample or an
        interrupted run that found nothing, not at all. Notes say what was not recorded."""
        against = report.evidence_against
        if not against and (not report.clean or sample or report.repaired):
            return  # a clean sample, or interrupted before it found anything: no evidence
        if not state.stored:
            # No dual writes are known to have begun, and writing the result would store the
            # default phase as a side effect.
            report.notes.append("no phase is stored: this verify's result is not recorded "
                                "(a clean verify then unlocks nothing)")
            return
        if against:
            finished = self.now()
            (recorded,) = self.driver.run(_one(Batch((Script(
                RECORD_VERIFY_FAILED, (self.state_key,), (repr(finished), report.summary())),))))
            if not recorded:
                report.notes.append("no phase is stored: this verify's result is not recorded")
            else:
                log.info("%s: verify that was not clean recorded (%s): a clean verify started "
                         "after it is needed for read-target and target-only", self.label,
                         report.summary())
            return
        after = replace(state, verified_clean=started, clean_ticket=ticket)
        if state.target_gap and state.dual_since and started > state.dual_since:
            after = replace(after, target_gap=False)  # the target's copies are current again
        if not self._store_state(state, after, None, same_since=True):
            report.notes.append("the phase changed while verify ran: the result is not recorded")
        else:
            log.info("%s: clean verify recorded (it allows target-only)", self.label)

    # -- records no workspace can hold ---------------------------------------------------------

    def set_aside(self, *, batch: int = 500, dry_run: bool = False,
                  progress: Progress | None = None) -> SetAsideReport:
        """Move every source record without a usable workspace (counted ``unroutable`` by the
        passes and verify) out of the source's namespace, to ``StoreKeys.aside``: one atomic
        RENAME per record, in its own slot, so every field, byte and TTL is kept, and a record
        given a usable workspace_id meanwhile is left where it is (``routable``). No workspace
        can read such a record in any phase, and no pass can place it, so verify is never
        clean while it stays; once set aside, verify no longer sees it. :meth:`set_aside_records`
        lists what was set aside, :meth:`restore_aside` puts one back. Any phase; safe to run
        again (a run re-sent or repeated moves nothing twice).

        :raises MigrationInterrupted: Ctrl-C; its ``report`` says what was moved until then.
        """
        _check_batch(batch)
        self._check_redis()
        stamp = f"{int(self.now() * 1000)}-{secrets.token_hex(3)}"
        report = SetAsideReport("set-aside", dry_run=dry_run)
        begun = time.monotonic()
        try:
            self.driver.run(self._set_aside(report, batch, dry_run, progress, stamp))
        except KeyboardInterrupt as exc:
            report.interrupted = True
            report.seconds = time.monotonic() - begun
            raise MigrationInterrupted(report) from exc
        report.seconds = time.monotonic() - begun
        log.info("%s: set-aside finished%s: %d records scanned in %.1fs; %s", self.label,
                 " (dry run)" if dry_run else "", report.scanned, report.seconds,
                 _short(report.counts))
        return report

    def _set_aside(self, report: SetAsideReport, batch: int, dry_run: bool,
                   progress: Progress | None, stamp: str) -> Op[None]:
        nodes: list[str | None] = yield Primaries()
        for node in nodes:
            name, cursor, first = node or "standalone", "0", None
            while True:
                server, cursor, keys = yield Scan(self.source.scan_pattern(), cursor, batch, node)
                if first is not None and server != first:
                    # a cursor means nothing to another server: scan it again (nothing is moved
                    # twice: what was set aside is no longer in the source)
                    self._rescanned(report, name, "the server changed while set-aside scanned it")
                    cursor = "0"
                    if report.rescans >= VERIFY_ATTEMPTS:
                        report.notes.append(f"{name}: gave up after {report.rescans} fresh "
                                            "starts; run set-aside again")
                        return
                first = server
                counted, lost = _Counter(), list[str]()
                placed = yield from self._place(self.source, self.target, keys, counted, lost)
                if counted.counts.get("not_a_record"):
                    report.add("not_a_record", counted.counts["not_a_record"])
                report.scanned += len(placed) + len(lost)
                if lost:
                    replies = yield Batch(tuple(
                        Script(SET_ASIDE, (key, self.keys.aside(key, stamp)),
                               ("1" if _ids(self.source, key)[0] is None else "0",
                                "1" if dry_run else "0"))
                        for key in lost), tolerate_errors=True)
                    for key, reply in zip(lost, replies):
                        outcome = reply if isinstance(reply, str) else "error"
                        report.add(outcome)
                        if outcome == "set-aside" and len(report.moved) < MAX_SET_ASIDE_LISTED:
                            report.moved.append({"key": key, "to": self.keys.aside(key, stamp)})
                if progress:
                    progress("set-aside", report.scanned, None, dict(report.counts))
                if cursor == "0":
                    break

    def set_aside_records(self) -> list[dict[str, Any]]:
        """Every record set aside (on every primary): ``{"key": where it is, "record_key": where
        it was, "set_aside_at": epoch seconds (the migration's clock), "workspace_id": its
        workspace_id field or None}``, oldest first."""
        self._check_redis()
        return self.driver.run(self._aside_records())

    def _aside_records(self) -> Op[list[dict[str, Any]]]:
        found: list[tuple[str, str, str]] = []
        nodes: list[str | None] = yield Primaries()
        for node in nodes:
            cursor = "0"
            while True:
                _, cursor, keys = yield Scan(f"{self.keys.prefix}:migration:aside:*", cursor,
                                             500, node)
                found += [(key, *parts) for key in keys
                          if (parts := self.keys.aside_parts(key)) is not None]
                if cursor == "0":
                    break
        unique = sorted(set(found), key=lambda item: (item[1], item[0]))
        owners = (yield Batch(tuple(Command(("HGET", key, "workspace_id")) for key, _, _ in unique),
                              tolerate_errors=True)) if unique else []
        out = []
        for (key, stamp, record_key), owner in zip(unique, owners):
            at = stamp.split("-", 1)[0]
            out.append({"key": key, "record_key": record_key,
                        "set_aside_at": int(at) / 1000 if at.isdigit() else None,
                        "workspace_id": owner if isinstance(owner, str) else None})
        return out

    def restore_aside(self, key: str) -> str:
        """Put a record set aside back where it was: ``restored``; ``in-place`` when nothing is
        set aside at ``key`` and its old key holds a record (restored already). Give it a
        usable workspace_id first (HSET on ``key``), or it is unroutable again.

        :raises InvalidArgument: ``key`` is not a key set aside from this migration's source.
        :raises MigrationRefused: its old key holds a record again (nothing changed), or
            nothing is set aside at ``key``.
        """
        parts = self.keys.aside_parts(key) if isinstance(key, str) else None
        if parts is None or not self.source.parse_key(parts[1]):
            raise InvalidArgument("key", f"{key!r} is not a key set aside from the "
                                  f"{self.source.name} records of this migration "
                                  "(jobstore migrate set-aside --list shows them)")
        self._check_redis()
        (outcome,) = self.driver.run(_one(Batch((Script(RESTORE_ASIDE, (key, parts[1]), ()),))))
        if outcome == "occupied":
            raise MigrationRefused(f"{parts[1]} holds a record again; {key} was left as it is")
        if outcome == "absent":
            raise MigrationRefused(f"nothing is set aside at {key}")
        log.info("%s: %s put back at %s (%s)", self.label, key, parts[1], outcome)
        return str(outcome)

    # -- pass machinery ----------------------------------------------------------------------

    def _await(self, moment: float) -> None:
        # A switch reaches every store within STATE_MAX_AGE; passes start after that.
        delay = moment - self.now()
        if delay > 0:
            self.wait(delay)

    def _run_pass(self, step: str, scan_schema: KeySchema, other: KeySchema, mode: str,
                  batch: int, rate: float | None, dry_run: bool, restart: bool,
                  progress: Progress | None, prefer_to: Prefer | None = None,
                  chunk: int = CHUNK) -> PassReport:
        checkpoint_key = self._part_key(step)
        _check_batch(batch)
        if rate is not None and rate <= 0:
            raise InvalidArgument("rate", f"must be > 0, not {rate!r}")
        begun = time.monotonic()
        report = PassReport(step, dry_run=dry_run)
        try:
            self.driver.run(
                self._pass(report, scan_schema, other, mode, batch, rate, dry_run, restart,
                           progress, checkpoint_key, prefer_to, chunk)
            )
        except KeyboardInterrupt as exc:
            report.interrupted = True
            report.seconds = time.monotonic() - begun
            log.warning("%s: %s interrupted after %.1fs: %d records scanned; %s", self.label,
                        step, report.seconds, report.scanned, _short(report.counts))
            raise MigrationInterrupted(report) from exc
        report.seconds = time.monotonic() - begun
        self.events.pass_result(self.name, report)
        log.info("%s: %s finished%s: %d records scanned in %.1fs; %s", self.label, step,
                 " (dry run)" if dry_run else "", report.scanned, report.seconds,
                 _short(report.counts))
        return report

    def _pass(self, report: PassReport, scan_schema: KeySchema, other: KeySchema, mode: str,
              batch: int, rate: float | None, dry_run: bool, restart: bool,
              progress: Progress | None, checkpoint_key: str, prefer_to: Prefer | None = None,
              chunk: int = CHUNK) -> Op[PassReport]:
        """Runs the pass into ``report`` (which an interruption then reports)."""
        step = report.step
        cursors: dict[str, str] = {}  # per primary: the next SCAN cursor, or "done"
        servers: dict[str, str] = {}  # per primary: who gave that cursor (run id, cluster slots)
        if not dry_run:
            (saved,) = yield Batch((Command(("HGETALL", checkpoint_key)),))
            if saved and saved.get("finished") != "1" and not restart:
                cursors = json.loads(saved.get("cursors", "{}"))
                servers = json.loads(saved.get("servers", "{}"))
                report.resumed = True
                report.scanned = int(saved.get("scanned", 0))
                report.counts = json.loads(saved.get("counts", "{}"))
                report.rescans = int(saved.get("rescans", 0))
        nodes: Sequence[str | None] = yield Primaries()
        total, exact = yield from self._count(scan_schema, nodes)
        about = "" if exact else "about "
        begun = time.monotonic()
        done_at_start = report.scanned
        how = " (dry run: nothing is changed)" if dry_run else ""
        if report.resumed:
            log.info("%s: %s resumed from its checkpoint at %d records scanned; %s%d %s "
                     "records there now%s", self.label, step, report.scanned, about, total,
                     scan_schema.name, how)
        else:
            log.info("%s: %s started: %s%d %s records to scan%s", self.label, step, about,
                     total, scan_schema.name, how)
        in_lua = self._in_lua(other)
        idle_steps = 0

        def save(finished: bool) -> Command | None:
            if dry_run:
                return None
            state = {"cursors": json.dumps(cursors), "servers": json.dumps(servers),
                     "scanned": report.scanned, "counts": json.dumps(report.counts),
                     "rescans": report.rescans, "finished": "1" if finished else "0",
                     "updated_at": repr(time.time())}
            return Command(("HSET", checkpoint_key, *_flat(state)))

        def tell(scanned: int, counts: dict[str, int], rescans: int) -> None:
            shown = max(total, scanned)  # the keyspace may grow while the pass runs
            self.events.migration_progress(self.name, step, scanned, shown, counts)
            if progress:
                progress(step, scanned, shown, {**counts, "rescans": rescans} if rescans else counts)

        # The checkpoint of the last settled batch until it is written: it rides along with the
        # next batch's scripts (one round trip fewer per batch), or is written on its own before
        # a pause, after CHECKPOINT_EVERY steps without scripts, and at the end. Progress is
        # told once the checkpoint that covers it is written.
        pending = _Checkpoint(tell)

        def flush() -> Op[None]:
            if pending.command is not None:
                yield Batch((pending.command,))
                pending.written()

        def pace(ahead: int) -> Op[None]:
            """Under ``rate``: wait until the records settled so far, and ``ahead`` more, are due."""
            if rate:
                due = (report.scanned + ahead - done_at_start) / rate - (time.monotonic() - begun)
                if due > 0:
                    yield from flush()
                    yield Pause(due)

        while True:
            for node in nodes:
                name = node or "standalone"
                while cursors.get(name) != "done":
                    cursor = cursors.get(name, "0")
                    server, cursor, keys = yield Scan(scan_schema.scan_pattern(), cursor, batch, node)
                    if cursors.get(name, "0") != "0" and servers.get(name) != server:
                        # A cursor means nothing to another server (a restart re-seeds the key
                        # order, a failover brings another dict): scan this one from the start.
                        why = ("the server that gave the saved cursor is gone (restart, reload, "
                               "failover or node replaced)" if name in servers else
                               "the saved cursor names no server (a checkpoint of an earlier version)")
                        cursors[name] = "0"
                        servers[name] = server
                        self._rescanned(report, name, why)
                        pending.hold(save(False), report)
                        yield from flush()
                        continue
                    servers[name] = server
                    if in_lua:
                        settled = yield from self._settle_in_lua(
                            mode, scan_schema, other, keys, dry_run, prefer_to, report, pending,
                            (pace, _rate_chunk(rate, chunk)) if rate else None, chunk)
                        idle_steps = 0 if settled else idle_steps + 1
                    else:
                        yield from flush()
                        placed = yield from self._place(scan_schema, other, keys, report)
                        for outcome in (yield from self._apply(mode, placed, dry_run, prefer_to)):
                            report.add(outcome)
                        report.scanned += len(placed)
                    cursors[name] = "done" if cursor == "0" else cursor
                    finished = all(cursors.get(n or "standalone") == "done" for n in nodes)
                    # Written once the batch's records are settled (with the next batch's
                    # scripts, or now): a crash re-does at most this batch, and every step of it
                    # is safe to repeat. The last one waits for the topology check below.
                    pending.hold(save(False), report)
                    if not in_lua or idle_steps >= CHECKPOINT_EVERY:
                        idle_steps = 0
                        yield from flush()
                    if not finished:
                        yield from pace(0)
            moved = yield from self._topology_moved(scan_schema, nodes, servers)
            if not moved:
                break
            nodes = moved[0]
            for name in moved[1]:
                cursors[name] = "0"
                self._rescanned(report, name, "the slots it serves changed while the pass ran")
        report.finished = True
        pending.hold(save(True), report)
        yield from flush()
        return report

    def _in_lua(self, other: KeySchema) -> bool:
        """Whether a pass settles its keys with PASS_BATCH: standalone Redis, and the other
        side's keys follow a format (the script builds them)."""
        return not self.driver.cluster and other.lua_template is not None

    def _lua_trips(self, mode: str, scan_schema: KeySchema, other: KeySchema, keys: list[str],
                   dry_run: bool, authority: str, riders: _Checkpoint | None,
                   pace: Paced | None, chunk: int) -> Op[tuple[list[Sent], list[str]]]:
        """Send ``keys`` to PASS_BATCH, ``chunk`` keys per call and CHUNKS_PER_TRIP calls per round
        trip (under a rate, ``pace`` = (wait until due, keys per call): one call per round trip,
        each when it is due), the checkpoint ``riders`` holds riding along with the first.
        Returns ``(key, reply)`` per key sent, and the keys that name an unusable workspace
        (``unroutable``: only a computed schema's key can). For a schema with a key format the
        script reads the ids off the keys itself; a computed schema's are parsed here. Each
        round trip's keys are prepared just before it is sent, so that neither Redis (one
        script) nor this process (its Python work) is busy long at a stretch."""
        assert other.lua_template is not None, "only for a templated other side"
        head = (mode, "1" if dry_run else "0", authority, other.lua_template,
                self.keys.index(WORKSPACE_MARK), scan_schema.lua_template or "")
        chunk = chunk if pace is None else pace[1]
        per_trip = chunk if pace is not None else chunk * CHUNKS_PER_TRIP
        out: list[Sent] = []
        unroutable: list[str] = []
        sent: list[str]
        args: list[str]
        for start in range(0, len(keys), per_trip):
            if scan_schema.lua_template is not None:
                sent = keys[start:start + per_trip]
                calls = tuple(Script(PASS_BATCH, tuple(sent[i:i + chunk]), head)
                              for i in range(0, len(sent), chunk))
            else:
                sent, args = [], []
                for key in keys[start:start + per_trip]:
                    ids = scan_schema.parse_key(key)
                    if not ids:
                        continue
                    ws, job_id = ids
                    if ws is not None and not validation.IDENTIFIER.fullmatch(ws):
                        unroutable.append(key)
                        continue
                    sent.append(key)
                    args += (ws or "", job_id)
                calls = tuple(Script(PASS_BATCH, tuple(sent[i:i + chunk]),
                                     (*head, *args[2 * i:2 * (i + chunk)]))
                              for i in range(0, len(sent), chunk))
            if not sent:
                continue
            if pace is not None:
                yield from pace[0](len(out))
            ride = () if riders is None or riders.command is None else (riders.command,)
            # A verify must not call records it could not compare the same: errors raise.
            got = yield Batch(ride + calls, tolerate_errors=riders is not None)
            if ride:
                if isinstance(got[0], Exception):
                    raise got[0]
                assert riders is not None
                riders.written()
            out += zip(sent, _flat_replies(calls, got[len(ride):]))
        return out, unroutable

    def _settle_in_lua(self, mode: str, scan_schema: KeySchema, other: KeySchema, keys: list[str],
                       dry_run: bool, prefer_to: Prefer | None, report: PassReport,
                       riders: _Checkpoint, pace: Paced | None, chunk: int) -> Op[bool]:
        """Copy, merge or clean up the records at ``keys`` with PASS_BATCH, ``riders`` (the last
        checkpoint) in the same round trip; counts go to ``report``. False when there was
        nothing to send."""
        sent, unroutable = yield from self._lua_trips(mode, scan_schema, other, keys, dry_run,
                                                      _authority(prefer_to), riders, pace, chunk)
        if unroutable:
            report.add("unroutable", len(unroutable))
        if not sent:
            return False
        outcomes = Counter(reply for _, reply in sent if isinstance(reply, str))
        for outcome, n in outcomes.items():
            if outcome.startswith("-") or not outcome:
                # not placed: deleted since the scan, counted only, or not the schema's key
                if len(outcome) > 1:
                    report.add(outcome[1:], n)
            else:
                report.add(outcome, n)
                report.scanned += n
        # Equal write counts and statuses, different content, and the copy the phase reads
        # first depends on the workspace: settled one by one, each with its authority.
        asks: list[Placed] = [(ws, job_id, key, other.job_key(ws, job_id))
                              for key, reply in sent if not isinstance(reply, str)
                              for _, ws, job_id in (reply,)]
        if asks:
            for outcome in (yield from self._apply(mode, asks, dry_run, prefer_to)):
                report.add(outcome)
                report.scanned += 1
        return True

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
        if not self.driver.cluster:
            return None
        now: list[str] = yield Primaries()
        again: list[str] = []
        for node in now:
            server, _, _ = yield Scan(schema.scan_pattern(), "0", 1, node)
            before = servers.get(node)
            if before is None or before.split("/", 1)[-1] != server.split("/", 1)[-1]:
                again.append(node)
        return (now, again) if again else None

    def _apply(self, mode: str, placed: list[Placed], dry_run: bool,
               prefer_to: Prefer | None = None) -> Op[list[str]]:
        """Copy, merge or clean up each placed record; its outcome, in order. ``prefer_to``:
        ``f(workspace_id)``, True where the 'to' side wins a conflict (jobstore.rules.wins)."""
        if not placed:
            return []
        prefer_to = prefer_to or (lambda ws: False)
        if self.driver.cluster:
            return (yield from sync_cluster.settle(self.keys, mode, placed, dry_run, prefer_to))
        calls: list[Call] = []
        for ws, job_id, scan_key, other_key in placed:
            if mode == "cleanup":
                calls.append(Script(CLEANUP_RECORD, (scan_key, other_key), (ws, "1" if dry_run else "0")))
            else:
                calls.append(Script(SYNC_RECORD, (scan_key, other_key, self.keys.index(ws)),
                                    (ws, job_id, mode, "1" if dry_run else "0",
                                     "1" if prefer_to(ws) else "0")))
        replies = yield Batch(tuple(calls), tolerate_errors=True)
        # A script error is one record's (e.g. an index key of the wrong type): counted, and the
        # pass goes on with the rest.
        return [r if isinstance(r, str) else "error" for r in replies]

    def _count(self, schema: KeySchema, nodes: Sequence[str | None]) -> Op[tuple[int, bool]]:
        """About how many keys the pass will see (progress and ETA only): counted exactly when
        the database is small (EXACT_COUNT_UP_TO keys), else DBSIZE times the share of a sample
        of RANDOMKEY that are the schema's record keys, so that a pass over millions of keys
        does not scan them all once more before it starts. ``(records, exactly counted)``."""
        sizes = []
        for node in nodes:
            (size,) = yield Batch((Command(("DBSIZE",), node=node),))
            sizes.append(int(size or 0))
        if sum(sizes) <= EXACT_COUNT_UP_TO:
            return (yield from self._count_exactly(schema, nodes)), True
        total = 0.0
        for node, size in zip(nodes, sizes):
            if node is None:
                sample = yield Batch(tuple(Command(("RANDOMKEY",)) for _ in range(COUNT_SAMPLES)))
            else:  # a keyless command goes to the node named, one at a time
                sample = []
                for _ in range(COUNT_SAMPLES // 4):
                    (key,) = yield Batch((Command(("RANDOMKEY",), node=node),))
                    sample.append(key)
            ours = sum(1 for key in sample if key and schema.parse_key(key))
            total += size * ours / max(1, len(sample))
        return round(total), False

    def _count_exactly(self, schema: KeySchema, nodes: Sequence[str | None]) -> Op[int]:
        total = 0
        for node in nodes:
            cursor = "0"
            while True:
                _, cursor, keys = yield Scan(schema.scan_pattern(), cursor, 1000, node)
                total += sum(1 for key in keys if schema.parse_key(key))
                if cursor == "0":
                    break
        return total

    def _compare_pairs(self, side: str,
                       placed: list[Placed]) -> Op[list[tuple[str, dict[str, str], dict[str, str]]]]:
        """``(kind, record, counterpart)`` for each placed record (see ``_compare``).

        On standalone Redis every pair is read in one script, at one instant: a dual write or
        delete landing between two reads would otherwise look like a difference. On a cluster the
        two copies sit on different nodes; ``_verify`` looks again at what differs.
        """
        keys = tuple(key for _, _, a, b in placed for key in (a, b))
        if not keys:
            return []
        if self.driver.cluster:
            records = yield Batch(tuple(Command(("HGETALL", key)) for key in keys), tolerate_errors=True)
            records = [{NOT_A_HASH: "?"} if isinstance(r, Exception) else r for r in records]
        else:
            (flat,) = yield Batch((Script(READ_RECORDS, keys, ()),))
            records = [as_record(r) for r in flat]
        found = []
        for i, (ws, _, _, _) in enumerate(placed):
            mine, theirs = records[2 * i] or {}, records[2 * i + 1] or {}
            if NOT_A_HASH in mine:
                kind = "not_a_record"
            elif mine.get("workspace_id") != ws:
                kind = "vanished"
            else:
                kind = _compare(side, mine, theirs, ws)
            found.append((kind, mine, theirs))
        return found

    def _compare_in_lua(self, side: str, schema: KeySchema, other: KeySchema, keys: list[str],
                        report: VerifyReport, chunk: int
                        ) -> Op[tuple[list[Placed], list[Compared], int, list[str]]]:
        """``_place`` and ``_compare_pairs`` in PASS_BATCH calls (``_lua_trips``): each record is
        compared with its counterpart in the script, and only those that are not the same come
        back whole. Records placed that are not the same, their ``(kind, record,
        counterpart)``, how many were the same, and the keys of records without a usable
        workspace (unroutable)."""
        sent, unroutable = yield from self._lua_trips(side, schema, other, keys, False, "0",
                                                      None, None, chunk)
        kinds = Counter(reply for _, reply in sent if isinstance(reply, str))
        report.not_records += kinds["not_a_record"] + kinds["-not_a_record"]
        unroutable += [key for key, reply in sent if reply == "-unroutable"]
        placed: list[Placed] = []
        found: list[Compared] = []
        for key, reply in sent:
            if not isinstance(reply, str):
                kind, ws, job_id, mine, theirs = reply
                placed.append((ws, job_id, key, other.job_key(ws, job_id)))
                found.append((kind, as_record(mine), as_record(theirs)))
        return placed, found, kinds["same"], unroutable

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

    def _verify(self, state: MigrationState, sample: int | None, repair: bool, examples: int,
                batch: int, progress: Progress | None, chunk: int = CHUNK,
                current: list[VerifyReport] | None = None) -> Op[VerifyReport]:
        """Verify, started again from nothing when a server changes under its scan (up to
        VERIFY_ATTEMPTS times; then incomplete, so not clean). Repairs made by an attempt that
        was started again stay counted: they were made. ``current`` gets each attempt's report
        as it starts (what an interruption reports)."""
        rescans, repaired = 0, 0
        notes: list[str] = []
        while True:
            report = VerifyReport(state.phase.value, sampled=bool(sample), repaired=repaired,
                                  rescans=rescans, notes=notes)
            if current is not None:
                current.append(report)
            moved = yield from self._verify_once(report, state, sample, repair, examples, batch,
                                                 progress, chunk)
            repaired = report.repaired
            if moved is None:
                return report
            rescans += 1
            notes.append(f"{moved}: the server changed while verify scanned it (restart, failover "
                         "or slots moved); verify started again from the beginning")
            if rescans >= VERIFY_ATTEMPTS:
                report.rescans, report.complete = rescans, False
                notes.append(f"gave up after {rescans} fresh starts: this verify cannot vouch "
                             "for every key and is not clean")
                return report
            if progress:
                progress("verify restarted", 0, None, {"rescans": rescans})

    def _verify_once(self, report: VerifyReport, state: MigrationState, sample: int | None,
                     repair: bool, examples: int, batch: int,
                     progress: Progress | None, chunk: int = CHUNK) -> Op[str | None]:
        """One verify; returns None, or the name of a server that changed under the scan."""
        phase, reads_target = state.phase, self._reads_target(state)
        nodes: list[str | None] = yield Primaries()
        servers: dict[str, str] = {}
        # Source records without a usable workspace: counted once each, by key. Their target
        # copies (the record had a workspace when it was copied) are the same fault, not orphans.
        unplaced: set[str] = set()

        def unroutable(keys: list[str]) -> None:
            for key in keys:
                if key in unplaced:
                    continue  # SCAN may return a key twice
                unplaced.add(key)
                report.unroutable += 1
                ids = self.source.parse_key(key)
                report.example("unroutable", examples, workspace_id=ids[0] if ids else None,
                               job_id=ids[1] if ids else None, key=key, other_key=None,
                               fields=["workspace_id"])

        for side, node in [(side, node) for side in ("source", "target") for node in nodes]:
            schema, other = (self.source, self.target) if side == "source" else (self.target, self.source)
            name = node or "standalone"
            cursor = "0"
            seen = report.checked_source if side == "source" else report.checked_target
            while True:
                server, cursor_next, keys = yield Scan(schema.scan_pattern(), cursor, batch, node)
                if servers.setdefault(name, server) != server:
                    return name
                cursor = cursor_next
                if not sample and self._in_lua(other):
                    placed, found, same, lost = yield from self._compare_in_lua(
                        side, schema, other, keys, report, chunk)
                    if side == "source":
                        unroutable(lost)
                    # records that are the same need nothing more than counting
                    seen += same
                    report.same += same if side == "source" else 0
                    if side == "source":
                        report.checked_source += same
                    else:
                        report.checked_target += same
                else:
                    counted, lost = _Counter(), list[str]()
                    placed = yield from self._place(schema, other, keys, counted, lost)
                    if side == "source":
                        unroutable(lost)
                    report.not_records += counted.counts.get("not_a_record", 0)
                    if sample:
                        placed = placed[: max(0, sample - seen)]
                    found = yield from self._compare_pairs(side, placed)
                seen += len(placed)
                if self.driver.cluster:
                    # The two copies sit on different nodes and a write reaches them one after
                    # the other: look again at what differs before calling it a problem.
                    for pause in (0.05, 0.25):
                        suspects = [i for i, (kind, _, _) in enumerate(found)
                                    if kind not in ("same", "vanished", "not_a_record")]
                        if not suspects:
                            break
                        yield Pause(pause)
                        again = yield from self._compare_pairs(side, [placed[i] for i in suspects])
                        for i, result in zip(suspects, again):
                            found[i] = result
                fixes: list[Placed] = []
                for (ws, job_id, key, other_key), (kind, mine, theirs) in zip(placed, found):
                    if kind == "vanished":
                        continue  # deleted since the scan
                    if kind == "not_a_record":
                        report.not_records += 1
                        continue
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
                    elif kind == "orphaned" and other_key in unplaced:
                        # the copy of a source record counted as unroutable: one fault
                        for item in report.examples.get("unroutable", []):
                            if item["key"] == other_key:
                                item["other_key"] = key
                        continue
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
                    outcomes = yield from self._apply("merge", fixes, False, reads_target)
                    report.repaired += sum(1 for o in outcomes if o in REPAIRED)
                    _log_repairs(self.label, side, fixes, outcomes)
                if progress:
                    progress(f"verify {side}", seen, None, {})
                if cursor == "0" or (sample and seen >= sample):
                    break
        if not sample:
            moved = yield from self._topology_moved(self.source, nodes, servers)
            if moved:
                return ",".join(moved[1])
        return None


REPAIRED = ("copied", "copied-back", "merged", "deleted", "refreshed")
NOT_A_HASH = "\0not-a-hash"  # marks a key READ_RECORDS found holding another type


def _log_repairs(label: str, side: str, fixes: list[Placed], outcomes: list[str]) -> None:
    """One INFO line per batch of repairs (how many, by outcome), one DEBUG line per record."""
    done: dict[str, int] = {}
    for (ws, job_id, source_key, target_key), outcome in zip(fixes, outcomes):
        done[outcome] = done.get(outcome, 0) + 1
        log.debug("%s: repair of %s / %s (%s, %s): %s", label, ws, job_id, source_key,
                  target_key, outcome)
    repaired = sum(n for outcome, n in done.items() if outcome in REPAIRED)
    log.info("%s: verify repaired %d of %d %s records found wrong in this batch (%s)", label,
             repaired, len(fixes), side, ", ".join(f"{k} {v}" for k, v in sorted(done.items())))


def _checkpoint(raw: dict[str, str]) -> dict[str, Any]:
    """A pass's checkpoint hash (strings) as typed values; a field missing or unreadable (an
    older version's checkpoint, a hand edit) comes out empty rather than failing status."""

    def loads(name: str) -> dict[str, Any]:
        try:
            value = json.loads(raw.get(name) or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def number(name: str) -> float | None:
        try:
            return float(raw[name])
        except (KeyError, ValueError):
            return None

    return {"finished": raw.get("finished") == "1", "scanned": int(number("scanned") or 0),
            "rescans": int(number("rescans") or 0), "counts": loads("counts"),
            "cursors": loads("cursors"), "servers": loads("servers"),
            "updated_at": number("updated_at")}


def _ids(schema: KeySchema, key: str) -> tuple[str | None, str]:
    ids = schema.parse_key(key)
    assert ids is not None, "a key the scan matched and _place placed"
    return ids


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


def _rate_chunk(rate: float, most: int = CHUNK) -> int:
    """Keys per PASS_BATCH call under ``rate`` records a second (see RATE_CALLS_PER_SECOND),
    never more than ``most`` (the pass's keys_per_call)."""
    return max(min(RATE_CHUNK_MIN, most), min(most, round(rate / RATE_CALLS_PER_SECOND)))


def _check_batch(batch: Any) -> None:
    """:raises InvalidArgument: ``batch`` (keys per SCAN step) is not an int >= 1."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidArgument("batch", f"must be an int >= 1, not {batch!r}")


def _keys_per_call(value: Any) -> int:
    """A pass's keys_per_call, checked (None: CHUNK).

    :raises InvalidArgument: not an int from 1 to MAX_KEYS_PER_CALL.
    """
    if value is None:
        return CHUNK
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_KEYS_PER_CALL:
        raise InvalidArgument("keys_per_call",
                              f"must be an int from 1 to {MAX_KEYS_PER_CALL}, not {value!r}")
    return value


def _flat_replies(calls: Sequence[Script], replies: list[Any]) -> list[Any]:
    """One entry per key of ``calls`` from their PASS_BATCH replies; a call Redis refused
    whole (a script error) counts each of its records as an ``error``."""
    out: list[Any] = []
    for call, reply in zip(calls, replies):
        out += ["error"] * len(call.keys) if isinstance(reply, Exception) else reply
    return out


class _Checkpoint:
    """A pass's checkpoint not written yet, and the progress it covers (told once written)."""

    def __init__(self, tell: Callable[[int, dict[str, int], int], None]) -> None:
        self.command: Command | None = None
        self.tell = tell
        self._covers: tuple[int, dict[str, int], int] = (0, {}, 0)

    def hold(self, command: Command | None, report: PassReport) -> None:
        """The checkpoint of ``report`` as it is now (None: a dry run, which writes none and
        tells at once)."""
        self.command = command
        self._covers = (report.scanned, dict(report.counts), report.rescans)
        if command is None:
            self.written()

    def written(self) -> None:
        self.command = None
        self.tell(*self._covers)


class _Counter:
    """Counts what ``_place`` reports, for verify."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n


def _compare(side: str, mine: dict[str, str], theirs: dict[str, str], ws: str) -> str:
    if side == "target":
        return "same" if theirs.get("workspace_id") == ws else "orphaned"
    if theirs.get("workspace_id") != ws:
        return "missing"
    if NOT_A_HASH in theirs:
        return "missing"
    if rules.same_content(mine, theirs):
        return "same"
    identical_identity = all(mine.get(k) == theirs.get(k) for k in mine if k not in MUTABLE) and all(
        theirs.get(k) == mine.get(k) for k in theirs if k not in MUTABLE
    )
    if identical_identity and rules.newer(theirs, mine):
        return "target_newer"
    return "differing"


def _diff(a: dict[str, str], b: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def _flat(mapping: dict[str, Any]) -> list[Any]:
    return [part for item in mapping.items() for part in item]


def _one(batch: Batch) -> Op[list[Any]]:
    replies: list[Any] = yield batch
    return replies
