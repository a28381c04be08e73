"""Which copy of a job is newer, and what a copy, merge or cleanup does: one rule, two forms.

Every record jobstore writes carries ``_rev``, a per-record write counter that the write's own
script increments (``enqueue`` writes 1; an update, a claim or a mirror adds 1 to the copy's
own count; a copy or merge carries the winner's count). No client clock takes part, so no
amount of clock skew between clients changes which copy wins. A copy that missed writes (the
target while the phase was ``off``, the source while it was ``target-only``) keeps a lower
count, so it stays recognisably older even after later writes reach both copies again.
Records written by other tools (or by jobstore before 0.2) have no ``_rev`` and count 0.

Between two copies of one job (same workspace):

- ``newer(a, b)``: ``rev(a) > rev(b)``. Equal counts with different content happen with
  records written without counts (by jobstore before 0.2, by other tools, by old processes
  during a rolling upgrade) or written apart on both sides: the copy whose status is further
  along wins (statuses only ever go up), and then the copy the phase reads first for that
  workspace (``prefer_to``), as that is the copy its readers have been served (:func:`wins`).
- copy (backfill): a missing ``to`` gets ``from``; a ``to`` that is older than ``from`` (or
  equal, when ``from`` is the authority) is brought up to date (``refreshed``); else left alone.
- merge (reverse sync, repair): the union of both records' fields, the newer record's values
  winning, written to both.
- cleanup: a source record may go when the target holds every source field with the same value,
  except that the mutable fields may differ when the target is at least as new.

The standalone scripts (one script sees both copies) include the Lua form,
``jobstore/lua/includes/rules.lua`` (with ``count.lua``, :func:`count`, and ``status.lua``,
:data:`STATUS_RANK` and :func:`moved_past`; their constants rendered from this module:
:data:`MUTABLE`, :data:`STATUS_RANK`, :data:`MAX_COUNT_DIGITS`, :data:`LEASE_EXPIRED`); Redis
Cluster decides in Python
(:func:`decide_sync`, :func:`same_record`) because the copies sit in different slots. The
differential test ``tests/ops/test_rules.py`` feeds both forms the same cases.
"""

from __future__ import annotations

from collections.abc import Mapping

REV = "_rev"
# The token of the enqueue call that created the record: a re-sent enqueue recognises its own
# first attempt by it (no marker key per job). Written once, copied with the record, never
# changed: like any field outside MUTABLE, copies of one job hold the same.
OP = "_op"
# The retention a job's enqueue asked for (ms): the time its record lives once it is finished
# (docs/retention.md). Written once by enqueue, copied with the record, never changed.
TTL = "_ttl"
# A copy that expires within this many ms counts as gone already when verify compares: copies of
# one finished job expire together, give or take the time between their writes (and, on a
# cluster, the nodes' clocks), so a counterpart that expired a moment earlier is no fault.
EXPIRY_GRACE_MS = 5000
# Fields a job's later history may change; everything else identifies the record.
MUTABLE_FIELDS = ("status", "result", "error", "updated_at", "attempts", "claim", REV)
MUTABLE = frozenset(MUTABLE_FIELDS)
# Status order: every allowed move goes up, so a late mirror of an earlier move is recognisable.
STATUS_RANK = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}


# Longest count taken as one (a write count, an attempt count: jobstore.job.count): Lua numbers
# are doubles, exact to 2**53 (16 digits); a longer value (never written by jobstore) counts 0 in
# both forms.
MAX_COUNT_DIGITS = 15


# Why a job whose lease ran out on its last attempt failed: ``LEASE_EXPIRED % (attempts,
# max_attempts)`` (the scripts render it and fill it in with string.format).
LEASE_EXPIRED = ("lease expired on attempt %d of %d (max_attempts): the worker holding the job "
                 "stopped renewing it")


def count(value: str | None) -> int:
    """A stored count (a write count, an attempt count): up to :data:`MAX_COUNT_DIGITS` decimal
    digits, else 0 (absent, or written by another tool), as the scripts read it."""
    if value and value.isascii() and value.isdigit() and len(value) <= MAX_COUNT_DIGITS:
        return int(value)
    return 0


def rev(record: Mapping[str, str]) -> int:
    """A record's write count; 0 when absent or not a count (written by another tool)."""
    return count(record.get(REV))


def newer(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return rev(a) > rev(b)


def later_status(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """``a``'s status is further along than ``b``'s (every allowed move raises it)."""
    return STATUS_RANK.get(a.get("status") or "", -1) > STATUS_RANK.get(b.get("status") or "", -1)


def wins(a: Mapping[str, str], b: Mapping[str, str], a_is_authority: bool) -> bool:
    """``a`` is the copy to keep of two that differ: the higher write count; on equal counts
    (records written without counts, a conflict) the later status; then the authority."""
    if rev(a) != rev(b):
        return rev(a) > rev(b)
    if later_status(a, b) or later_status(b, a):
        return later_status(a, b)
    return a_is_authority


def same_content(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Equal in every field but the write count."""
    return all(b.get(k) == v for k, v in a.items() if k != REV) and all(
        a.get(k) == v for k, v in b.items() if k != REV
    )


def same_identity(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Equal in every field outside :data:`MUTABLE`: one job, perhaps further along in one."""
    return all(b.get(k) == v for k, v in a.items() if k not in MUTABLE) and all(
        a.get(k) == v for k, v in b.items() if k not in MUTABLE
    )


def expire_apart(ttl: int | str, other: int | str) -> bool:
    """Whether two copies of a finished job, whose PTTL replies these are, expire apart: one lasts
    (-1) while the other expires, or both expire more than :data:`EXPIRY_GRACE_MS` apart. A copy
    already gone (-2) is no expiry difference (it is missing). The Lua form is rules.lua's
    ``expire_apart``."""
    a, b = int(ttl), int(other)
    if a == -2 or b == -2 or (a == -1 and b == -1):
        return False
    return a == -1 or b == -1 or abs(a - b) > EXPIRY_GRACE_MS


def compared(source: Mapping[str, str], target: Mapping[str, str]) -> str:
    """What verify finds comparing a source record with its target copy (both present, both
    the workspace's): ``same``, ``target_newer`` (the same job, a later write count in the
    target) or ``differing``."""
    if same_content(source, target):
        return "same"
    if same_identity(source, target) and newer(target, source):
        return "target_newer"
    return "differing"


def union(winner: Mapping[str, str], loser: Mapping[str, str]) -> dict[str, str]:
    """Every field of both, the winner's values where both have one (no field is ever lost)."""
    return {**loser, **winner}


def decide_sync(mode: str, source: Mapping[str, str], target: Mapping[str, str],
                prefer_to: bool = False) -> tuple[str, dict | None, dict | None]:
    """``(outcome, new 'from' record or None, new 'to' record or None)`` for ``copy``/``merge``.

    ``source``/``target``: the 'from' and 'to' records (empty when absent), both already known
    to belong to the workspace. None means: leave that side as it is. ``prefer_to``: which copy
    wins when both differ with equal counts: the one the phase reads first (the authority), 'to'
    when True, else 'from'.
    """
    if not source and not target:
        return "gone", None, None
    if not target:
        return "copied", None, dict(source)
    if mode == "copy":
        if not source:
            return "gone", None, None
        if not same_content(source, target) and wins(source, target, not prefer_to):
            return "refreshed", None, union(source, target)
        return "exists", None, None
    if not source:
        return "copied-back", dict(target), None
    if same_content(source, target):
        return "same", None, None
    winner, loser = (target, source) if wins(target, source, prefer_to) else (source, target)
    merged = union(winner, loser)
    return "merged", merged, merged


def same_record(source: Mapping[str, str], target: Mapping[str, str]) -> bool:
    """The cleanup rule: the target holds the source's record, or a later state of it (the
    write counts themselves may differ)."""
    moved_on = rev(target) >= rev(source)
    return all(k == REV or target.get(k) == v or (moved_on and k in MUTABLE)
               for k, v in source.items())


def moved_past(current_status: str | None, new_status: str | None, current_attempts: int = 0,
               new_attempts: int | None = None) -> bool:
    """A mirrored move to ``new_status`` is late: the copy already took that move or a later one.

    Every move raises the status, except a running job handed out again (its lease taken over):
    that move raises the attempt count (``new_attempts``; None when the move does not set it).
    """
    was = STATUS_RANK.get(current_status or "", -1)
    new = STATUS_RANK.get(new_status or "", 99)
    return was > new or (was == new and (new_attempts or 0) <= current_attempts)

