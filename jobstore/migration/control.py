"""The :class:`Migration`: its phase switches, read rollout, log, status and the gates the
switches check (:class:`Controls`); its passes, verify and set-aside come from the modules that
hold them. :class:`Operations` is every call as checks and one operation; :class:`Migration`
runs them on the synchronous driver (:class:`jobstore.migration.aio.AsyncMigration`, awaited).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, TypeVar

from .. import validation
from ..connection import connect
from ..driver import SyncDriver
from ..errors import InvalidArgument, MigrationRefused
from ..events import Events
from ..ops import Op
from ..phases import STATE_MAX_AGE, MigrationState, Phase, parse_phase, refusal, switched
from ..steps import Batch, Command, Pause
from .core import MigrationCore, Progress, Run, _check_batch, log
from .passes import Passes
from .plan import SAMPLE, TIMED, memory_of, primaries
from .plan import check as _check_plan
from .plan import plan as _plan
from .reports import PassReport, PlanReport, SetAsideReport, VerifyReport
from .transport import _keys_per_call
from .setaside import SettingAside
from .verify import Verifying

T = TypeVar("T")


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


# How long a memory check of a dual-write switch is trusted (Migration.fit_refusal).
FIT_KEPT = 60.0


class Controls(MigrationCore):
    """Phase switches, rollout, log, status and the plan (part of :class:`Migration`): each its
    checks and one operation."""

    def _call_set_phase(self, phase: str | Phase, force: bool, reason: str,
                        wait: bool) -> Run[MigrationState]:
        return Run(self._set_phase(parse_phase(phase), force, reason, wait))

    def _set_phase(self, new: Phase, force: bool, reason: str, wait: bool) -> Op[MigrationState]:
        yield from self._checked()
        state, now = yield from self._state_and_now()
        why = refusal(state, new)
        if not why and new is Phase.TARGET_ONLY and not self.driver.cluster:
            (mode,) = yield Batch((Command(("HGET", self.keys.queue_mode, "mode")),))
            if mode == "shared":
                why = ("a compatible queue (legacy_queue) is still shared with the replaced "
                       "system: its bare job ids are found through the source's records, which "
                       "target-only stops writing and cleanup deletes. Leave it first (jobstore "
                       "legacy-queue leave, or store.leave_legacy_queue()) once no old process "
                       "remains")
        if not why:
            why = yield from self._fit_refusal(state, new)
        if why and not force:
            raise MigrationRefused(why)
        after = switched(state, new, now)
        entry = {"at": now, "event": "phase", "from": state.phase.value, "to": new.value,
                 "forced": bool(why), "refusal": why or "", "reason": reason}
        yield from self._store_state(state, after, entry, same_since=True, same_evidence=not why)
        self.events.phase(self.name, after.phase.value)
        if why:
            log.warning("%s: phase %s -> %s FORCED although %s (reason: %s)", self.label,
                        state.phase, new, why, reason or "none given")
        elif state.phase is not new or not state.stored:
            log.info("%s: phase %s -> %s%s", self.label, state.phase, new,
                     f" (reason: {reason})" if reason else "")
        if wait:
            yield Pause(STATE_MAX_AGE + 0.1, clock=True)
        return after

    def _call_plan(self, rate: float | None, sample: int, top: int, batch: int,
                   keys_per_call: int | None, timed: int, seed: int | None) -> Run[PlanReport]:
        _check_plan(rate, sample, top, timed)
        _check_batch(batch)
        chunk = _keys_per_call(keys_per_call)
        return Run(self._plan(rate, sample, top, batch, chunk, min(timed, sample), seed))

    def _plan(self, rate: float | None, sample: int, top: int, batch: int, chunk: int,
              timed: int, seed: int | None) -> Op[PlanReport]:
        yield from self._checked()
        return (yield from _plan(self, rate=rate, sample=sample, top=top, batch=batch,
                                 chunk=chunk, timed=timed, seed=seed))

    def _call_fit_refusal(self, state: MigrationState, new: Phase) -> Run[str]:
        return Run(self._fit_refusal(state, new))

    def _fit_refusal(self, state: MigrationState, new: Phase) -> Op[str]:
        """Why switching from ``state`` to ``new`` is refused for memory ('' when it is not):
        only the switch that starts the target's copies (to dual-write from off, or from no
        stored phase), and only where a server has a ``maxmemory``, which the plan's estimate
        (with its margin) would exceed. The answer is kept FIT_KEPT seconds (a CLI asks first,
        then switches)."""
        if new is not Phase.DUAL_WRITE or (state.stored and state.phase is not Phase.OFF):
            return ""
        kept = self._fit_kept
        if kept is not None and self.timer() - kept[0] < FIT_KEPT:
            return kept[1]
        infos = yield from memory_of((yield from primaries()))
        if any(info and int(info.get("maxmemory", 0)) for info in infos.values()):
            report = yield from _plan(self, rate=None, sample=SAMPLE, top=0, batch=1000,
                                      chunk=1, timed=0)
            why = report.refusal()
        else:
            why = ""
        self._fit_kept = (self.timer(), why)
        return why

    _fit_kept: tuple[float, str] | None = None

    def _call_set_rollout(self, percent: float | None, allow: list[str] | None,
                          deny: list[str] | None) -> Run[MigrationState]:
        if percent is not None and (isinstance(percent, bool) or not isinstance(percent, (int, float))
                                    or not 0 <= percent <= 100):
            raise InvalidArgument("percent", f"must be a number from 0 to 100, not {percent!r}")
        allowed = None if allow is None else _workspaces("allow", allow)
        denied = None if deny is None else _workspaces("deny", deny)
        return Run(self._set_rollout(percent, allowed, denied))

    def _set_rollout(self, percent: float | None, allowed: frozenset[str] | None,
                     denied: frozenset[str] | None) -> Op[MigrationState]:
        yield from self._checked()
        state, now = yield from self._state_and_now()
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
        yield from self._store_state(state, after, entry, same_since=True)
        log.info("%s: read rollout %g%%, allow %s, deny %s", self.label, rollout.percent,
                 sorted(rollout.allow), sorted(rollout.deny))
        return after

    def _call_log(self, limit: int) -> Run[list[dict[str, Any]]]:
        return Run(self._log(validation.limit(limit)))

    def _log(self, limit: int) -> Op[list[dict[str, Any]]]:
        (raw,) = yield Batch((Command(("LRANGE", self.log_key, 0, limit - 1)),))
        return [json.loads(item) for item in raw or []]

    def _call_status(self) -> Run[dict[str, Any]]:
        return Run(self._status())

    def _status(self) -> Op[dict[str, Any]]:
        state = yield from self._state()
        nxt = [p for p in Phase if p.rank == state.phase.rank + 1]
        back = [p for p in Phase if p.rank == state.phase.rank - 1]
        parts = ("backfill", "reverse-sync", "cleanup")
        replies = yield Batch(tuple(Command(("HGETALL", self._part_key(part))) for part in parts))
        history = yield from self._log(5)
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
            "log": history,
        }


def _workspaces(name: str, value: Any) -> frozenset[str]:
    """A rollout's ``allow`` or ``deny``: a list (or other collection) of workspace ids, each
    checked; a single str is refused (iterated, it would name its letters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise InvalidArgument(name, f"must be a list of workspace ids, not {value!r}")
    return frozenset(validation.identifier(name, w) for w in value)


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


class Operations(Passes, Verifying, SettingAside, Controls):
    """Every call of a migration as its checks and one operation (``_call_<name>`` returns the
    :class:`Run`), for :class:`Migration` to run and
    :class:`~jobstore.migration.aio.AsyncMigration` to await."""


class Migration(Operations):
    """The source -> target migration of one store prefix: its phase and its passes.

    Every time the migration records (phase switches, the start of a verify or a reverse sync)
    is read from the Redis server holding its state (``TIME``), so that the rules comparing them
    hold whatever the clocks of the machines running ``jobstore migrate`` say. ``clock`` replaces
    that server clock (tests); ``wait`` is how the migration sleeps.
    """

    driver: SyncDriver

    def state(self) -> MigrationState:
        """The migration's state as stored (``stored`` False: none is; the phase is then the
        default, ``jobstore.phases.DEFAULT_PHASE``)."""
        return self._go(self._call_state())

    def now(self) -> float:
        """The migration's clock: the server's time (or the injected ``clock``)."""
        return self._go(self._call_now())

    def set_phase(self, phase: str | Phase, *, force: bool = False, reason: str = "",
                  wait: bool = True) -> MigrationState:
        """Switch the phase, fleet-wide. Refused with the reason when it could strand or lose
        data, unless ``force`` (recorded in the log with ``reason``). With ``wait``, returns once
        every store has followed (about a second).

        :raises MigrationRefused: the switch is unsafe (and not forced), or raced another switch.
        :raises InvalidArgument: an unknown phase (a ValueError too).
        """
        return self._go(self._call_set_phase(phase, force, reason, wait))

    def plan(self, *, rate: float | None = None, sample: int = SAMPLE, top: int = 10,
             batch: int = 500, keys_per_call: int | None = None, timed: int = TIMED,
             seed: int | None = None) -> PlanReport:
        """What the migration will take (docs/migration.md#plan): the source's records and
        bytes, its biggest workspaces (``top``), the memory the target copies need on each
        server against its ``maxmemory``, and the backfill's (under ``rate`` records a second,
        None: unthrottled) and verify's times from rates measured on this server over
        ``timed`` of the ``sample`` records (0: no times). ``batch`` and ``keys_per_call``: the
        backfill's. Reads only: nothing is written.

        :raises InvalidArgument: a bad argument, before anything is sent.
        """
        return self._go(self._call_plan(rate, sample, top, batch, keys_per_call, timed, seed))

    def fit_refusal(self, state: MigrationState, new: Phase) -> str:
        """Why switching from ``state`` to ``new`` would be refused for memory ('' when it
        would not): see ``set_phase``; the CLI asks before it switches."""
        return self._go(self._call_fit_refusal(state, new))

    def set_rollout(self, *, percent: float | None = None, allow: list[str] | None = None,
                    deny: list[str] | None = None) -> MigrationState:
        """Change which workspaces read the target first in ``read-target``.

        :raises InvalidArgument: ``percent`` not a number from 0 to 100, ``allow`` or ``deny``
            not a list of workspace ids (nothing sent).
        :raises InvalidIdentifier: a bad workspace id in ``allow`` or ``deny`` (nothing sent).
        """
        return self._go(self._call_set_rollout(percent, allow, deny))

    def log(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last ``limit`` phase switches and rollout changes, newest first.

        :raises InvalidArgument: ``limit`` is not a positive int (nothing sent).
        :raises StoreUnavailable: Redis could not be reached.
        """
        return self._go(self._call_log(limit))

    def status(self) -> dict[str, Any]:
        """Phase, rollout, what the switch rules would say next, and the passes' checkpoints,
        as typed values (times in epoch seconds or None, counts as ints, the checkpoints'
        ``counts``, ``cursors`` and ``servers`` as objects, ``finished`` as a bool).

        :raises StoreUnavailable: Redis could not be reached (at any of its reads).
        """
        return self._go(self._call_status())

    def backfill(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                 restart: bool = False, progress: Progress | None = None,
                 keys_per_call: int | None = None) -> PassReport:
        """Copy every source record missing in the target, and bring target copies that missed
        writes (the phase was ``off``) up to date (resumable, throttled).

        ``keys_per_call``: records one script call settles, on standalone Redis (default 50,
        about a millisecond of Redis time): larger calls make the pass faster and keep live
        requests waiting longer behind each call (docs/migration.md).

        :raises MigrationRefused: the phase does not write both sides yet.
        :raises InvalidArgument: a bad ``batch``, ``rate`` or ``keys_per_call`` (nothing sent).
        :raises MigrationInterrupted: Ctrl-C; its ``report`` is what was done until then.
        """
        return self._go(self._call_backfill(batch, rate, dry_run, restart, progress,
                                            keys_per_call))

    def reverse_sync(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                     restart: bool = False, progress: Progress | None = None,
                     keys_per_call: int | None = None) -> PassReport:
        """Bring the source up to date from the target, so a rollback loses nothing.
        Arguments as for :meth:`backfill`."""
        return self._go(self._call_reverse_sync(batch, rate, dry_run, restart, progress,
                                                keys_per_call))

    def cleanup(self, *, batch: int = 500, rate: float | None = None, dry_run: bool = False,
                restart: bool = False, progress: Progress | None = None,
                keys_per_call: int | None = None) -> PassReport:
        """Delete source records whose target copy holds the same record (target-only only).
        Arguments as for :meth:`backfill`.

        :raises MigrationRefused: the phase is not target-only.
        """
        return self._go(self._call_cleanup(batch, rate, dry_run, restart, progress,
                                           keys_per_call))

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
        return self._go(self._call_verify(sample, repair, examples, batch, progress,
                                          keys_per_call))

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
        return self._go(self._call_set_aside(batch, dry_run, progress))

    def set_aside_records(self) -> list[dict[str, Any]]:
        """Every record set aside (on every primary): ``{"key": where it is, "record_key": where
        it was, "set_aside_at": epoch seconds (the migration's clock), "workspace_id": its
        workspace_id field or None}``, oldest first."""
        return self._go(self._call_set_aside_records())

    def restore_aside(self, key: str) -> str:
        """Put a record set aside back where it was: ``restored``; ``in-place`` when nothing is
        set aside at ``key`` and its old key holds a record (restored already). Give it a
        usable workspace_id first (HSET on ``key``), or it is unroutable again.

        :raises InvalidArgument: ``key`` is not a key set aside from this migration's source.
        :raises MigrationRefused: its old key holds a record again (nothing changed), or
            nothing is set aside at ``key``.
        """
        return self._go(self._call_restore_aside(key))

    def _go(self, run: Run[T]) -> T:
        """Run a checked call; Ctrl-C during a pass, a verify or a set-aside raises
        :class:`MigrationInterrupted` with its report."""
        try:
            return self.driver.run(run.op)
        except KeyboardInterrupt as exc:
            stop = None if run.interrupted is None else self.driver.run(run.interrupted())
            if stop is None:
                raise
            raise stop from exc
