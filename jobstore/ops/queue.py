"""The standalone queue: dequeue (claim the oldest pending job, or one whose lease ran out,
waiting server-side for one) and extend (renew a claim's lease)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..dead_letters import DeadLetter
from ..errors import LeaseLost
from ..job import Job
from ..layout import CARRIED
from ..schema import KeySchema
from ..steps import Batch, Command, Pause, Refresh, Script
from . import calls
from .context import Context, Op, now, spent_markers
from .records import as_record, decode, fence, job_keys, stale
from .writes import carried_keys


def _dequeue_script(ctx: Context, source: str, marker: str, token: str, lease_ms: int,
                    resolved: str = "", spent: Sequence[str] = ()) -> Script:
    # Routing is read afresh for every attempt, so a long wait follows a phase switch.
    routing = ctx.strategy.routing(None)
    stamp, iso = now(ctx)
    return calls.dequeue(
        fence(ctx), source=source, queue=ctx.keys.queue, marker=marker, dead=ctx.keys.dead,
        leases=ctx.keys.leases, legacy_queue=ctx.legacy_queue, queue_mode=ctx.keys.queue_mode,
        spent=spent, marker_ttl=ctx.marker_ttl, now=stamp, scan=ctx.dequeue_scan,
        max_dead_letters=ctx.max_dead_letters, lease_ms=lease_ms, max_attempts=ctx.max_attempts,
        token=token, resolved=resolved, iso=iso, finished_ttl_ms=ctx.finished_ttl_ms,
        schemas=tuple(map(_template, routing.touched)),
        others=tuple(map(_template, routing.untouched)))


def _template(schema: KeySchema) -> str:
    """A schema as the DEQUEUE script builds its record keys: its key template, or byte 3 and
    the name of a computed schema (its keys are carried by queue entries)."""
    return schema.lua_template if schema.lua_template is not None else "\x03" + schema.name


def resolve(ctx: Context, entry: str, workspace: str = "") -> str:
    """The computed schemas' keys of a queue entry that does not carry them all (enqueued before
    the store knew a computed schema), for the DEQUEUE script's ARGV[8]: those of every schema
    the strategy knows (the script reads the job in some, and expires a failed job in the
    others). ``workspace``: the one the script found for a bare job id."""
    head = ctx.keys.entry_head(entry)
    workspace_id, job_id, _ = ctx.keys.parse_queue_entry(entry)
    if ":" not in head:
        workspace_id, job_id = workspace, head
    known = ctx.strategy.routing(None).known
    return head + "".join(
        f"{CARRIED}{name}={key}" for name, key in carried_keys(known, workspace_id, job_id))


def buried(ctx: Context, letters: Iterable[DeadLetter | str]) -> None:
    """Report dead letters (written by this call) to the events."""
    for letter in letters:
        if isinstance(letter, str):
            letter = DeadLetter.from_json(letter)
        if letter.key is not None:
            ctx.events.corrupt_record(letter.key, letter.field or "", letter.reason,
                                      operation="dequeue")
        ctx.events.dead_letter(letter)


def _claimed(ctx: Context, reply: list[Any]) -> Job | None:
    """The job a DEQUEUE reply hands out, if any; its dead letters and expired leases reported."""
    if len(reply) > 2 and reply[2]:
        buried(ctx, reply[2])
    if len(reply) > 4 and reply[4]:
        for outcome, workspace_id in zip(reply[4][::2], reply[4][1::2]):
            ctx.events.lease_expired(workspace_id, outcome)
    if reply[0] in ("job", "replayed") and reply[1]:
        # The op marker's JSON text, {key, record as a flat list, ...}: one string to read.
        return decode(ctx, "dequeue", reply[3] if len(reply) > 3 else None,
                      as_record(json.loads(reply[1])[1]))
    return None


# How often a waiting dequeue looks again when the server answers its blocking wait at once
# (fakeredis, behind memory://), seconds.
UNBLOCKED_POLL = 0.05


def dequeue(ctx: Context, timeout: float | None, lease_ms: int | None = None) -> Op[Job | None]:
    """Claim the oldest pending job, or a job whose lease ran out. ``timeout``: 0 no wait, None
    wait forever, else seconds. ``lease_ms``: the claim's lease (default: the store's)."""
    marker = ctx.keys.op(ctx.new_token(), near=ctx.keys.queue)
    try:
        return (yield from _dequeue(ctx, timeout, lease_ms, marker))
    finally:
        ctx.spent_markers.append(marker)  # this call has its answer (or has given up)


def _dequeue(ctx: Context, timeout: float | None, lease_ms: int | None,
             marker: str) -> Op[Job | None]:
    token = marker.rsplit(":", 1)[1]
    spent = spent_markers(ctx, mine=marker)
    lease_ms = ctx.lease_ms if lease_ms is None else lease_ms
    queue = ctx.keys.queue
    claim = ctx.keys.claim(token)
    deadline = None if timeout is None else ctx.timer() + timeout
    resolved = ""
    while True:
        (reply,) = yield Batch((_dequeue_script(ctx, queue, marker, token, lease_ms, resolved,
                                                spent),))
        if stale(reply):
            yield Refresh()
            continue
        if reply[0] == "need":
            _claimed(ctx, reply)
            resolved = resolve(ctx, reply[5], reply[6])
            continue
        job = _claimed(ctx, reply)
        if reply[0] == "busy":
            continue  # only dropped or dead-lettered entries so far; look further
        if reply[0] != "empty":
            return job
        remaining = None if deadline is None else deadline - ctx.timer()
        if remaining is not None and remaining <= 0:
            return None
        # Block server-side for a new entry, moving it into this call's claim list, then claim
        # from that list at once: one round trip, and the script runs even when a lost reply
        # made redis-py re-send the BLMOVE (whatever either attempt moved is claimed or put back).
        # Short slices, so that a phase switch is seen soon and the socket never times out.
        # The claim list is leased first: if this process dies between the move and the claim,
        # a later dequeue puts the entry back (the list's lease runs out list_grace after the wait).
        wait = ctx.block_slice if remaining is None else max(0.01, min(remaining, ctx.block_slice))
        # While a compatible queue is shared, new jobs arrive there: wait at its oldest end.
        shared = ctx.legacy_queue and (reply[7] if len(reply) > 7 else "") != "left"
        waited = (ctx.legacy_queue, claim, "LEFT", "LEFT") if shared else (queue, claim, "RIGHT", "LEFT")
        began = ctx.timer()
        _, moved, reply = yield Batch(
            (calls.lease_list(leases=ctx.keys.leases, claim_list=claim,
                              stay_ms=int((wait + ctx.list_grace) * 1000)),
             Command(("BLMOVE", *waited, round(wait, 3))),
             _dequeue_script(ctx, claim, marker, token, lease_ms))
        )
        while stale(reply) or reply[0] == "need":  # the claim list must be drained now
            if stale(reply):
                yield Refresh()  # under the fresh routing
            else:
                _claimed(ctx, reply)
                resolved = resolve(ctx, reply[5], reply[6])
            (reply,) = yield Batch((_dequeue_script(ctx, claim, marker, token, lease_ms,
                                                    resolved),))
        job = _claimed(ctx, reply)
        if reply[0] in ("job", "replayed"):
            return job
        if moved is None and ctx.timer() - began < wait / 2:
            # The server answered at once without waiting (the embedded fakeredis does): wait
            # here, a little at a time, rather than ask again at once (a busy loop that, on
            # asyncio, could hold the event loop).
            yield Pause(min(UNBLOCKED_POLL, wait))


def extend(ctx: Context, job: Job, lease_ms: int) -> Op[None]:
    """Renew ``job``'s lease for ``lease_ms`` from now (server time), while the job's record
    is running under its claim (one script reads the record and renews the lease).

    :raises LeaseLost: the claim has ended (taken over, finished, deleted; its lease is dropped).
    """
    while True:
        keys = job_keys(ctx.strategy.routing(job.workspace_id).touched, job.workspace_id, job.job_id)
        (until,) = yield Batch((calls.extend(fence(ctx), leases=ctx.keys.leases, records=keys,
                                             claim=job.claim or "", lease_ms=lease_ms,
                                             workspace_id=job.workspace_id),))
        if not stale(until):
            break
        yield Refresh()
    if not until:
        raise LeaseLost(job.job_id, job.claim or "", detail="its claim has ended")
    return None

