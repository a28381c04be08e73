"""The call builders of the job operations' scripts: the only Python that knows where each
argument of a script goes in its KEYS and ARGV (the migration's are in
jobstore.ops.migration_calls).

One function per script, named after its file (``update_status`` builds a call of
jobstore/lua/update_status.lua), taking named arguments and returning the :class:`Script` step;
each file's header documents the layout these functions follow (tests/ops/test_calls.py holds
each builder to its header). A fenced script (jobstore/lua/includes/fence.lua) takes ``fence``:
the ``(state key, phase routed for, default phase)`` of the routing its keys came from, or None
(unfenced: Redis Cluster, a strategy that follows no migration state).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple

from ..scripts import (ARBITRATE, BURY, CREATE_RECORD, DELETE, DELETE_RECORD, DEQUEUE, ENQUEUE,
                       EXPIRE_COPY, EXPIRE_FINISHED, EXTEND, FINISH, LEASE_CLAIM, LEASE_LIST,
                       LEAVE_LEGACY_QUEUE, MIRROR, PRUNE_INDEX, PUSH_ONCE, READ_FIRST,
                       RETURN_CLAIMS, SWEEP_CURSOR, TAKE, TOOK, TRIM_DEAD, UPDATE_STATUS, Lua)
from ..steps import Script

# (state key, phase routed for, default phase): see jobstore/lua/includes/fence.lua.
Fence = tuple[str, str, str] | None


def _flag(value: bool) -> str:
    return "1" if value else ""


def _pairs(fields: Mapping[str, str]) -> list[str]:
    """A hash's field, value pairs as one flat list."""
    return list(chain.from_iterable(fields.items()))


def ms_arg(ms: int | None) -> str:
    """A script's argument for an optional time in ms ('' none)."""
    return "" if ms is None else str(ms)


def fenced(lua: Lua, fence: Fence, keys: Sequence[str], args: Sequence[Any]) -> Script:
    """A fenced script's call: the fence's key and two arguments ahead of the script's own
    (unfenced: any key, here the first, and two empty arguments)."""
    if fence is None:
        return Script(lua, (keys[0], *keys), ("", "", *args))
    state_key, phase, default = fence
    return Script(lua, (state_key, *keys), (phase, default, *args))


def fence_of(call: Script) -> tuple[str, ...]:
    """The fence a fenced call carries: the phase it was routed for, the phase when none is
    stored, and the state key ('' unfenced, where that key is any key)."""
    return (call.args[0], call.args[1], call.keys[0] if call.args[0] else "")


# -- standalone writes ----------------------------------------------------------------------------

class EnqueuedJob(NamedTuple):
    """One job of an ENQUEUE call: its keys (``writes``: the records to write, ``checks``: the
    records that must not exist either) and what its record, index and queue get. (A tuple:
    one is built per job enqueued, in a third of a frozen dataclass's time.)"""

    tombstone: str
    workspace_index: str
    writes: Sequence[str]
    checks: Sequence[str]
    token: str
    job_id: str
    score: str
    entry: str
    fields: Mapping[str, str]


def enqueue(fence: Fence, *, queue: str, legacy_queue: str | None, queue_mode: str,
            jobs: Sequence[EnqueuedJob]) -> Script:
    """jobstore/lua/enqueue.lua. ``legacy_queue``: the compatible queue, if one is configured."""
    keys: list[str] = [queue, *((legacy_queue, queue_mode) if legacy_queue else (queue, queue))]
    args: list[Any] = [_flag(bool(legacy_queue)), len(jobs)]
    for job in jobs:
        keys += (job.tombstone, job.workspace_index, *job.writes, *job.checks)
        args += (len(job.writes), len(job.checks), job.token, job.job_id, job.score, job.entry,
                 2 * len(job.fields), *_pairs(job.fields))
    return fenced(ENQUEUE, fence, keys, args)


def update_status(fence: Fence, *, marker: str, records: Sequence[str], leases: str | None,
                  spent: Sequence[str] = (), workspace_id: str, marker_ttl: int,
                  allowed: Iterable[str], max_record_bytes: int, fields: Mapping[str, str],
                  stamp: str = "", claim: str = "", hand_out: bool = False, iso: str = "",
                  ttl_ms: int | None = None, finished_ttl_ms: int | None = None) -> Script:
    """jobstore/lua/update_status.lua: the move to ``fields`` from a status among ``allowed``.
    ``leases`` and ``spent`` (op markers to delete): standalone only (None and none on Redis
    Cluster). ``stamp``: the created_at the record must have; ``claim``: the claim the caller
    must hold; ``hand_out``: the move hands the job out; ``ttl_ms``: the call's retention of a
    final move (None: the record's own, else ``finished_ttl_ms``)."""
    assert leases is not None or not spent, "spent markers go with the leases (standalone)"
    after = () if leases is None else (leases, *spent)
    return fenced(UPDATE_STATUS, fence, (marker, *records, *after),
                  (workspace_id, marker_ttl, " ".join(allowed), max_record_bytes, stamp, claim,
                   _flag(hand_out), len(after), iso, ms_arg(ttl_ms), ms_arg(finished_ttl_ms),
                   *_pairs(fields)))


def dequeue(fence: Fence, *, source: str, queue: str, marker: str, dead: str, leases: str,
            legacy_queue: str | None, queue_mode: str, spent: Sequence[str] = (),
            marker_ttl: int, now: str, scan: int, max_dead_letters: int, lease_ms: int,
            max_attempts: int, token: str, resolved: str = "", iso: str,
            finished_ttl_ms: int | None, schemas: Sequence[str],
            others: Sequence[str] = ()) -> Script:
    """jobstore/lua/dequeue.lua: claim from ``source`` (the queue, or this call's claim list).
    ``resolved``: the keys the store computed for one entry; ``schemas``: the read order's
    record key templates (or byte 3 and a computed schema's name); ``others``: those of the
    other schemas the strategy knows (a job failed at max attempts expires there too)."""
    return fenced(DEQUEUE, fence,
                  (source, queue, marker, dead, leases, legacy_queue or queue, queue_mode, *spent),
                  (marker_ttl, now, scan, max_dead_letters, lease_ms, max_attempts, token,
                   resolved, iso, _flag(bool(legacy_queue)), ms_arg(finished_ttl_ms),
                   len(schemas), *schemas, *others))


def finish(move: Script, take: Script) -> Script:
    """jobstore/lua/finish.lua: an UPDATE_STATUS call (:func:`update_status`) and a DEQUEUE call
    (:func:`dequeue`) built with the same fence, joined into one."""
    assert fence_of(move) == fence_of(take), "both halves under one fence"
    return Script(FINISH, (*move.keys, *take.keys[1:]),
                  (*move.args[:2], len(move.keys) - 1, len(move.args) - 2, *move.args[2:],
                   *take.args[2:]))


def delete(fence: Fence, *, tombstone: str, index: str, leases: str, records: Sequence[str],
           workspace_id: str, marker_ttl: int, job_id: str, token: str) -> Script:
    """jobstore/lua/delete.lua."""
    return fenced(DELETE, fence, (tombstone, index, leases, *records),
                  (workspace_id, marker_ttl, job_id, token))


def extend(fence: Fence, *, leases: str, records: Sequence[str], claim: str, lease_ms: int,
           workspace_id: str) -> Script:
    """jobstore/lua/extend.lua (``records``: none on Redis Cluster)."""
    return fenced(EXTEND, fence, (leases, *records), (claim, lease_ms, workspace_id))


def lease_list(*, leases: str, claim_list: str, stay_ms: int) -> Script:
    """jobstore/lua/lease_list.lua."""
    return Script(LEASE_LIST, (leases,), (claim_list, stay_ms))


# -- reads, retention, admin ----------------------------------------------------------------------

def read_first(*, records: Sequence[str], workspace_id: str) -> Script:
    """jobstore/lua/read_first.lua."""
    return Script(READ_FIRST, tuple(records), (workspace_id,))


def prune_index(*, index: str, entries: Iterable[tuple[str, Any]]) -> Script:
    """jobstore/lua/prune_index.lua: ``entries``: (job id, score as read)."""
    return Script(PRUNE_INDEX, (index,),
                  tuple(part for job_id, score in entries for part in (job_id, repr(float(score)))))


def trim_dead(*, dead: str, older_than_ms: int, most: int) -> Script:
    """jobstore/lua/trim_dead.lua."""
    return Script(TRIM_DEAD, (dead,), (older_than_ms, most))


def expire_finished(*, record: str, workspace_id: str, finished_ttl_ms: int | None) -> Script:
    """jobstore/lua/expire_finished.lua (``finished_ttl_ms`` None: only a record's own ttl)."""
    return Script(EXPIRE_FINISHED, (record,), (workspace_id, ms_arg(finished_ttl_ms)))


def expire_copy(*, record: str, workspace_id: str, expiry: int) -> Script:
    """jobstore/lua/expire_copy.lua (``expiry``: the final move's, server time in ms)."""
    return Script(EXPIRE_COPY, (record,), (workspace_id, expiry))


def sweep_cursor(*, cursor: str, start: Sequence[str] = (),
                 mark: tuple[str, str, str] | None = None) -> Script:
    """jobstore/lua/sweep_cursor.lua: ``start`` (the current primaries' names) reads where the
    sweep of this cycle stopped, or ``mark`` (cycle, a primary's name, where) saves it."""
    if mark is not None:
        return Script(SWEEP_CURSOR, (cursor,), ("mark", *mark))
    return Script(SWEEP_CURSOR, (cursor,), ("start", *start))


def leave_legacy_queue(*, legacy_queue: str, queue: str, queue_mode: str, most: int,
                       templates: Sequence[str]) -> Script:
    """jobstore/lua/leave_legacy_queue.lua (``templates``: of the schemas keyed by the job id
    alone)."""
    return Script(LEAVE_LEGACY_QUEUE, (legacy_queue, queue, queue_mode), (most, *templates))


# -- Redis Cluster --------------------------------------------------------------------------------

def create_record(*, record: str, tombstone: str, token: str, incarnation: str,
                  fields: Mapping[str, str]) -> Script:
    """jobstore/lua/create_record.lua (``incarnation``: 'workspace:created_at')."""
    return Script(CREATE_RECORD, (record, tombstone), (token, incarnation, *_pairs(fields)))


def push_once(*, marker: str, queue: str, spent: Sequence[str] = (), marker_ttl: int,
              entry: str) -> Script:
    """jobstore/lua/push_once.lua."""
    return Script(PUSH_ONCE, (marker, queue, *spent), (marker_ttl, entry))


def mirror(*, marker: str, record: str, workspace_id: str, marker_ttl: int,
           expiry: int | str | None, fields: Mapping[str, str]) -> Script:
    """jobstore/lua/mirror.lua (``expiry``: server time in ms, None or 0 none)."""
    return Script(MIRROR, (marker, record),
                  (workspace_id, marker_ttl, expiry or "", *_pairs(fields)))


def delete_record(*, marker: str, record: str, tombstone: str, workspace_id: str,
                  marker_ttl: int, tomb_ttl: int, stamps: Sequence[str]) -> Script:
    """jobstore/lua/delete_record.lua."""
    return Script(DELETE_RECORD, (marker, record, tombstone),
                  (workspace_id, marker_ttl, tomb_ttl, *stamps))


def bury(*, marker: str, dead: str, marker_ttl: int, most: int, entry: str, reason: str,
         key: str | None = None, field: str | None = None) -> Script:
    """jobstore/lua/bury.lua (``entry``: as the letter shows it, printable; ``key`` and
    ``field``: the record that cannot be decoded, None for an entry that cannot be parsed)."""
    return Script(BURY, (marker, dead), (marker_ttl, most, entry, reason, key or "", field or ""))


def arbitrate(*, arbiter: str, claim: str, ttl: int, holder: str = "") -> Script:
    """jobstore/lua/arbitrate.lua."""
    return Script(ARBITRATE, (arbiter,), (claim, ttl, holder))


def lease_claim(*, leases: str, claim: str, lease_ms: int) -> Script:
    """jobstore/lua/lease_claim.lua."""
    return Script(LEASE_CLAIM, (leases,), (claim, lease_ms))


def take(*, queue: str, claim_list: str, leases: str, marker: str, stay_ms: int,
         most_expired: int) -> Script:
    """jobstore/lua/take.lua."""
    return Script(TAKE, (queue, claim_list, leases, marker), (stay_ms, most_expired))


def took(*, marker: str, claim_list: str, leases: str, marker_ttl: int, entry: str,
         expired: str = "") -> Script:
    """jobstore/lua/took.lua."""
    return Script(TOOK, (marker, claim_list, leases), (marker_ttl, entry, expired))


def return_claims(*, claim_list: str, queue: str, leases: str) -> Script:
    """jobstore/lua/return_claims.lua."""
    return Script(RETURN_CLAIMS, (claim_list, queue, leases), ())
