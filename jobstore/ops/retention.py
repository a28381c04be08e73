"""Retention's housekeeping (docs/retention.md): what expired records leave behind.

A finished job's records expire on their own (the final move sets it, jobstore/lua/includes/
retention.lua); the pointers to them do not. ``list`` drops the index entries it finds without
a record (:func:`prune_gone`), ``dequeue`` drops queue entries without a record and leases whose
claim no record holds (as it always has), and :func:`sweep` walks every workspace index in
bounded steps, drops the entries of records that are gone, gives jobs that finished without a
retention the store's ``finished_ttl`` (when it has one), and trims dead letters older than
``dead_letter_ttl``. Every step is one script or one pipeline of a bounded size, safe to re-send
and to run beside live traffic; an interrupted sweep is simply run again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..job import TERMINAL
from ..steps import Batch, Command, Primaries, Scan
from . import calls
from .context import Context, Op
from .records import job_keys

FINAL = frozenset(status.value for status in TERMINAL)


def _gone_elsewhere(ctx: Context, workspace_id: str, ids: Sequence[str],
                    read: Iterable[str]) -> Op[list[str]]:
    """Those of ``ids`` (whose records in the schemas ``read`` are gone) that have no record in
    any other schema the store knows either: a record held anywhere keeps its entry."""
    known = [s for s in ctx.strategy.routing(workspace_id).known if s.name not in set(read)]
    if not known or not ids:
        return list(ids)
    keys = [job_keys(known, workspace_id, job_id) for job_id in ids]
    found = yield Batch(tuple(Command(("EXISTS", key)) for per_job in keys for key in per_job))
    n = len(known)
    return [job_id for i, job_id in enumerate(ids) if not any(found[i * n:(i + 1) * n])]


def prune_gone(ctx: Context, workspace_id: str, entries: Sequence[tuple[str, object]],
               read: Iterable[str]) -> Op[int]:
    """Remove from the workspace index ``entries`` (job id, score, read before the records),
    whose records ``list`` found gone in the schemas ``read`` (expired, or deleted by another
    tool): only those without a record in any schema the store knows, and only while their
    score is still the one read (a job enqueued again under the id has its own). Returns how
    many went."""
    scores = dict(entries)
    gone = yield from _gone_elsewhere(ctx, workspace_id, list(scores), read)
    return (yield from _prune(ctx.keys.index(workspace_id),
                              [(job_id, scores[job_id]) for job_id in gone]))


def _prune(index: str, entries: Sequence[tuple[str, object]]) -> Op[int]:
    if not entries:
        return 0
    (removed,) = yield Batch((calls.prune_index(index=index, entries=entries),))
    return int(removed)


def sweep(ctx: Context, batch: int, finished_ttl_ms: int | None = None) -> Op[dict[str, int]]:
    """Walk every workspace index (SCAN for the index keys, then through each by rank,
    ``batch`` entries a step), drop the entries whose records are gone, give ``finished_ttl_ms`` to
    finished records without an expiry (None: leave them), and trim dead letters older than
    the store's ``dead_letter_ttl``. Returns the counts: ``indexes``, ``entries`` (examined),
    ``pruned``, ``expiring`` (records given an expiry), ``dead_letters`` (dropped)."""
    totals = {"indexes": 0, "entries": 0, "pruned": 0, "expiring": 0, "dead_letters": 0}
    pattern = ctx.keys.index("*")
    head = ctx.keys.index("")[:-1]  # '<own prefix>:index:{'
    for node in (yield Primaries()):
        cursor = "0"
        while True:
            _, cursor, found = yield Scan(pattern, cursor, batch, node)
            for index in found:
                workspace_id = index[len(head):-1]
                if not index.startswith(head) or not index.endswith("}") or not workspace_id:
                    continue
                totals["indexes"] += 1
                yield from _sweep_index(ctx, index, workspace_id, batch, finished_ttl_ms, totals)
            if cursor in ("0", 0):
                break
    if ctx.dead_letter_ttl_ms is not None:
        while True:
            (dropped,) = yield Batch((calls.trim_dead(
                dead=ctx.keys.dead, older_than_ms=ctx.dead_letter_ttl_ms, most=batch),))
            totals["dead_letters"] += int(dropped)
            if int(dropped) < batch:
                break
    return totals


def _sweep_index(ctx: Context, index: str, workspace_id: str, batch: int,
                 finished_ttl_ms: int | None, totals: dict[str, int]) -> Op[None]:
    """One index, ``batch`` entries a step, oldest first, by rank: a step reads exactly that
    many. New jobs rank last; an entry that moves past the walk meanwhile (another sweep or a
    list removed some before it) waits for the next sweep."""
    known = ctx.strategy.routing(workspace_id).known
    n = len(known)
    start = 0
    while True:
        (entries,) = yield Batch((Command(("ZRANGE", index, start, start + batch - 1,
                                           "WITHSCORES")),))
        if entries and not isinstance(entries[0], (tuple, list)):  # a flat reply
            entries = list(zip(entries[::2], entries[1::2]))
        totals["entries"] += len(entries)
        keys = [job_keys(known, workspace_id, job_id) for job_id, _ in entries]
        looks = yield Batch(tuple(
            Command(args) for per_job in keys for key in per_job
            for args in (("PTTL", key), ("HMGET", key, "workspace_id", "status"))))
        gone: list[tuple[str, object]] = []
        lasting: list[str] = []
        for i, (job_id, score) in enumerate(entries):
            ttls, fields = looks[2 * i * n:2 * (i + 1) * n:2], looks[2 * i * n + 1:2 * (i + 1) * n:2]
            if all(int(ttl) == -2 for ttl in ttls):
                gone.append((job_id, score))
            elif finished_ttl_ms is not None:
                lasting += [key for key, ttl, (ws, status) in zip(keys[i], ttls, fields)
                            if int(ttl) == -1 and ws == workspace_id and status in FINAL]
        pruned = yield from _prune(index, gone)
        totals["pruned"] += pruned
        if lasting and finished_ttl_ms is not None:  # (lasting only with a finished_ttl_ms)
            given = yield Batch(tuple(calls.expire_finished(record=key, workspace_id=workspace_id,
                                                            finished_ttl_ms=finished_ttl_ms)
                                      for key in lasting))
            totals["expiring"] += sum(int(g) for g in given)
        if len(entries) < batch:
            return
        start += batch - pruned
