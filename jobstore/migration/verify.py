"""Verify: source and target compared record by record (on standalone Redis in the
``pass_batch`` script, a chunk of records per call), what it finds repaired on request, and its
result recorded for the phase gates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from .. import rules
from ..errors import InvalidArgument
from ..job import TERMINAL
from ..ops import Op, as_record
from ..phases import MigrationState, Phase
from ..schema import KeySchema
from ..ops import migration_calls
from ..steps import Batch, Command, Pause, Primaries, Scan
from .core import VERIFY_ATTEMPTS, MigrationCore, Progress, Run, _check_batch, _Counter, log
from .reports import MigrationInterrupted, VerifyReport
from .settle import NOT_A_HASH, Placed, carry_expiries
from .transport import CHUNK, _keys_per_call, lua_trips

# What verify found of one placed record: ``(kind, the record, its counterpart)``.
Compared = tuple[str, dict[str, str], dict[str, str]]
MUTABLE = rules.MUTABLE
REPAIRED = ("copied", "copied-back", "merged", "deleted", "refreshed", "expiry")
FINAL = frozenset(status.value for status in TERMINAL)


class Verifying(MigrationCore):
    """Verify and its repairs (part of :class:`jobstore.migration.Migration`): its checks and
    one operation (the public method is the facades')."""

    def _call_verify(self, sample: int | None, repair: bool, examples: int, batch: int,
                     progress: Progress | None, keys_per_call: int | None) -> Run[VerifyReport]:
        chunk = _keys_per_call(keys_per_call)
        _check_batch(batch)
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)
                                   or sample < 1):
            raise InvalidArgument("sample", f"must be an int >= 1 or None, not {sample!r}")
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
            raise InvalidArgument("examples", f"must be an int >= 0, not {examples!r}")
        # What an interruption needs: the state and ticket it started with, when it began, and
        # the attempt running.
        begun: list[tuple[MigrationState, float, int, float]] = []
        current: list[VerifyReport] = []

        def op() -> Op[VerifyReport]:
            yield from self._checked()
            state, started = yield from self._state_and_now()
            ticket = 0
            if state.stored:  # orders this verify among the others (MigrationState.vouched)
                (ticket,) = yield Batch((migration_calls.verify_ticket(state=self.state_key),))
            begun.append((state, started, int(ticket), self.timer()))
            log.info("%s: verify started (phase %s%s%s)", self.label, state.phase,
                     f", sample {sample}" if sample else "", ", repairing" if repair else "")
            report = yield from self._verify(state, sample, repair, examples, batch, progress,
                                             chunk, current)
            report.seconds = self.timer() - begun[0][3]
            self.events.verify_result(self.name, report)
            log.info("%s: verify finished in %.1fs: %s; %d source and %d target records checked, "
                     "missing %d, differing %d, orphaned %d, target newer %d, unroutable %d, "
                     "repaired %d", self.label, report.seconds,
                     "clean" if report.clean else f"{report.problems} problems",
                     report.checked_source, report.checked_target, report.missing,
                     report.differing, report.orphaned, report.target_newer, report.unroutable,
                     report.repaired)
            yield from self._record_verify(state, started, int(ticket), report, sample)
            return report

        def interrupted() -> Op[MigrationInterrupted | None]:
            if not begun:
                return None
            state, started, ticket, at = begun[0]
            report = current[-1] if current else VerifyReport(state.phase.value,
                                                              sampled=bool(sample))
            report.interrupted = True
            report.seconds = self.timer() - at
            log.warning("%s: verify interrupted after %.1fs: %s", self.label, report.seconds,
                        report.summary())
            yield from self._record_verify(state, started, ticket, report, sample)
            return MigrationInterrupted(report)

        return Run(op(), interrupted)

    def _record_verify(self, state: MigrationState, started: float, ticket: int,
                       report: VerifyReport, sample: int | None) -> Op[None]:
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
            finished = yield from self._now()
            (recorded,) = yield Batch((migration_calls.record_verify_failed(
                state=self.state_key, finished=finished, summary=report.summary()),))
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
        if not (yield from self._store_state(state, after, None, same_since=True)):
            report.notes.append("the phase changed while verify ran: the result is not recorded")
        else:
            log.info("%s: clean verify recorded (it allows target-only)", self.label)

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
        records = yield from self.settler.read_pairs(keys)
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
        # A copy whose counterpart is gone, and that expires within the grace itself, is a
        # finished job's copies expiring a moment apart (docs/retention.md): no fault.
        alone = [i for i, (kind, _, theirs) in enumerate(found) if kind in ("missing", "orphaned")
                 and NOT_A_HASH not in theirs]
        if alone:
            ttls = yield Batch(tuple(Command(("PTTL", placed[i][2])) for i in alone))
            for i, ttl in zip(alone, ttls):
                if 0 <= int(ttl) <= rules.EXPIRY_GRACE_MS:
                    found[i] = ("same", *found[i][1:])
                elif int(ttl) == -2:
                    found[i] = ("vanished", *found[i][1:])
        # Copies of a finished job that are the same but expire apart are a real difference
        # (docs/retention.md): one would be read after the other is gone.
        final = [i for i, (kind, mine, theirs) in enumerate(found) if side == "source"
                 and kind == "same" and mine.get("status") in FINAL and theirs]
        if final:
            ttls = yield Batch(tuple(Command(("PTTL", key)) for i in final
                                     for key in placed[i][2:4]))
            for n, i in enumerate(final):
                if rules.expire_apart(ttls[2 * n], ttls[2 * n + 1]):
                    found[i] = ("expiry", *found[i][1:])
        return found

    def _compare_in_lua(self, side: str, schema: KeySchema, other: KeySchema, keys: list[str],
                        report: VerifyReport, chunk: int
                        ) -> Op[tuple[list[Placed], list[Compared], int, list[str]]]:
        """``_place`` and ``_compare_pairs`` in PASS_BATCH calls (``_lua_trips``): each record is
        compared with its counterpart in the script, and only those that are not the same come
        back whole. Records placed that are not the same, their ``(kind, record,
        counterpart)``, how many were the same, and the keys of records without a usable
        workspace (unroutable)."""
        sent, unroutable = yield from lua_trips(self.keys, side, schema, other, keys, False, "0",
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
                # On a cluster the two copies sit on different nodes and a write reaches them one
                # after the other: look again at what differs before calling it a problem.
                for pause in self.settler.rechecks:
                    suspects = [i for i, (kind, _, _) in enumerate(found)
                                if kind not in ("same", "vanished", "not_a_record")]
                    if not suspects:
                        break
                    yield Pause(pause)
                    again = yield from self._compare_pairs(side, [placed[i] for i in suspects])
                    for i, result in zip(suspects, again):
                        found[i] = result
                fixes: list[Placed] = []
                apart: list[tuple[Placed, dict[str, str], dict[str, str]]] = []
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
                    elif kind == "expiry":  # the same record, its copies expiring apart
                        report.differing += 1
                        report.example("differing", examples, workspace_id=ws, job_id=job_id,
                                       key=key, other_key=other_key, fields=["expiry"])
                        if repair:
                            apart.append(((ws, job_id, key, other_key), mine, theirs))
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
                if apart:
                    outcomes = yield from carry_expiries(apart)
                    report.repaired += sum(1 for o in outcomes if o in REPAIRED)
                    _log_repairs(self.label, side, [p for p, _, _ in apart], outcomes)
                if progress:
                    progress(f"verify {side}", seen, None, {})
                if cursor == "0" or (sample and seen >= sample):
                    break
        if not sample:
            moved = yield from self._topology_moved(self.source, nodes, servers)
            if moved:
                return ",".join(moved[1])
        return None


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


def _compare(side: str, mine: dict[str, str], theirs: dict[str, str], ws: str) -> str:
    if side == "target":
        return "same" if theirs.get("workspace_id") == ws else "orphaned"
    if theirs.get("workspace_id") != ws:
        return "missing"
    if NOT_A_HASH in theirs:
        return "missing"
    return rules.compared(mine, theirs)


def _diff(a: dict[str, str], b: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))
