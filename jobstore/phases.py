"""The state of one source -> target migration, and the rules for switching its phase.

Pure logic: the state is read from and written to one Redis hash by ``jobstore.migration``;
every ``dual`` store caches it and follows a switch within a second.
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass, field, replace
from collections.abc import Mapping

from .errors import InvalidArgument

# How long a store trusts its cached state, and so how long a switch takes to reach every
# process. A switch waits this long (plus a margin) before it reports the phase in effect.
STATE_MAX_AGE = 1.0
# Past this age a store still uses the cached state but refreshes it with its next command.
STATE_REFRESH_AGE = 0.5


class Phase(str, enum.Enum):
    """The phases of a source -> target migration, in order."""

    OFF = "off"
    DUAL_WRITE = "dual-write"
    READ_TARGET = "read-target"
    TARGET_ONLY = "target-only"

    def __str__(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        return list(Phase).index(self)

    @property
    def writes_both(self) -> bool:
        return self in (Phase.DUAL_WRITE, Phase.READ_TARGET)


DEFAULT_PHASE = Phase.READ_TARGET  # dual's behaviour before any phase is stored


def migration_name(source: str, target: str) -> str:
    """The name of the ``source`` -> ``target`` migration, as events and metrics label it."""
    return f"{source}:{target}"


def parse_phase(value: object) -> Phase:
    try:
        return Phase(value)
    except ValueError:
        allowed = ", ".join(p.value for p in Phase)
        raise InvalidArgument("phase", f"{value!r} is not one of {allowed}") from None


@dataclass(frozen=True)
class Rollout:
    """Which workspaces read the target first while the phase is ``read-target``.

    Sticky and deterministic: a workspace is in when a hash of the migration name and its id
    falls under ``percent``, so raising the percentage only ever adds workspaces. ``allow``
    adds workspaces whatever the percentage; ``deny`` removes them and wins over ``allow``.
    """

    percent: float = 100.0
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    def includes(self, migration: str, workspace_id: str) -> bool:
        if workspace_id in self.deny:
            return False
        if workspace_id in self.allow or self.percent >= 100:
            return True
        digest = hashlib.sha256(f"{migration}\0{workspace_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % 10_000  # 0.01 % steps
        return bucket < self.percent * 100

    @property
    def complete(self) -> bool:
        return self.percent >= 100 and not self.deny


@dataclass(frozen=True)
class MigrationState:
    """What is stored in ``<prefix>:migration:<source>:<target>``.

    Times are epoch seconds. ``dual_since``: writes have gone to both sides since then without a
    break. ``verified_clean``: start time of the last verify that found nothing to fix.
    ``verify_failed``: when the newest verify that was not clean finished (it found problems,
    repaired some, could not vouch for every key, or was a sample or an interrupted run that
    found problems); ``verify_failed_note`` says what it found. The newest evidence decides: a
    clean verify counts only when it started after that one finished (:meth:`vouched`). The
    order is told by tickets, not times: every verify takes one when it starts
    (``clean_ticket`` is the ticket of the clean one recorded), and a verify that was not clean
    takes another when it finishes (``failed_ticket``), from one counter in the state hash
    (``verify_ticket``, INCR), so that no clock resolution or step can swap them.
    ``reverse_synced``: start time of the last complete target -> source sync. ``source_gap``:
    the source missed writes (the phase was target-only) and no reverse sync has closed the gap.
    ``unplaceable``: target records the last complete reverse sync could not write back to the
    source (``foreign``: the source layout holds one job per id and another workspace holds it).
    ``target_gap``: the target missed writes (the phase was ``off`` after the target had copies)
    and no clean verify since dual writes resumed has shown its copies up to date again.

    Every time here is the Redis server's (``TIME``), never a client's: the times that gate a
    switch are compared with each other, and clients' clocks differ.
    """

    phase: Phase = DEFAULT_PHASE
    stored: bool = False
    phase_since: float = 0.0
    dual_since: float = 0.0
    verified_clean: float = 0.0
    reverse_synced: float = 0.0
    source_gap: bool = False
    unplaceable: int = 0
    rollout: Rollout = field(default_factory=Rollout)
    target_gap: bool = False
    verify_failed: float = 0.0
    verify_failed_note: str = ""
    clean_ticket: int = 0
    failed_ticket: int = 0

    def vouched(self) -> bool:
        """A clean verify vouches for the target now: it started after dual writes began, and
        after the newest verify that was not clean had finished (a clean verify that ran beside
        a failing one, or before it, proves nothing the failing one contradicts). A state
        stored before failures were recorded has no failed ticket: its clean verify counts."""
        return bool(self.dual_since) and self.verified_clean > self.dual_since \
            and (self.clean_ticket > self.failed_ticket or not self.failed_ticket)

    def contradicted(self) -> bool:
        """Since dual writes began, the newest verify was not clean: no clean verify started
        after it finished."""
        return bool(self.dual_since and self.failed_ticket) \
            and self.verify_failed > self.dual_since and self.clean_ticket < self.failed_ticket

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> MigrationState:
        if not data:
            return cls()

        def num(name: str) -> float:
            return float(data.get(name) or 0.0)

        def names(name: str) -> frozenset[str]:
            return frozenset(filter(None, (data.get(name) or "").split(",")))

        return cls(
            phase=Phase(data.get("phase") or DEFAULT_PHASE.value),
            stored=True,
            phase_since=num("phase_since"),
            dual_since=num("dual_since"),
            verified_clean=num("verified_clean"),
            reverse_synced=num("reverse_synced"),
            source_gap=data.get("source_gap") == "1",
            target_gap=data.get("target_gap") == "1",
            unplaceable=int(data.get("unplaceable") or 0),
            # absent in a state stored by older versions: no failure recorded, and a clean
            # verify recorded then keeps counting (its ticket 0 is above no failed ticket)
            verify_failed=num("verify_failed"),
            verify_failed_note=data.get("verify_failed_note") or "",
            clean_ticket=int(num("clean_ticket")),
            failed_ticket=int(num("failed_ticket")),
            rollout=Rollout(
                float(data.get("read_percent") or 100.0), names("read_allow"), names("read_deny")
            ),
        )

    def to_hash(self) -> dict[str, str]:
        return {
            "phase": self.phase.value,
            "phase_since": repr(self.phase_since),
            "dual_since": repr(self.dual_since),
            "verified_clean": repr(self.verified_clean),
            "reverse_synced": repr(self.reverse_synced),
            "source_gap": "1" if self.source_gap else "0",
            "target_gap": "1" if self.target_gap else "0",
            "unplaceable": str(self.unplaceable),
            "read_percent": repr(float(self.rollout.percent)),
            "read_allow": ",".join(sorted(self.rollout.allow)),
            "read_deny": ",".join(sorted(self.rollout.deny)),
            "verify_failed": repr(self.verify_failed),
            "verify_failed_note": self.verify_failed_note,
            "clean_ticket": str(self.clean_ticket),
            "failed_ticket": str(self.failed_ticket),
        }


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def _failed_verify(state: MigrationState) -> str:
    """Why the newest verify keeps a gate shut."""
    note = f" ({state.verify_failed_note})" if state.verify_failed_note else ""
    return (f"the newest verify, finished at {_when(state.verify_failed)}, was not clean{note}; "
            "fix what it reported (jobstore migrate verify lists every problem by key; --repair "
            "fixes what it can, jobstore migrate set-aside moves unroutable records aside), "
            "then run jobstore migrate verify again until it is clean")


def refusal(state: MigrationState, new: Phase) -> str | None:
    """Why switching from ``state`` to ``new`` could strand or lose data; None when safe."""
    old = state.phase
    if new == old:
        return None
    if new.rank - old.rank > 1:
        return (
            f"{old} -> {new} skips phases; go one step at a time "
            f"({' -> '.join(p.value for p in Phase if old.rank <= p.rank <= new.rank)})"
        )
    if new is Phase.READ_TARGET and old is Phase.DUAL_WRITE:
        if state.contradicted():
            return "read-target needs the target's copies to be right: " + _failed_verify(state)
        if state.target_gap and not state.vouched():
            return (
                "the target missed the writes made while the phase was off, so some of its copies "
                "may be stale; read-target needs a backfill and then a clean verify, both started "
                "after dual writes resumed (run: jobstore migrate backfill, then jobstore migrate verify)"
            )
    if new is Phase.TARGET_ONLY:
        if not state.rollout.complete:
            return "target-only needs every workspace reading the target first (rollout 100%, no deny list)"
        if state.contradicted():
            return "target-only needs a clean verify: " + _failed_verify(state)
        if not state.vouched():
            return (
                "target-only needs a clean verify started after dual writes began "
                "(run: jobstore migrate backfill, then jobstore migrate verify)"
            )
    if old is Phase.TARGET_ONLY and state.unplaceable:
        return (
            f"the last reverse sync could not write {state.unplaceable} target job(s) back to the "
            "source: the source layout holds one job per id and another workspace holds the id "
            "there (counted as 'foreign' in its report); rolling back would lose them: delete or "
            "re-create them under free ids, then reverse-sync again"
        )
    if old is Phase.TARGET_ONLY and state.reverse_synced <= state.phase_since:
        return (
            "leaving target-only needs a reverse sync first: jobs written since the switch exist "
            "only in the target (run: jobstore migrate reverse-sync)"
        )
    if new.rank < Phase.READ_TARGET.rank and state.source_gap:
        return (
            "the source missed the writes of the target-only period; leave target-only for "
            "read-target, run a reverse sync there, then read the source again"
        )
    return None


def switched(state: MigrationState, new: Phase, now: float) -> MigrationState:
    """The state after a switch to ``new`` at ``now`` (server time; checked or forced).

    Before a phase is first stored, nothing can vouch that every process wrote both layouts
    (processes on the ``legacy`` strategy write the source alone), so the first stored phase
    that writes both starts ``dual_since`` afresh, as a switch from ``off`` does.
    """
    if new == state.phase and state.stored:
        return state
    dual_since = state.dual_since
    if new.writes_both and (not state.phase.writes_both or not state.stored or not dual_since):
        dual_since = now + STATE_MAX_AGE  # once every process has seen the switch
    elif not new.writes_both:
        dual_since = 0.0
    return replace(
        state,
        phase=new,
        stored=True,
        phase_since=now + STATE_MAX_AGE,
        dual_since=dual_since,
        source_gap=state.source_gap or new is Phase.TARGET_ONLY,
        # The target misses every write made in 'off' (unless it was 'off' all along).
        target_gap=state.target_gap or (new is Phase.OFF and (state.phase is not Phase.OFF or not state.stored)),
        unplaceable=0 if new is Phase.TARGET_ONLY else state.unplaceable,
    )


def changed_fields(before: MigrationState, after: MigrationState) -> dict[str, str]:
    """The stored fields a change from ``before`` to ``after`` sets (all of them when nothing
    was stored): a change never rewrites a field it did not change."""
    old = before.to_hash() if before.stored else {}
    return {k: v for k, v in after.to_hash().items() if old.get(k) != v}
