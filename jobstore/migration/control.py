"""The :class:`Migration`: its phase switches, read rollout, log, status and the gates the
switches check; its passes, verify and set-aside come from the modules that hold them.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from .. import validation
from ..connection import connect
from ..errors import InvalidArgument, MigrationRefused
from ..events import Events
from ..phases import STATE_MAX_AGE, MigrationState, Phase, parse_phase, refusal, switched
from ..steps import Batch, Command
from .core import _check_batch, _one, log
from .passes import Passes
from .plan import SAMPLE, TIMED, primaries, memory_of
from .plan import check as _check_plan
from .plan import plan as _plan
from .reports import PlanReport
from .transport import _keys_per_call
from .setaside import SettingAside
from .verify import Verifying


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


class Migration(Passes, Verifying, SettingAside):
    """The source -> target migration of one store prefix: its phase and its passes.

    Every time the migration records (phase switches, the start of a verify or a reverse sync)
    is read from the Redis server holding its state (``TIME``), so that the rules comparing them
    hold whatever the clocks of the machines running ``jobstore migrate`` say. ``clock`` replaces
    that server clock (tests); ``wait`` is how the migration sleeps.
    """

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
        if not why:
            why = self.fit_refusal(state, new)
        if why and not force:
            raise MigrationRefused(why)
        after = switched(state, new, now)
        entry = {"at": now, "event": "phase", "from": state.phase.value, "to": new.value,
                 "forced": bool(why), "refusal": why or "", "reason": reason}
        self._store_state(state, after, entry, same_since=True, same_evidence=not why)
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
        _check_plan(rate, sample, top, timed)
        _check_batch(batch)
        chunk = _keys_per_call(keys_per_call)
        self._check_redis()
        return self.driver.run(_plan(self, rate=rate, sample=sample, top=top, batch=batch,
                                     chunk=chunk, timed=min(timed, sample), seed=seed))

    def fit_refusal(self, state: MigrationState, new: Phase) -> str:
        """Why switching from ``state`` to ``new`` is refused for memory ('' when it is not):
        only the switch that starts the target's copies (to dual-write from off, or from no
        stored phase), and only where a server has a ``maxmemory``, which the plan's estimate
        (with its margin) would exceed. The answer is kept FIT_KEPT seconds (a CLI asks first,
        then switches)."""
        if new is not Phase.DUAL_WRITE or (state.stored and state.phase is not Phase.OFF):
            return ""
        kept = self._fit_kept
        if kept is not None and time.monotonic() - kept[0] < FIT_KEPT:
            return kept[1]
        infos = self.driver.run(memory_of(self.driver.run(primaries())))
        if any(info and int(info.get("maxmemory", 0)) for info in infos.values()):
            why = self.driver.run(_plan(self, rate=None, sample=SAMPLE, top=0, batch=1000,
                                        chunk=1, timed=0)).refusal()
        else:
            why = ""
        self._fit_kept = (time.monotonic(), why)
        return why

    _fit_kept: tuple[float, str] | None = None

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
