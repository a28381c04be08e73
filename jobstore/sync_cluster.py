"""Copy, merge and clean up records on Redis Cluster, where the two copies of a job sit in
different slots and no script can hold both.

On standalone Redis each of these is one script (``SYNC_RECORD``, ``CLEANUP_RECORD``) that sees
both copies at one instant. Here both copies (and their tombstones) are read in one pipeline,
the decision is taken in Python by the same rules, and each write is a single-slot script that
re-checks what the decision relied on: a copy lands only where no record and no newer tombstone
exists (``COPY_IF_ABSENT``), and a merge or a delete lands only on a record that has not moved
on since it was read (``WRITE_IF_UNCHANGED``). Whatever raced is reported as ``changed`` and is
left for the next pass or verify, so nothing is ever overwritten with older data and no deleted
job is brought back.
"""

from __future__ import annotations

from .layout import StoreKeys
from .scripts import COPY_IF_ABSENT, WRITE_IF_UNCHANGED
from .steps import Batch, Command, Script

MUTABLE = frozenset({"status", "result", "error", "updated_at"})


def _num(value) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def same_record(source: dict, target: dict) -> bool:
    """The cleanup rule: the target holds the source's record, or a later state of it."""
    moved_on = _num(target.get("updated_at")) >= _num(source.get("updated_at"))
    return all(target.get(k) == v or (moved_on and k in MUTABLE) for k, v in source.items())


def settle(keys: StoreKeys, mode: str, placed: list, dry_run: bool, now: float):
    """Outcomes of ``mode`` (``copy``, ``merge`` or ``cleanup``) for ``placed`` records.

    ``placed``: ``(workspace_id, job_id, from_key, to_key)``. Outcomes as the standalone scripts
    name them, plus ``deleted`` (a delete interrupted between the copies, completed) and
    ``changed`` (the record moved on while this ran; left for the next pass).
    """
    reads = yield Batch(tuple(
        Command(args) for ws, _, a, b in placed for args in (
            ("HGETALL", a), ("HGETALL", b), ("HGET", keys.tomb(a), ws), ("HGET", keys.tomb(b), ws),
            ("PTTL", a),
        )
    ))
    plans = []
    for i, (ws, job_id, a, b) in enumerate(placed):
        f, t, tomb_f, tomb_t, ttl = reads[5 * i: 5 * i + 5]
        plans.append(_decide(keys, mode, ws, job_id, a, b, f or {}, t or {}, tomb_f, tomb_t, ttl))
    plans = [(outcome, [] if call is None else call if isinstance(call, list) else [call], index)
             for outcome, call, index in plans]
    calls = [call for _, group, _ in plans for call in group]
    if dry_run or not calls:
        return [outcome for outcome, _, _ in plans]
    replies = iter((yield Batch(tuple(calls))))
    outcomes, indexed, raced = [], [], []
    for i, (outcome, group, index) in enumerate(plans):
        answers = [next(replies) for _ in group]
        for answer in answers:
            if answer in ("exists", "tombstoned", "changed"):
                if answer == "exists":
                    # Absent when read, there when copied to: whose record got there first?
                    ws, _, a, b = placed[i]
                    raced.append((i, ws, b if outcome == "copied" else a))
                outcome = answer
        if group and outcome in ("copied", "copied-back") and index:
            indexed.append(index)
        outcomes.append(outcome)
    if raced:
        owners = yield Batch(tuple(Command(("HGET", key, "workspace_id")) for _, _, key in raced))
        for (i, ws, _), owner in zip(raced, owners):
            if owner is not None and owner != ws:
                outcomes[i] = "foreign"  # another workspace's job holds the key (a shared layout)
    if indexed:
        yield Batch(tuple(Command(("ZADD", key, "NX", score, job_id)) for key, score, job_id in indexed))
    yield from _catch_up(placed, plans, outcomes, reads)
    return outcomes


def _catch_up(placed, plans, outcomes, reads):
    """A copy is made from a read taken a moment earlier; an update that reached the source in
    between found no target copy to follow. Re-read the sources of fresh copies and bring each
    copy up to date (only while it still holds what was copied)."""
    fresh = [(i, placed[i]) for i, outcome in enumerate(outcomes) if outcome in ("copied", "copied-back")]
    if not fresh:
        return
    now = yield Batch(tuple(
        Command(("HGETALL", a if outcomes[i] == "copied" else b)) for i, (_, _, a, b) in fresh
    ))
    fixes = []
    for (i, (ws, _, a, b)), current in zip(fresh, now):
        copied = reads[5 * i] if outcomes[i] == "copied" else reads[5 * i + 1]
        to_key = b if outcomes[i] == "copied" else a
        if current and current != copied and current.get("workspace_id") == ws:
            fixes.append(_cas(to_key, copied, "write", current))
    if fixes:
        yield Batch(tuple(fixes))


def _copy(keys: StoreKeys, to_key: str, record: dict, ttl, job_id: str) -> Script:
    flat = [part for item in record.items() for part in item]
    return Script(COPY_IF_ABSENT, (to_key, keys.tomb(to_key), to_key),
                  (job_id, max(int(ttl or 0), 0), "0", record.get("created_at") or "0",
                   record["workspace_id"], *flat))


def _cas(key: str, record: dict, action: str, fields: dict | None = None) -> Script:
    flat = [part for item in (fields or {}).items() for part in item]
    return Script(WRITE_IF_UNCHANGED, (key,), (record.get("updated_at", ""), action, *flat))


def _decide(keys, mode, ws, job_id, a, b, f, t, tomb_f, tomb_t, ttl):
    """``(outcome, write or None, (index key, score, job id) to add or None)``."""
    if not f and not t:
        return "gone", None, None
    if (f and f.get("workspace_id") != ws) or (t and t.get("workspace_id") != ws):
        return "foreign", None, None
    index = (keys.index(ws), (f or t).get("created_at") or "0", job_id)
    if mode == "cleanup":
        if not f:
            return "gone", None, None
        if t and same_record(f, t):
            return "deleted", _cas(a, f, "delete"), None
        return "kept", None, None
    # A tombstone newer than a copy means the job was deleted after that copy was made: the
    # delete was interrupted between the two slots, and is completed here.
    if f and tomb_t and _num(tomb_t) >= _num(f.get("created_at")):
        return "deleted", _cas(a, f, "delete"), None
    if mode == "merge" and t and tomb_f and _num(tomb_f) >= _num(t.get("created_at")):
        return "deleted", _cas(b, t, "delete"), None
    if f and not t:
        return "copied", _copy(keys, b, f, ttl, job_id), index
    if mode == "copy":
        return ("exists" if f else "gone"), None, None
    if t and not f:
        return "copied-back", _copy(keys, a, t, 0, job_id), index
    if f == t:
        return "same", None, None
    newer, older = (t, f) if _num(t.get("updated_at")) > _num(f.get("updated_at")) else (f, t)
    union = {**older, **newer}
    # Two writes, each only if its record is as it was read; a half-done merge is merged again.
    return "merged", [_cas(a, f, "write", union), _cas(b, t, "write", union)], None
