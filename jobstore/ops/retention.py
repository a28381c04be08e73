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

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .. import rules
from ..job import TERMINAL
from ..steps import Batch, Command, Primaries, Scan
from . import calls
from .context import Context, Op
from .records import job_keys, score_pairs

FINAL = frozenset(status.value for status in TERMINAL)
# SCAN steps of a sweep that found no index key between two records of where it is
MARK_EVERY = 16


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


class Budget:
    """What one sweep may still do: index entries examined plus dead letters dropped
    (``entries``, None: no bound) and time (``deadline`` on ``ctx.timer``, None: no bound)."""

    def __init__(self, ctx: Context, max_entries: int | None, max_seconds: float | None) -> None:
        self.timer = ctx.timer
        self.entries = max_entries
        self.deadline = None if max_seconds is None else ctx.timer() + max_seconds

    def left(self, wanted: int) -> int:
        """How many of ``wanted`` items the next step may take (0: the sweep stops here)."""
        if self.deadline is not None and self.timer() >= self.deadline:
            return 0
        return wanted if self.entries is None else max(0, min(wanted, self.entries))

    def spend(self, n: int) -> None:
        if self.entries is not None:
            self.entries -= n


def sweep(ctx: Context, batch: int, finished_ttl_ms: int | None = None,
          max_entries: int | None = None, max_seconds: float | None = None
          ) -> Op[dict[str, int]]:
    """Trim dead letters older than the store's ``dead_letter_ttl``, then walk the workspace
    indexes (SCAN for the index keys, per primary, then through each by rank, ``batch`` entries
    a step): drop the entries whose records are gone, give finished records without an
    expiry their enqueue's own ttl, else ``finished_ttl_ms`` (None: only those with their own).

    Bounded by ``max_entries`` (index entries examined plus dead letters dropped) and
    ``max_seconds`` (checked before each step); a run that stops at its bounds saves where it
    stopped (:attr:`StoreKeys.sweep`, per primary) and the next run resumes there, until a run
    reaches the end of every primary's keys (``complete``) and the next one begins a new cycle.
    Returns the counts: ``indexes``, ``entries`` (examined), ``pruned``, ``expiring`` (records
    given an expiry), ``dead_letters`` (dropped), and ``resumed`` (it began where an earlier
    run stopped), ``complete``."""
    totals = {"indexes": 0, "entries": 0, "pruned": 0, "expiring": 0, "dead_letters": 0,
              "resumed": False, "complete": False}
    budget = Budget(ctx, max_entries, max_seconds)
    if ctx.dead_letter_ttl_ms is not None:
        while (n := budget.left(batch)) > 0:
            (dropped,) = yield Batch((calls.trim_dead(
                dead=ctx.keys.dead, older_than_ms=ctx.dead_letter_ttl_ms, most=n),))
            totals["dead_letters"] += int(dropped)
            budget.spend(int(dropped))
            if int(dropped) < n:
                break
    nodes: list[str | None] = yield Primaries()
    names = [node or "standalone" for node in nodes]
    (state,) = yield Batch((calls.sweep_cursor(cursor=ctx.keys.sweep, start=names),))
    cycle, saved = str(state[0]), dict(zip(state[1::2], state[2::2]))
    totals["resumed"] = bool(saved)
    for node, name in zip(nodes, names):
        if saved.get(name) == "done":
            continue
        walk = _Walk(ctx, batch, finished_ttl_ms, totals, budget, cycle, name)
        if not (yield from walk.node(node, saved.get(name))):
            return totals
    totals["complete"] = True
    return totals


class _Walk:
    """The sweep of one primary's indexes, from where the last run stopped there."""

    def __init__(self, ctx: Context, batch: int, finished_ttl_ms: int | None,
                 totals: dict[str, int], budget: Budget, cycle: str, name: str) -> None:
        self.ctx, self.batch, self.finished_ttl_ms = ctx, batch, finished_ttl_ms
        self.totals, self.budget, self.cycle, self.name = totals, budget, cycle, name

    def mark(self, where: str) -> Op[None]:
        yield Batch((calls.sweep_cursor(cursor=self.ctx.keys.sweep,
                                        mark=(self.cycle, self.name, where)),))

    def node(self, node: str | None, saved: str | None) -> Op[bool]:
        """True when the walk reached the end of the primary's keys (marked done); False when
        the budget ran out (where it stopped marked)."""
        ctx = self.ctx
        pattern, head = ctx.keys.index("*"), ctx.keys.index("")[:-1]  # '<own prefix>:index:{'
        where = _where(saved)
        cursor, resume_index, resume_rank = where["scan"], where["index"], where["rank"]
        swept: list[str] = list(where["swept"])  # of the resumed SCAN step, by the last run
        server_was, unmarked = where["server"], 0
        while True:
            server, next_cursor, found = yield Scan(pattern, cursor, self.batch, node)
            if server_was and server != server_was:
                # a cursor means nothing to another server (a restart, a failover): start over
                cursor, resume_index, resume_rank, server_was, swept = "0", "", 0, "", []
                continue
            server_was = ""
            for index in sorted(set(found)):
                workspace_id = index[len(head):-1]
                if not index.startswith(head) or not index.endswith("}") or not workspace_id:
                    continue
                if index in swept:
                    continue  # swept by the run that stopped in this SCAN step
                rank = resume_rank if index == resume_index else 0
                self.totals["indexes"] += 1
                stopped = yield from _sweep_index(ctx, index, workspace_id, self.batch,
                                                  self.finished_ttl_ms, self.totals,
                                                  self.budget, rank)
                if stopped is not None:
                    yield from self.mark(_saved(server, cursor, index, stopped, swept))
                    return False
                swept.append(index)
            # Only the resumed SCAN step holds indexes the last run swept, named one by one (the
            # same cursor may hand out other keys once the server resized its table); past it,
            # every index is this run's, the one it stopped in gone by now (emptied) or not.
            resume_index, resume_rank, swept = "", 0, []
            if str(next_cursor) == "0":
                yield from self.mark("done")
                return True
            cursor, unmarked = next_cursor, unmarked + 1
            stopping = self.budget.left(1) == 0
            # recorded after a step that swept indexes, at a stop, and every MARK_EVERY steps
            # (SCAN steps that find no index cost no extra round trip): an interrupted run
            # resumes from the last one recorded
            if stopping or found or unmarked >= MARK_EVERY:
                yield from self.mark(_saved(server, cursor, "", 0))
                unmarked = 0
            if stopping:
                return False


def _saved(server: str, cursor: str, index: str, rank: int, swept: Sequence[str] = ()) -> str:
    """Where a run stopped: the SCAN step (``cursor`` of ``server``), the index it stopped in and
    the rank reached there, and the indexes of that step it swept whole."""
    return json.dumps({"server": server, "scan": str(cursor), "index": index, "rank": rank,
                       "swept": list(swept)})


def _where(saved: str | None) -> dict[str, Any]:
    """Where the last run stopped on a primary (nothing saved, or unreadable: its start)."""
    start = {"server": "", "scan": "0", "index": "", "rank": 0, "swept": []}
    try:
        where = json.loads(saved) if saved else {}
    except ValueError:
        return start
    if (not isinstance(where, dict) or set(where) != set(start)
            or not isinstance(where["swept"], list)):
        return start
    return where


def _sweep_index(ctx: Context, index: str, workspace_id: str, batch: int,
                 finished_ttl_ms: int | None, totals: dict[str, int], budget: Budget,
                 start: int = 0) -> Op[int | None]:
    """One index, ``batch`` entries a step, oldest first, by rank from ``start``: a step reads
    exactly that many (fewer when the budget has fewer left). New jobs rank last; an entry that
    moves past the walk meanwhile (another sweep or a list removed some before it) waits for
    the next sweep. None when the index was walked to its end; else the rank to resume at."""
    known = ctx.strategy.routing(workspace_id).known
    n = len(known)
    while True:
        step = budget.left(batch)
        if step == 0:
            return start
        (entries,) = yield Batch((Command(("ZRANGE", index, start, start + step - 1,
                                           "WITHSCORES")),))
        entries = score_pairs(entries)
        totals["entries"] += len(entries)
        budget.spend(len(entries))
        keys = [job_keys(known, workspace_id, job_id) for job_id, _ in entries]
        looks = yield Batch(tuple(
            Command(args) for per_job in keys for key in per_job
            for args in (("PTTL", key), ("HMGET", key, "workspace_id", "status", rules.TTL))))
        gone: list[tuple[str, object]] = []
        lasting: list[str] = []
        for i, (job_id, score) in enumerate(entries):
            ttls, fields = looks[2 * i * n:2 * (i + 1) * n:2], looks[2 * i * n + 1:2 * (i + 1) * n:2]
            if all(int(ttl) == -2 for ttl in ttls):
                gone.append((job_id, score))
            else:  # finished without an expiry: the store's retention, or its enqueue's own
                lasting += [key for key, ttl, (ws, status, own) in zip(keys[i], ttls, fields)
                            if (finished_ttl_ms is not None or own) and int(ttl) == -1
                            and ws == workspace_id and status in FINAL]
        pruned = yield from _prune(index, gone)
        totals["pruned"] += pruned
        if lasting:
            given = yield Batch(tuple(calls.expire_finished(
                record=key, workspace_id=workspace_id, finished_ttl_ms=finished_ttl_ms)
                for key in lasting))
            totals["expiring"] += sum(int(g) for g in given)
        if len(entries) < step:
            return None
        start += step - pruned
