"""The standalone writes: enqueue (one or many), update_status and delete, each one script call
per attempt (a stale routing state makes it refresh and try again)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import EnqueueIncomplete, JobExists
from ..job import Job, JobStatus
from ..rules import OP
from ..schema import KeySchema
from ..steps import Batch, Refresh, Refused, Script
from ..strategy import Routing
from . import calls
from .context import Context, Op, now, spent_markers
from .records import fence, job_keys, move, stale, update_outcome

# Jobs per ENQUEUE call of an enqueue_many: a call runs about 15 us per job in Redis, which
# serves nothing else meanwhile; larger batches are several calls in one pipeline.
ENQUEUE_CHUNK = 100


def enqueue_script(ctx: Context, jobs: Sequence[tuple[Job, dict[str, str]]]) -> Script:
    """One ENQUEUE call for ``jobs``."""
    sent = []
    for job, fields in jobs:
        ws, job_id = job.workspace_id, job.job_id
        routing = ctx.strategy.routing(ws)
        writes = [s.job_key(ws, job_id) for s in routing.writes]
        checks = [key for key in (s.job_key(ws, job_id) for s in routing.known) if key not in writes]
        sent.append(calls.EnqueuedJob(
            tombstone=ctx.keys.gone(ws, job_id), workspace_index=ctx.keys.index(ws), writes=writes,
            checks=checks, token=fields[OP], job_id=job_id, score=repr(job.created_at),
            entry=queue_entry(ctx, ws, job_id, fields["created_at"], routing.known),
            fields=fields))
    return calls.enqueue(fence(ctx), queue=ctx.keys.queue, legacy_queue=ctx.legacy_queue,
                         queue_mode=ctx.keys.queue_mode, jobs=sent)


def carried_keys(schemas: Iterable[KeySchema], workspace_id: str,
                 job_id: str) -> list[tuple[str, str]]:
    """``(name, key)`` of the computed schemas among ``schemas``: what a queue entry carries."""
    return [(s.name, s.job_key(workspace_id, job_id)) for s in schemas if s.computed]


def queue_entry(ctx: Context, workspace_id: str, job_id: str, stamp: str,
                known: Iterable[KeySchema] | None = None) -> str:
    """The queue entry of a job enqueued now: its ids, stamp, and the keys the dequeue script
    cannot build itself (every computed schema the job may be read from: ``known``, the
    routing's, when the caller has it)."""
    if known is None:
        known = ctx.strategy.routing(workspace_id).known
    return ctx.keys.queue_entry(workspace_id, job_id, stamp,
                                carried_keys(known, workspace_id, job_id))


def outcomes_of(reply: Any) -> list[Any]:
    """Each job's outcome of an ENQUEUE call as a list, ``[word]`` or ``['error', message]``,
    in the call's order. The script answers with the words alone in one string (space-separated:
    one line to read), or, when Redis refused a job's write, with a word or an error per job."""
    if isinstance(reply, str):
        return [[word] for word in reply.split(" ")]
    return [[item] if isinstance(item, str) else item for item in reply]


def enqueue_outcome(job: Job, reply: list[Any]) -> Job | None:
    """The enqueued job, or None when the id already existed. A re-sent call whose first
    attempt created the job (``replayed``) answers with the job this call sent: what the key
    holds now may be another incarnation, even another workspace's."""
    if reply[0] == "exists":
        return None
    return job


def enqueue(ctx: Context, job: Job, fields: dict[str, str]) -> Op[Job]:
    # fields carry the call's token (OP): the record names the call that created it.
    while stale(reply := (yield Batch((enqueue_script(ctx, [(job, fields)]),)))[0]):
        yield Refresh()
    outcome = outcomes_of(reply)[0]
    if outcome[0] == "error":  # as if Redis had refused the command itself (RedisCommandError)
        raise Refused(outcome[1])
    result = enqueue_outcome(job, outcome)
    if result is None:
        raise JobExists([job.job_id])
    return result


def enqueue_replies(ctx: Context, jobs: Sequence[tuple[Job, dict[str, str]]],
                    tolerate: bool = True) -> Op[list[Any]]:
    """Each job's ENQUEUE reply (``created``, ``replayed``, ``exists``, ``error``), in one
    pipeline of ENQUEUE calls of up to ENQUEUE_CHUNK jobs each (again for those a stale routing
    state fenced out). ``tolerate``: a call Redis refuses as a whole is the reply of each of its
    jobs (an exception); else it raises."""
    replies: list[Any] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    while todo:
        chunks = [todo[i:i + ENQUEUE_CHUNK] for i in range(0, len(todo), ENQUEUE_CHUNK)]
        sent = yield Batch(tuple(enqueue_script(ctx, [jobs[i] for i in chunk]) for chunk in chunks),
                           tolerate_errors=tolerate)
        for chunk, reply in zip(chunks, sent):
            outcomes = (None if isinstance(reply, Exception) or stale(reply)
                        else outcomes_of(reply))
            for n, i in enumerate(chunk):
                replies[i] = reply if outcomes is None else outcomes[n]
        todo = [i for i in todo if stale(replies[i])]
        if todo:
            yield Refresh()
    return replies


def enqueue_many(ctx: Context, jobs: list[tuple[Job, dict[str, str]]]) -> Op[list[Job]]:
    # A job Redis refuses (OOM, a key in the way) is that job's failure: nothing of it was
    # written, and the rest of the batch goes on.
    replies = yield from enqueue_replies(ctx, jobs)
    created: list[Job] = []
    existing: list[str] = []
    failed: dict[str, str] = {}
    for (job, _), reply in zip(jobs, replies):
        if isinstance(reply, Exception) or reply[0] == "error":
            failed[job.job_id] = str(reply) if isinstance(reply, Exception) else reply[1]
            continue
        result = enqueue_outcome(job, reply)
        if result is None:
            existing.append(job.job_id)
        else:
            created.append(result)
    if failed:
        raise EnqueueIncomplete(failed, created, existing)
    if existing:
        raise JobExists(existing, created=created)
    return created


def update_status(
    ctx: Context,
    job_id: str,
    workspace_id: str,
    status: JobStatus,
    changes: dict[str, str],
    claim: str | None = None,
    ttl_ms: int | None = None,
) -> Op[Job]:
    (reply,) = yield from moved(ctx, job_id, workspace_id, status, changes, claim, ttl_ms)
    return update_outcome(ctx, reply, job_id, workspace_id, status, claim=claim)


def moved(ctx: Context, job_id: str, workspace_id: str, status: JobStatus,
          changes: dict[str, str], claim: str | None, ttl_ms: int | None,
          joined: Callable[[Script], Script | None] | None = None,
          shared: list[str] | None = None) -> Op[list[Any]]:
    """Send a standalone move (UPDATE_STATUS) until it has an answer; the call's replies.

    ``joined``: the call to send with the move (finish: the move joined with its claim, as one
    FINISH call), or None to build the move again (the routing state changed meanwhile); its
    reply's first part is the move's. A stale routing state makes it refresh and try again; a
    marker that is another call's (``not_mine``: nothing was written), draw another.
    ``shared``: the op marker the move shares with the rest of its call (finish's, both halves'),
    as a one-item list the move replaces it in when it draws another; the caller owns it (never
    deleted as spent here, put among the spent markers by the caller). None: a marker of the
    move's own."""
    stamp, iso = now(ctx)
    fields = {"status": status.value, **changes, "updated_at": stamp}
    near = ctx.keys.index(workspace_id) if shared is None else ctx.keys.queue
    marker = [ctx.keys.op(ctx.new_token(), near=near)] if shared is None else shared
    spent = spent_markers(ctx, mine=marker[0])
    try:
        while True:
            routing = ctx.strategy.routing(workspace_id)
            call = move(
                ctx, marker=marker[0], records=job_keys(routing.touched, workspace_id, job_id),
                spent=spent, workspace_id=workspace_id, status=status, fields=fields,
                claim=claim or "", iso=iso, ttl_ms=ttl_ms)
            sent = call if joined is None else joined(call)
            if sent is None:
                continue
            (reply,) = yield Batch((sent,))
            if stale(reply):
                yield Refresh()
                continue
            first = reply if joined is None else reply[0]
            if first[0] == "not_mine":
                marker[0] = ctx.keys.op(ctx.new_token(), near=near)
                spent = []
                continue
            yield from expire_copies(ctx, first, routing, workspace_id, job_id)
            return reply if joined is not None else [reply]
    finally:
        if shared is None:
            ctx.spent_markers.append(marker[0])  # this call has its answer (or has given up)


def expire_copies(ctx: Context, reply: list[Any], routing: Routing, workspace_id: str,
                  job_id: str) -> Op[None]:
    """After a final move (``reply``: its UPDATE_STATUS reply) that sets an expiry, the job's
    copies the move did not update (known to the routing, not written in its phase) expire at
    the same time (docs/retention.md): one EXPIRE_COPY step, safe to re-send."""
    expiry = int(reply[3]) if reply[0] in ("updated", "replayed") and len(reply) > 3 else 0
    if expiry <= 0:
        return
    others = job_keys(routing.untouched, workspace_id, job_id)
    if others:
        yield Batch(tuple(calls.expire_copy(record=key, workspace_id=workspace_id, expiry=expiry)
                          for key in others))


def delete(ctx: Context, job_id: str, workspace_id: str) -> Op[bool]:
    token = ctx.new_token()
    while True:
        routing = ctx.strategy.routing(workspace_id)
        (reply,) = yield Batch((calls.delete(
            fence(ctx), tombstone=ctx.keys.gone(workspace_id, job_id),
            index=ctx.keys.index(workspace_id), leases=ctx.keys.leases,
            records=job_keys(routing.known, workspace_id, job_id), workspace_id=workspace_id,
            marker_ttl=ctx.marker_ttl, job_id=job_id, token=token),))
        if not stale(reply):
            return bool(reply)
        yield Refresh()

