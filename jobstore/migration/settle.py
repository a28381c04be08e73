"""How a migration settles and compares records: one way per deployment, chosen once.

On standalone Redis (:class:`StandaloneSettle`) each record is copied, merged or cleaned up by
one script that sees both copies at one instant (``SYNC_RECORD``, ``CLEANUP_RECORD``), a pair
is read for verify by one script (``READ_RECORDS``), and the passes may settle chunks of keys in
the ``pass_batch`` script (:mod:`jobstore.migration.transport`).

On Redis Cluster (:class:`ClusterSettle`) the two copies of a job sit in different slots and no
script can hold both. Both copies (and their tombstones) are read in one pipeline, the decision
is taken in Python by the same rules, and each write is a single-slot script that re-checks what
the decision relied on: a copy lands only where no record and no newer tombstone exists
(``COPY_IF_ABSENT``), and a merge or a delete lands only on a record that has not moved on since
it was read (``WRITE_IF_UNCHANGED``). Whatever raced is reported as ``changed`` and is left for
the next pass or verify, so nothing is ever overwritten with older data and no deleted job is
brought back. Verify looks again at a pair that differs (a write reaches the two copies one
after the other), and a scan checks at its end whether slots moved under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import rules
from ..job import parse_time
from ..layout import StoreKeys
from ..ops import Op, as_record, migration_calls
from ..schema import KeySchema
from ..steps import Batch, Call, Command, Primaries, Scan, Script

# ``f(workspace_id)``: True where the side a pass writes to wins a conflict (rules.wins).
Prefer = Callable[[str], bool]
# A record a pass or verify acts on: ``(workspace_id, job_id, its key, the other side's key)``.
Placed = tuple[str, str, str, str]
NOT_A_HASH = "\0not-a-hash"  # marks a key READ_RECORDS found holding another type


class Settle:
    """How records are settled and compared on one kind of deployment (:func:`settler_for`)."""

    # Whether the passes and verify may settle chunks of keys in the pass_batch script.
    batches: bool
    # Verify looks again at a pair that differs after each of these pauses (seconds).
    rechecks: tuple[float, ...]

    def __init__(self, keys: StoreKeys) -> None:
        self.keys = keys

    def apply(self, mode: str, placed: list[Placed], dry_run: bool,
              prefer_to: Prefer) -> Op[list[str]]:
        """Copy, merge or clean up each placed record (``placed`` not empty); its outcome, in
        order. ``prefer_to``: ``f(workspace_id)``, True where the 'to' side wins a conflict."""
        raise NotImplementedError

    def read_pairs(self, keys: tuple[str, ...]) -> Op[list[Any]]:
        """The record at each of ``keys`` (pairs: a record, then its counterpart); a key holding
        another type reads as ``{NOT_A_HASH: ...}``."""
        raise NotImplementedError

    def topology_moved(self, schema: KeySchema, nodes: Sequence[str | None],
                       servers: dict[str, str]) -> Op[tuple[list[str], list[str]] | None]:
        """After every primary's scan is done: ``(primaries, names to scan again)`` when a
        primary appeared or the slots a scanned one serves changed (keys may have moved to a
        server already scanned); None when nothing moved."""
        raise NotImplementedError


class StandaloneSettle(Settle):
    """Standalone Redis: one script over both copies of a record."""

    batches = True
    rechecks = ()

    def apply(self, mode: str, placed: list[Placed], dry_run: bool,
              prefer_to: Prefer) -> Op[list[str]]:
        calls: list[Call] = []
        for ws, job_id, scan_key, other_key in placed:
            if mode == "cleanup":
                calls.append(migration_calls.cleanup_record(
                    source=scan_key, target=other_key, workspace_id=ws, dry_run=dry_run))
            else:
                calls.append(migration_calls.sync_record(
                    from_key=scan_key, to_key=other_key, index=self.keys.index(ws),
                    workspace_id=ws, job_id=job_id, mode=mode, dry_run=dry_run,
                    to_wins=prefer_to(ws)))
        replies = yield Batch(tuple(calls), tolerate_errors=True)
        # A script error is one record's (e.g. an index key of the wrong type): counted, and the
        # pass goes on with the rest.
        return [r if isinstance(r, str) else "error" for r in replies]

    def read_pairs(self, keys: tuple[str, ...]) -> Op[list[Any]]:
        # Every pair in one script, at one instant: a dual write or delete landing between two
        # reads would otherwise look like a difference.
        (flat,) = yield Batch((migration_calls.read_records(records=keys),))
        return [as_record(r) for r in flat]

    def topology_moved(self, schema: KeySchema, nodes: Sequence[str | None],
                       servers: dict[str, str]) -> Op[tuple[list[str], list[str]] | None]:
        yield from ()  # one server, whose changes the scans see themselves
        return None


class ClusterSettle(Settle):
    """Redis Cluster: single-slot steps that re-check what they rely on (:func:`settle`)."""

    batches = False
    # The two copies sit on different nodes and a write reaches them one after the other:
    # verify looks again at what differs before calling it a problem.
    rechecks = (0.05, 0.25)

    def apply(self, mode: str, placed: list[Placed], dry_run: bool,
              prefer_to: Prefer) -> Op[list[str]]:
        return (yield from settle(self.keys, mode, placed, dry_run, prefer_to))

    def read_pairs(self, keys: tuple[str, ...]) -> Op[list[Any]]:
        records = yield Batch(tuple(Command(("HGETALL", key)) for key in keys), tolerate_errors=True)
        return [{NOT_A_HASH: "?"} if isinstance(r, Exception) else r for r in records]

    def topology_moved(self, schema: KeySchema, nodes: Sequence[str | None],
                       servers: dict[str, str]) -> Op[tuple[list[str], list[str]] | None]:
        now: list[str] = yield Primaries()
        again: list[str] = []
        for node in now:
            server, _, _ = yield Scan(schema.scan_pattern(), "0", 1, node)
            before = servers.get(node)
            if before is None or before.split("/", 1)[-1] != server.split("/", 1)[-1]:
                again.append(node)
        return (now, again) if again else None


def settler_for(cluster: bool, keys: StoreKeys) -> Settle:
    """The way records are settled on Redis Cluster (``cluster``) or standalone Redis."""
    return ClusterSettle(keys) if cluster else StandaloneSettle(keys)


# -- Redis Cluster: the per-record settle ------------------------------------------------------

same_record = rules.same_record  # the cleanup rule, shared with CLEANUP_RECORD

# An index entry a copy adds: ``(index key, score, job id)``.
Index = tuple[str, str, str]
# What to do for one record: its outcome, the writes (one, several or none), the index entry.
Plan = tuple[str, Script | list[Script] | None, Index | None]


def tomb_field(workspace_id: str, record: dict[str, str]) -> str:
    """The tombstone field that names one deleted incarnation of a job (see DELETE_RECORD)."""
    return f"{workspace_id}:{record.get('created_at') or ''}"


def settle(keys: StoreKeys, mode: str, placed: list[Placed], dry_run: bool,
           prefer_to: Callable[[str], bool] = lambda ws: False) -> Op[list[str]]:
    """Outcomes of ``mode`` (``copy``, ``merge`` or ``cleanup``) for ``placed`` records.

    ``placed``: ``(workspace_id, job_id, from_key, to_key)``. Outcomes as the standalone scripts
    name them, plus ``deleted`` (a delete interrupted between the copies, completed) and
    ``changed`` (the record moved on while this ran; left for the next pass). ``prefer_to``:
    ``f(workspace_id)``, see :func:`jobstore.rules.decide_sync`.
    """
    # A key of another type is found by its HGETALL, refused (WRONGTYPE, tolerated: the
    # driver raises anything that is not the command's own fault): no TYPE reads.
    replies = yield Batch(tuple(
        Command(args) for ws, _, a, b in placed for args in (
            ("HGETALL", a), ("HGETALL", b),
            ("HGETALL", keys.tomb(a)), ("HGETALL", keys.tomb(b)), ("PTTL", a), ("PTTL", b),
        )
    ), tolerate_errors=True)
    reads: list[Any] = [r if not isinstance(r, Exception) else {} for r in replies]
    decided: list[Plan] = []
    for i, (ws, job_id, a, b) in enumerate(placed):
        f, t, tomb_f, tomb_t, ttl, ttl_t = reads[6 * i: 6 * i + 6]
        if isinstance(replies[6 * i], Exception) or isinstance(replies[6 * i + 1], Exception):
            decided.append(("not_a_record", None, None))
            continue
        decided.append(_decide(keys, mode, ws, job_id, a, b, f or {}, t or {}, tomb_f or {},
                             tomb_t or {}, (ttl, ttl_t), prefer_to(ws)))
    plans = [(outcome, [] if call is None else call if isinstance(call, list) else [call], index)
             for outcome, call, index in decided]
    calls = [call for _, group, _ in plans for call in group]
    if dry_run or not calls:
        return [outcome for outcome, _, _ in plans]
    replies = iter((yield Batch(tuple(calls))))
    outcomes: list[str] = []
    indexed: list[Index] = []
    raced: list[tuple[int, str, str]] = []
    for i, (outcome, group, index) in enumerate(plans):
        answers = [next(replies) for _ in group]
        for answer in answers:
            if answer in ("exists", "tombstoned", "changed", "not_a_record"):
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


def _catch_up(placed: list[Placed], plans: list[tuple[str, list[Script], Index | None]],
              outcomes: list[str], reads: list[Any]) -> Op[None]:
    """A copy is made from a read taken a moment earlier: a move that reached the original in
    between found no copy to follow, or followed it only in part (a later move's mirror landed on
    the fresh copy, an earlier one's never did). Re-read both sides of fresh copies and bring
    each copy level with the original: its fields, its write count and its expiry (a final move
    in between gave the original one: the copy takes its remaining time), only while the copy
    is still exactly as re-read."""
    fresh = [(i, placed[i]) for i, outcome in enumerate(outcomes) if outcome in ("copied", "copied-back")]
    if not fresh:
        return
    now = yield Batch(tuple(
        Command(args) for i, (_, _, a, b) in fresh
        for key in ((a, b) if outcomes[i] == "copied" else (b, a))
        for args in (("HGETALL", key), ("PTTL", key))
    ))
    fixes: list[Script] = []
    for n, (i, (ws, _, a, b)) in enumerate(fresh):
        original, ttl, copy, copy_ttl = now[4 * n: 4 * n + 4]
        original, copy = original or {}, copy or {}
        to_key = b if outcomes[i] == "copied" else a
        if not original or not copy or original.get("workspace_id") != ws or copy.get("workspace_id") != ws:
            continue
        if int(ttl) == -2:
            ttl = 1  # the original expired between its two reads: the copy expires at once too
        if rules.same_content(original, copy):
            if rules.rev(original) != rules.rev(copy):
                fixes.append(_cas(to_key, copy, "write", {rules.REV: original.get(rules.REV, "0")},
                                  ttl))
            elif outlives(copy_ttl, ttl):
                fixes.append(_cas(to_key, copy, "write", {}, ttl))
        elif not rules.newer(copy, original):
            fixes.append(_cas(to_key, copy, "write", rules.union(original, copy), ttl))
    if fixes:
        yield Batch(tuple(fixes))


def outlives(ttl: Any, other: Any) -> bool:
    """Whether a key with PTTL ``ttl`` outlives one with PTTL ``other`` (which expires) by more
    than the grace: it has no expiry, or a later one (docs/retention.md)."""
    mine, theirs = int(ttl), int(other)
    return theirs > 0 and (mine == -1 or mine - theirs > rules.EXPIRY_GRACE_MS)


def carry_expiries(pairs: Sequence[tuple[Placed, dict[str, str], dict[str, str]]]) -> Op[list[str]]:
    """For each pair of copies of a finished job that are the same but expire apart (``placed``,
    the record at its first key, the record at its second, as read): the copy that outlives the
    other takes the other's remaining time (the sooner expiry wins: no copy is kept longer than
    a retention asked), only while it is still exactly as read. Outcomes: ``expiry`` (carried),
    ``same`` (no longer apart), ``changed`` (the copy moved on: left for the next verify)."""
    ttls = yield Batch(tuple(Command(("PTTL", key)) for (_, _, a, b), _, _ in pairs
                             for key in (a, b)))
    calls: list[Script | None] = []
    for n, ((_, _, a, b), record_a, record_b) in enumerate(pairs):
        ttl_a, ttl_b = ttls[2 * n], ttls[2 * n + 1]
        if outlives(ttl_a, ttl_b):
            calls.append(_cas(a, record_a, "write", {}, ttl_b))
        elif outlives(ttl_b, ttl_a):
            calls.append(_cas(b, record_b, "write", {}, ttl_a))
        else:
            calls.append(None)
    sent = [call for call in calls if call is not None]
    replies = iter((yield Batch(tuple(sent))) if sent else ())
    return ["same" if call is None else "expiry" if next(replies) == "done" else "changed"
            for call in calls]


def _copy(keys: StoreKeys, to_key: str, record: dict[str, str], ttl: Any, job_id: str) -> Script:
    return migration_calls.copy_if_absent(
        record=to_key, tombstone=keys.tomb(to_key), index=to_key, job_id=job_id,
        ttl_ms=_remaining(ttl), add_to_index=False, created_at=record.get("created_at") or "",
        workspace_id=record["workspace_id"], fields=record)


def _cas(key: str, record: dict[str, str], action: str,
         fields: dict[str, str] | None = None, ttl: Any = 0) -> Script:
    """Write ``fields`` to (or delete) ``key`` only while it holds exactly ``record``; ``ttl``:
    the remaining ms to give it with the write (that of the copy written from; 0 none)."""
    return migration_calls.write_if_unchanged(record=key, action=action, ttl_ms=_remaining(ttl),
                                              was=record, fields=fields or {})


def _remaining(ttl: Any) -> int:
    """A PTTL reply as the time to copy: ms; 0 when the key does not expire (the copy keeps
    what it has); 1 when it is gone (-2): it expired after it was read, so its copy expires
    at once instead of living on without an expiry."""
    ttl = int(ttl or 0)
    return 1 if ttl == -2 else max(ttl, 0)


def _score(created_at: Any) -> str:
    """An index score from a stored created_at (epoch seconds or ISO 8601); 0 when it is not a
    time."""
    value = parse_time(created_at) if isinstance(created_at, str) else None
    return "0" if value is None else repr(value)


def _decide(keys: StoreKeys, mode: str, ws: str, job_id: str, a: str, b: str, f: dict[str, str],
            t: dict[str, str], tomb_f: dict[str, str], tomb_t: dict[str, str],
            ttls: tuple[Any, Any], prefer_to: bool = False) -> Plan:
    """``(outcome, write or None, (index key, score, job id) to add or None)``. ``ttls``: the
    PTTL replies of ``a`` and ``b``: a write takes the remaining time of the copy it comes from
    (a finished job's retention, docs/retention.md)."""
    ttl_f, ttl_t = ttls
    if mode == "cleanup":  # outcomes as CLEANUP_RECORD names them
        if not f:
            return "gone", None, None
        if f.get("workspace_id") != ws:
            return "foreign", None, None
        if t and t.get("workspace_id") == ws and same_record(f, t):
            return "deleted", _cas(a, f, "delete"), None
        return "kept", None, None
    if not f and not t:
        return "gone", None, None
    if (f and f.get("workspace_id") != ws) or (t and t.get("workspace_id") != ws):
        return "foreign", None, None
    index = (keys.index(ws), _score((f or t).get("created_at")), job_id)
    # A tombstone naming this very incarnation on the other side: the job was deleted there and
    # the delete was interrupted between the two slots; it is completed here.
    if f and tomb_field(ws, f) in tomb_t:
        return "deleted", _cas(a, f, "delete"), None
    if mode == "merge" and t and tomb_field(ws, t) in tomb_f:
        return "deleted", _cas(b, t, "delete"), None
    outcome, new_from, new_to = rules.decide_sync(mode, f, t, prefer_to)
    if outcome == "copied":
        return outcome, _copy(keys, b, f, ttl_f, job_id), index
    if outcome == "copied-back":
        return outcome, _copy(keys, a, t, ttl_t, job_id), index
    writes: list[Script] = []
    if new_from is not None:
        writes.append(_cas(a, f, "write", new_from, ttl_t))
    if new_to is not None:
        writes.append(_cas(b, t, "write", new_to, ttl_f))
    # Each write only if its record is as it was read; a half-done merge is merged again.
    return outcome, writes or None, None
