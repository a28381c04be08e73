"""The passes: backfill, reverse sync and cleanup, and the engine they share, which scans every
primary (a checkpoint after each batch, written with the next batch's scripts), paces the work
under a rate, starts a scan again where the server that gave its cursor is gone, and counts
what each record came to.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import InvalidArgument, MigrationRefused
from ..ops import Op
from ..phases import Phase
from ..schema import KeySchema
from ..steps import Batch, Command, Pause, Primaries, Scan
from .core import MigrationCore, Progress, Run, _authority, _check_batch, _flat, _short, log
from .reports import PassReport
from .settle import Placed, Prefer
from .transport import CHUNK, Paced, _Checkpoint, _keys_per_call, _rate_chunk, lua_trips

# Up to this many keys in the database, a pass counts its records exactly before it starts (one
# SCAN of the keyspace); above, it estimates them from DBSIZE and a sample of RANDOMKEY.
EXACT_COUNT_UP_TO = 2_000
COUNT_SAMPLES = 64
# A checkpoint rides along with the next batch's scripts; after this many SCAN steps that found
# nothing to settle (a sparse keyspace), it is written on its own.
CHECKPOINT_EVERY = 16


class Passes(MigrationCore):
    """Backfill, reverse sync and cleanup (part of :class:`jobstore.migration.Migration`): each
    its checks and one operation (the public methods are the facades')."""

    def _call_backfill(self, batch: int, rate: float | None, dry_run: bool, restart: bool,
                       progress: Progress | None, keys_per_call: int | None) -> Run[PassReport]:
        chunk = _pass_arguments(batch, rate, keys_per_call)
        report, began = PassReport("backfill", dry_run=dry_run), list[float]()

        def op() -> Op[PassReport]:
            yield from self._checked()
            state, _ = yield from self._state_and_now()
            if not state.phase.writes_both and not dry_run:
                raise MigrationRefused(
                    f"backfill needs dual writes (phase dual-write or read-target), phase is "
                    f"{state.phase}: records copied now would not follow later updates"
                )
            yield from self._await(state.dual_since)
            return (yield from self._run_pass(report, began, self.source, self.target, "copy",
                                              batch, rate, restart, progress,
                                              self._reads_target(state), chunk))

        return Run(op(), self._interrupted(report, began, logged=True))

    def _call_reverse_sync(self, batch: int, rate: float | None, dry_run: bool, restart: bool,
                           progress: Progress | None,
                           keys_per_call: int | None) -> Run[PassReport]:
        chunk = _pass_arguments(batch, rate, keys_per_call)
        report, began = PassReport("reverse-sync", dry_run=dry_run), list[float]()

        def op() -> Op[PassReport]:
            yield from self._checked()
            state, started = yield from self._state_and_now()
            yield from self._await(state.phase_since)
            yield from self._run_pass(report, began, self.target, self.source, "merge", batch,
                                      rate, restart, progress, self._reads_source(state), chunk)
            if report.finished and not dry_run:
                yield from self._record_reverse_sync(report, started)
            return report

        return Run(op(), self._interrupted(report, began, logged=True))

    def _record_reverse_sync(self, report: PassReport, started: float) -> Op[None]:
        # Records the source layout cannot hold (foreign) keep a rollback refused.
        after = yield from self._state()
        if not after.stored:
            report.notes.append("no phase is stored: the reverse sync is not recorded")
            return
        fields = replace(after, reverse_synced=started, unplaceable=report.counts.get("foreign", 0))
        if after.phase is Phase.READ_TARGET and started > after.phase_since:
            fields = replace(fields, source_gap=False)  # both sides written again, and agree
        if not (yield from self._store_state(after, fields, None, same_since=True)):
            report.notes.append("the phase changed while the reverse sync ran: not recorded")
        else:
            log.info("%s: reverse sync recorded (%d target jobs could not be written back)",
                     self.label, fields.unplaceable)

    def _call_cleanup(self, batch: int, rate: float | None, dry_run: bool, restart: bool,
                      progress: Progress | None, keys_per_call: int | None) -> Run[PassReport]:
        chunk = _pass_arguments(batch, rate, keys_per_call)
        report, began = PassReport("cleanup", dry_run=dry_run), list[float]()

        def op() -> Op[PassReport]:
            state = yield from self._state()
            if state.phase is not Phase.TARGET_ONLY and not dry_run:
                raise MigrationRefused(f"cleanup runs only in target-only; phase is {state.phase}")
            yield from self._await(state.phase_since)
            return (yield from self._run_pass(report, began, self.source, self.target, "cleanup",
                                              batch, rate, restart, progress, None, chunk))

        return Run(op(), self._interrupted(report, began, logged=True))

    def _run_pass(self, report: PassReport, began: list[float], scan_schema: KeySchema,
                  other: KeySchema, mode: str, batch: int, rate: float | None, restart: bool,
                  progress: Progress | None, prefer_to: Prefer | None,
                  chunk: int) -> Op[PassReport]:
        """The pass itself, into ``report``; ``began`` gets when it began (for an interruption)."""
        began.append(self.timer())
        yield from self._pass(report, scan_schema, other, mode, batch, rate, report.dry_run,
                              restart, progress, self._part_key(report.step), prefer_to, chunk)
        report.seconds = self.timer() - began[0]
        self.events.pass_result(self.name, report)
        log.info("%s: %s finished%s: %d records scanned in %.1fs; %s", self.label, report.step,
                 " (dry run)" if report.dry_run else "", report.scanned, report.seconds,
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
        begun = self.timer()
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
                due = (report.scanned + ahead - done_at_start) / rate - (self.timer() - begun)
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

    def _settle_in_lua(self, mode: str, scan_schema: KeySchema, other: KeySchema, keys: list[str],
                       dry_run: bool, prefer_to: Prefer | None, report: PassReport,
                       riders: _Checkpoint, pace: Paced | None, chunk: int) -> Op[bool]:
        """Copy, merge or clean up the records at ``keys`` with PASS_BATCH, ``riders`` (the last
        checkpoint) in the same round trip; counts go to ``report``. False when there was
        nothing to send."""
        sent, unroutable = yield from lua_trips(self.keys, mode, scan_schema, other, keys, dry_run,
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


def _pass_arguments(batch: Any, rate: Any, keys_per_call: Any) -> int:
    """A pass's arguments, checked before anything is sent: its keys per script call.

    :raises InvalidArgument: a bad ``keys_per_call``, ``batch`` or ``rate``.
    """
    chunk = _keys_per_call(keys_per_call)
    _check_batch(batch)
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or rate <= 0):
        raise InvalidArgument("rate", f"must be > 0, not {rate!r}")
    return chunk
