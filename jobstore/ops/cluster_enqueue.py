"""Redis Cluster's enqueue (jobstore.ops.cluster re-exports it): records in write order (source
first: it arbitrates duplicate ids), then the queue entry (pushed once per call), then the index,
which marks the enqueue finished. An enqueue interrupted after its first record is completed by
retrying it with the same ``job_id`` and the same content; one re-sent after its last step (its
records carry its token) answers with its job, as on standalone Redis."""

from __future__ import annotations

from ..errors import EnqueueIncomplete, JobExists
from ..job import Job, parse_time
from ..rules import OP
from ..steps import Batch, Call, Command
from . import calls as build
from .context import SPENT_PER_CALL, Context, Op, spent_markers
from .records import as_record, job_keys
from .writes import queue_entry


def _same_job(stored: dict[str, str], fields: dict[str, str]) -> bool:
    """An existing record may be an interrupted enqueue of this job: same job, still pending.
    (It is one only if it is not indexed yet: the index is an enqueue's last step.)"""
    return stored.get("status") == "pending" and all(
        stored.get(k) == fields[k] for k in ("workspace_id", "action", "params")
    )


def _indexed(ctx: Context, jobs: list[tuple[Job, str]]) -> Op[set[str]]:
    """The ids of ``jobs`` (each with the created_at of its stored record) in their workspace
    index under that record's score: jobs whose enqueue finished. An entry under another score
    is an earlier job's of the id (expired or deleted, its entry not pruned yet), not this one's."""
    scores = yield Batch(tuple(
        Command(("ZSCORE", ctx.keys.index(job.workspace_id), job.job_id)) for job, _ in jobs
    ))
    return {job.job_id for (job, created_at), score in zip(jobs, scores)
            if score is not None and float(score) == (parse_time(created_at) or 0.0)}


def enqueue_many(ctx: Context, jobs: list[tuple[Job, dict[str, str]]]) -> Op[list[Job]]:
    token = ctx.new_token()
    routing = {job.job_id: ctx.strategy.routing(job.workspace_id) for job, _ in jobs}
    fields_of = {job.job_id: fields for job, fields in jobs}
    # Every record key but the first written one (which arbitrates duplicate ids itself): a
    # schema this routing does not write (the target in 'off'), or a later written one that
    # already holds a job (written in target-only, say). Read before anything is written, so
    # that a taken id leaves nothing half-written.
    checks = []
    for job, _ in jobs:
        writes = job_keys(routing[job.job_id].writes, job.workspace_id, job.job_id)
        for key in job_keys(routing[job.job_id].known, job.workspace_id, job.job_id):
            if key != writes[0]:
                checks.append((job, key, key in writes))
    taken: set[str] = set()
    interrupted: dict[str, tuple[Job, dict[str, str]]] = {}  # by job id: (job, its record)
    if checks:
        found = yield Batch(tuple(Command(("HGETALL", key)) for _, key, _ in checks))
        for (job, _, written), record in zip(checks, found):
            if not record:
                continue
            if written and _same_job(as_record(record), fields_of[job.job_id]):
                # An interrupted enqueue of this job, unless indexed.
                interrupted[job.job_id] = (job, as_record(record))
            else:
                taken.add(job.job_id)
    maybe = [pair for job_id, pair in interrupted.items() if job_id not in taken]
    finished: dict[str, Job] = {}  # by job id: jobs this very call enqueued (it is re-sent)
    if maybe:
        done = yield from _indexed(ctx, [(job, record.get("created_at", "")) for job, record in maybe])
        for job, record in maybe:
            if job.job_id not in done:  # complete it with its own record: the stamps must match
                fields_of[job.job_id].update(record)
            elif record.get(OP) == fields_of[job.job_id][OP]:
                # Written by this call (its token): the call re-sent after its last step, as
                # redis-py re-sends one whose reply was lost. It answers with its job.
                finished[job.job_id] = Job.from_hash(record, codec=ctx.codec)
            else:
                taken.add(job.job_id)
    failed: dict[str, str] = {}
    existing = [job.job_id for job, _ in jobs if job.job_id in taken]
    todo = [(job, dict(fields)) for job, fields in jobs
            if job.job_id not in taken and job.job_id not in finished]
    for position in range(max((len(routing[j.job_id].writes) for j, _ in todo), default=0)):
        calls: list[Call] = []
        subjects: list[tuple[Job, dict[str, str]]] = []
        for job, fields in todo:
            schemas = routing[job.job_id].writes
            if position < len(schemas):
                key = schemas[position].job_key(job.workspace_id, job.job_id)
                calls.append(build.create_record(
                    record=key, tombstone=ctx.keys.tomb(key), token=fields[OP],
                    incarnation=f"{job.workspace_id}:{fields['created_at']}", fields=fields))
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
            kept: list[tuple[Job, dict[str, str]]] = []
            unsure: list[tuple[Job, str]] = []
            for (job, fields), reply in subjects_replies:
                if reply[0] == "exists":
                    stored = as_record(reply[1])
                    if not _same_job(stored, fields):
                        existing.append(job.job_id)
                        continue
                    fields.update(stored)  # complete the interrupted enqueue with its own record
                    unsure.append((job, fields["created_at"]))
                kept.append((job, fields))
            if unsure:
                # An indexed job finished its enqueue: this is a second enqueue of its id.
                done = yield from _indexed(ctx, unsure)
                existing.extend(job.job_id for job, _ in unsure if job.job_id in done)
                kept = [(job, fields) for job, fields in kept if job.job_id not in done]
            todo = kept
        todo = [(job, fields) for job, fields in todo if job.job_id not in failed]
    for step in ("push", "index"):
        if not todo:
            break
        if step == "push":
            pushed = [ctx.keys.op(f"{token}-{job.job_id}", near=ctx.keys.queue) for job, _ in todo]
            # The markers of earlier pushes that have their answer (no re-send of them can come
            # any more) go with this push, in the same script: a finished enqueue leaves no key.
            spent = spent_markers(ctx, SPENT_PER_CALL * len(todo))
            calls = list(
                build.push_once(marker=marker, queue=ctx.keys.queue,
                                spent=spent[n * SPENT_PER_CALL:(n + 1) * SPENT_PER_CALL],
                                marker_ttl=ctx.marker_ttl,
                                entry=queue_entry(ctx, job.workspace_id, job.job_id,
                                                  fields["created_at"]))
                for n, (marker, (job, fields)) in enumerate(zip(pushed, todo)))
        else:  # last: the index marks the enqueue finished (see _same_job)
            # The score is this job's even where an expired job of the id left its entry, so
            # that no prune of that entry (jobstore.ops.retention) can take this job's.
            calls = list(
                Command(("ZADD", ctx.keys.index(job.workspace_id),
                         repr(parse_time(fields["created_at"]) or 0.0), job.job_id))
                for job, fields in todo)
        replies = yield Batch(tuple(calls), tolerate_errors=True)
        for (job, _), reply in zip(todo, replies):
            if isinstance(reply, Exception):
                failed[job.job_id] = str(reply)
        if step == "push":
            ctx.spent_markers.extend(marker for marker, reply in zip(pushed, replies)
                                     if not isinstance(reply, Exception))
        todo = [(job, fields) for job, fields in todo if job.job_id not in failed]
    made = {job.job_id: Job.from_hash(fields, codec=ctx.codec) for job, fields in todo}
    made.update(finished)
    created = [made[job.job_id] for job, _ in jobs if job.job_id in made]  # batch order
    if failed:
        raise EnqueueIncomplete(failed, created, existing)
    if existing:
        order = {job.job_id: position for position, (job, _) in enumerate(jobs)}
        raise JobExists(sorted(existing, key=order.__getitem__), created=created)  # batch order
    return created


def enqueue(ctx: Context, job: Job, fields: dict[str, str]) -> Op[Job]:
    (created,) = yield from enqueue_many(ctx, [(job, fields)])
    return created
