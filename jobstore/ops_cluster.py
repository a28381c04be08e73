"""The write operations on Redis Cluster, where a job's keys sit in several slots.

No script or MULTI can span slots, so each operation is a fixed sequence of single-slot scripts,
each safe to re-send (op markers) and each re-checking what it depends on. docs/cluster.md
states what is atomic and what verify --repair converges; in short:

- enqueue: records in write order (source first: it arbitrates duplicate ids), then the index,
  then the queue entry (pushed once per call). An enqueue interrupted after its first record is
  completed by retrying it with the same ``job_id`` and the same content.
- update_status: the first record in read order decides the move atomically; the others are then
  set to the same fields.
- delete: every known record, last-written first, each leaving a tombstone, then the index.
- dequeue: the entry moves into a claim list of this call, a ``claimed`` key arbitrates the job
  (so a duplicated entry cannot hand it out twice), then the records move to running. An entry
  that cannot be parsed, or whose record cannot be decoded, is buried in the dead-letter list.

Reads (get, list) are the same as on standalone Redis: redis-py pipelines across nodes.
"""

from __future__ import annotations

import time

from .dead_letters import DeadLetter, entry_problem, printable
from .errors import CorruptRecord, EnqueueIncomplete, InvalidTransition, JobExists, JobNotFound
from .job import Job, JobStatus, record_problem
from .ops import (Context, Op, _keys, addressed, as_record, corrupt, fenced_script,
                  update_outcome)
from .scripts import (BURY, CREATE_RECORD, DELETE_RECORD, MIRROR, PUSH_ONCE, RETURN_CLAIMS,
                      UPDATE_STATUS)
from .steps import Batch, Command, Script

CLAIM_TTL = 3600
TOMB_TTL = 86400


def _marker(ctx: Context, token: str, key: str) -> str:
    """The op marker of one call's script on one record key: in the key's slot, and of that key
    alone (records whose keys share a hash tag share a slot, and must not share a marker)."""
    return ctx.keys.op(f"{token}:{key}", near=key)


def _same_job(stored: dict, fields: dict) -> bool:
    """An existing record may be an interrupted enqueue of this job: same job, still pending.
    (It is one only if it is not indexed yet: the index is an enqueue's last step.)"""
    return stored.get("status") == "pending" and all(
        stored.get(k) == fields[k] for k in ("workspace_id", "action", "params")
    )


def _indexed(ctx: Context, jobs: list[Job]) -> Op:
    """The ids of ``jobs`` in their workspace index: jobs whose enqueue finished."""
    scores = yield Batch(tuple(
        Command(("ZSCORE", ctx.keys.index(job.workspace_id), job.job_id)) for job in jobs
    ))
    return {job.job_id for job, score in zip(jobs, scores) if score is not None}


def enqueue_many(ctx: Context, jobs: list[tuple[Job, dict[str, str]]]) -> Op:
    token = ctx.new_token()
    routing = {job.job_id: ctx.strategy.routing(job.workspace_id) for job, _ in jobs}
    fields_of = {job.job_id: fields for job, fields in jobs}
    # Every record key but the first written one (which arbitrates duplicate ids itself): a
    # schema this routing does not write (the target in 'off'), or a later written one that
    # already holds a job (written in target-only, say). Read before anything is written, so
    # that a taken id leaves nothing half-written.
    checks = []
    for job, _ in jobs:
        writes = _keys(routing[job.job_id].writes, job.workspace_id, job.job_id)
        for key in _keys(routing[job.job_id].known, job.workspace_id, job.job_id):
            if key != writes[0]:
                checks.append((job, key, key in writes))
    taken, maybe = set(), {}
    if checks:
        found = yield Batch(tuple(Command(("HGETALL", key)) for _, key, _ in checks))
        for (job, _, written), record in zip(checks, found):
            if not record:
                continue
            if written and _same_job(as_record(record), fields_of[job.job_id]):
                # An interrupted enqueue of this job, unless indexed.
                maybe[job.job_id] = (job, as_record(record))
            else:
                taken.add(job.job_id)
    maybe = [pair for job_id, pair in maybe.items() if job_id not in taken]
    if maybe:
        done = yield from _indexed(ctx, [job for job, _ in maybe])
        taken |= done
        for job, record in maybe:
            if job.job_id not in done:  # complete it with its own record: the stamps must match
                fields_of[job.job_id].update(record)
    failed: dict[str, str] = {}
    existing = [job.job_id for job, _ in jobs if job.job_id in taken]
    todo = [(job, dict(fields)) for job, fields in jobs if job.job_id not in taken]
    for position in range(max((len(routing[j.job_id].writes) for j, _ in todo), default=0)):
        calls, subjects = [], []
        for job, fields in todo:
            writes = routing[job.job_id].writes
            if position < len(writes):
                key = writes[position].job_key(job.workspace_id, job.job_id)
                flat = [part for item in fields.items() for part in item]
                calls.append(Script(CREATE_RECORD, (_marker(ctx, token, key), key, ctx.keys.tomb(key)),
                                    (ctx.marker_ttl, *flat)))
                subjects.append((job, fields))
        # A job Redis refuses (OOM, a key in the way) fails alone; the batch goes on. (A job
        # that fails after its first record is completed by enqueueing it again, same job_id.)
        replies = yield Batch(tuple(calls), tolerate_errors=True)
        for (job, _), reply in zip(subjects, replies):
            if isinstance(reply, Exception):
                failed[job.job_id] = str(reply)
        subjects_replies = [(subject, reply) for subject, reply in zip(subjects, replies)
                            if not isinstance(reply, Exception)]
        if position == 0:
            kept, unsure = [], []
            for (job, fields), reply in subjects_replies:
                if reply[0] == "exists":
                    stored = as_record(reply[1])
                    if not _same_job(stored, fields):
                        existing.append(job.job_id)
                        continue
                    fields.update(stored)  # complete the interrupted enqueue with its own record
                    unsure.append(job)
                kept.append((job, fields))
            if unsure:
                # An indexed job finished its enqueue: this is a second enqueue of its id.
                done = yield from _indexed(ctx, unsure)
                existing.extend(job.job_id for job in unsure if job.job_id in done)
                kept = [(job, fields) for job, fields in kept if job.job_id not in done]
            todo = kept
        todo = [(job, fields) for job, fields in todo if job.job_id not in failed]
    for step in ("push", "index"):
        if not todo:
            break
        if step == "push":
            calls = tuple(
                Script(PUSH_ONCE, (ctx.keys.op(f"{token}-{job.job_id}", near=ctx.keys.queue), ctx.keys.queue),
                       (ctx.marker_ttl, ctx.keys.queue_entry(job.workspace_id, job.job_id,
                                                             fields["created_at"])))
                for job, fields in todo)
        else:  # last: the index marks the enqueue finished (see _same_job)
            calls = tuple(
                Command(("ZADD", ctx.keys.index(job.workspace_id), "NX", fields["created_at"], job.job_id))
                for job, fields in todo)
        replies = yield Batch(calls, tolerate_errors=True)
        for (job, _), reply in zip(todo, replies):
            if isinstance(reply, Exception):
                failed[job.job_id] = str(reply)
        todo = [(job, fields) for job, fields in todo if job.job_id not in failed]
    created = [Job.from_hash(fields) for _, fields in todo]
    if failed:
        raise EnqueueIncomplete(failed, created, existing)
    if existing:
        order = {job.job_id: position for position, (job, _) in enumerate(jobs)}
        raise JobExists(sorted(existing, key=order.__getitem__), created=created)  # batch order
    return created


def enqueue(ctx: Context, job: Job, fields: dict[str, str]) -> Op:
    (created,) = yield from enqueue_many(ctx, [(job, fields)])
    return created


def _move(ctx: Context, token: str, keys: tuple[str, ...], workspace_id: str, job_id: str,
          status: JobStatus, allowed: str, fields: dict[str, str], stamp: str = "",
          operation: str = "update_status") -> Op:
    """The first record (in read order) decides and takes the move; the others follow it.

    ``stamp``: the ``created_at`` the record must have (a claim through a queue entry).

    :raises CorruptRecord: a copy cannot be decoded; nothing was written.
    """
    flat = [part for item in fields.items() for part in item]
    if len(keys) > 1:
        # The copies sit in different slots, and the first one's script can check only itself:
        # read them all first, so that no copy moves while another cannot be decoded. (A copy
        # broken between this read and its MIRROR is still written: a race, not a state.)
        records = yield Batch(tuple(Command(("HGETALL", key)) for key in keys))
        for key, record in zip(keys, map(as_record, records)):
            problem = record_problem(record) if addressed(record, workspace_id) else None
            if problem is not None:
                raise corrupt(ctx, operation, key, *problem)

    for position, key in enumerate(keys):
        (reply,) = yield Batch((fenced_script(
            ctx, UPDATE_STATUS, (_marker(ctx, token, key), key),
            (workspace_id, ctx.marker_ttl, allowed, ctx.max_record_bytes, stamp, *flat),
        ),))
        if reply[0] == "missing":
            continue
        job = update_outcome(ctx, reply, job_id, workspace_id, status, operation)
        rest = keys[position + 1:]
        if rest:
            # The move is taken; the other copies follow it with the record's own fields.
            record = as_record(reply[1])
            moved = {k: record[k] for k in (*fields, "updated_at") if k in record}
            flat_moved = [part for item in moved.items() for part in item]
            yield Batch(tuple(
                Script(MIRROR, (_marker(ctx, token, other), other),
                       (workspace_id, ctx.marker_ttl, *flat_moved))
                for other in rest
            ))
        return job
    raise JobNotFound(job_id, workspace_id)


def update_status(ctx: Context, job_id: str, workspace_id: str, status: JobStatus,
                  changes: dict[str, str]) -> Op:
    from .job import statuses_allowed_before

    routing = ctx.strategy.routing(workspace_id)
    allowed = " ".join(s.value for s in statuses_allowed_before(status))
    fields = {"status": status.value, **changes, "updated_at": repr(ctx.clock())}
    return (yield from _move(ctx, ctx.new_token(), _keys(routing.touched, workspace_id, job_id),
                             workspace_id, job_id, status, allowed, fields))


def delete(ctx: Context, job_id: str, workspace_id: str) -> Op:
    token = ctx.new_token()
    keys = _keys(ctx.strategy.routing(workspace_id).known, workspace_id, job_id)
    # What is deleted, by incarnation (created_at): every slot's tombstone names each of them, so
    # a copy running beside the delete cannot bring any of them back into a slot already cleared.
    found = yield Batch(tuple(Command(("HGETALL", key)) for key in keys), tolerate_errors=True)
    stamps = sorted({(r.get("created_at") or "") for r in found
                     if isinstance(r, dict) and r.get("workspace_id") == workspace_id})
    deleted = False
    for key in reversed(keys):  # the source last: while it stands, the job still reads
        (reply,) = yield Batch((Script(
            DELETE_RECORD, (_marker(ctx, token, key), key, ctx.keys.tomb(key)),
            (workspace_id, ctx.marker_ttl, TOMB_TTL, *stamps),
        ),))
        deleted = deleted or bool(reply)
    if deleted:
        yield Batch((Command(("ZREM", ctx.keys.index(workspace_id), job_id)),))
    return deleted


def _bury(ctx: Context, entry: str, reason: str, key: str | None = None,
          field: str | None = None) -> Op:
    """Write one dead letter (once, however often the step is re-sent) and report it."""
    letter = DeadLetter(printable(entry), reason, ctx.clock(), key, field)
    dead = ctx.keys.dead
    yield Batch((Script(BURY, (ctx.keys.op(ctx.new_token(), near=dead), dead),
                        (ctx.marker_ttl, letter.to_json(), ctx.max_dead_letters)),))
    ctx.events.dead_letter(letter)  # a record that cannot be decoded was reported by _move


def _claim(ctx: Context, token: str, entry: str) -> Op:
    """The job of one queue entry, now running and ours; None when it is not to be run."""
    problem = entry_problem(entry)
    if problem is not None:
        yield from _bury(ctx, entry, problem)
        return None
    workspace_id, job_id, stamp = ctx.keys.parse_queue_entry(entry)
    arbiter = ctx.keys.claimed(workspace_id, job_id, stamp)
    (won,) = yield Batch((Command(("SET", arbiter, token, "NX", "EX", CLAIM_TTL)),))
    if won is None:
        (holder,) = yield Batch((Command(("GET", arbiter)),))
        if holder != token:
            return None  # another worker claimed it (a duplicated entry)
    keys = _keys(ctx.strategy.routing(None).touched, workspace_id, job_id)
    fields = {"status": JobStatus.RUNNING.value, "updated_at": repr(ctx.clock())}
    try:
        return (yield from _move(ctx, token, keys, workspace_id, job_id, JobStatus.RUNNING,
                                 JobStatus.PENDING.value, fields, stamp, operation="dequeue"))
    except (InvalidTransition, JobNotFound):
        return None  # cancelled, finished or deleted meanwhile: drop the entry
    except CorruptRecord as exc:  # nothing written; the record stays as it is
        yield from _bury(ctx, entry, exc.reason, exc.key, exc.field)
        return None


def dequeue(ctx: Context, timeout: float | None) -> Op:
    token = ctx.new_token()
    queue, claim = ctx.keys.queue, ctx.keys.claim(token)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        (moved,) = yield Batch((Command(("LMOVE", queue, claim, "RIGHT", "LEFT")),))
        if moved is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            wait = ctx.block_slice if remaining is None else max(0.01, min(remaining, ctx.block_slice))
            (moved,) = yield Batch((Command(("BLMOVE", queue, claim, "RIGHT", "LEFT", round(wait, 3))),))
            if moved is None:
                continue
        # A re-sent LMOVE may have moved a second entry: claim the oldest, return the rest.
        (entries,) = yield Batch((Command(("LRANGE", claim, 0, -1)),))
        job = None
        while entries and job is None:
            entry = entries.pop()  # the oldest is at the tail
            job = yield from _claim(ctx, token, entry)
            yield Batch((Command(("RPOP", claim)),))
        yield Batch((Script(RETURN_CLAIMS, (claim, queue), ()),))
        if job is not None:
            return job
