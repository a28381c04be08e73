"""The reads: get (with dual's fallback and shadow reads), list and the dead letters. The same
on standalone Redis and on a Cluster (redis-py pipelines the commands across nodes there)."""

from __future__ import annotations

from ..dead_letters import DeadLetter
from ..errors import CorruptRecord
from ..job import Job, JobStatus
from ..steps import Batch, Command
from . import calls
from .context import Context, Op
from .records import addressed, as_record, decode, job_keys, owned, score_pairs
from .retention import prune_gone


def pick(ctx: Context, operation: str, keys: tuple[str, ...], records: list[dict[str, str]],
         workspace_id: str) -> tuple[int, Job | None]:
    """The first record, in read order, that belongs to the workspace (or has no workspace_id),
    decoded, and its position.

    :raises CorruptRecord: that record cannot be decoded (reported to the events first).
    """
    for position, (key, record) in enumerate(zip(keys, records)):
        if addressed(record, workspace_id):
            return position, decode(ctx, operation, key, record)
    return -1, None


def differing_fields(a: dict[str, str], b: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def get(ctx: Context, job_id: str, workspace_id: str) -> Op[Job | None]:
    routing = ctx.strategy.routing(workspace_id)
    schemas = routing.reads + routing.shadow
    keys = job_keys(schemas, workspace_id, job_id)
    if len(keys) > 1 and not routing.shadow and not ctx.cluster:
        # Two schemas to read (dual's fallback), standalone: the first record that answers, in
        # one command rather than a pipeline of one HGETALL per key.
        ((position, *found),) = yield Batch((calls.read_first(records=keys, workspace_id=workspace_id),))
        if not position:
            return None
        if position > 1:
            ctx.events.read_fallback(workspace_id)
        return decode(ctx, "get", keys[position - 1], as_record(found[0]))
    replies = yield Batch(tuple(Command(("HGETALL", key)) for key in keys))
    records = [as_record(r) for r in replies]
    n = len(routing.reads)
    position, job = pick(ctx, "get", keys[:n], records[:n], workspace_id)
    if position > 0:
        ctx.events.read_fallback(workspace_id)
    if job is not None:
        for shadow in records[len(routing.reads):]:
            if not owned(shadow, workspace_id):
                ctx.events.shadow_read(workspace_id, job_id, "missing", ("*",))
            else:
                diff = differing_fields(records[position], shadow)
                ctx.events.shadow_read(workspace_id, job_id, "mismatch" if diff else "match", diff)
    return job


def list_jobs(ctx: Context, workspace_id: str, status: JobStatus | None, limit: int,
              errors: str = "skip") -> Op[list[Job]]:
    """Newest first, from the workspace index; a status filter pages through it.

    A record that cannot be decoded is reported to the events and left out (``errors="skip"``),
    or raised (``errors="raise"``).

    A job whose records are gone (expired: docs/retention.md) is left out, and its index entry
    removed (:func:`jobstore.ops.retention.prune_gone`).
    """
    routing = ctx.strategy.routing(workspace_id)
    page = limit if status is None else max(limit, 100)
    found: list[Job] = []
    start = 0
    while len(found) < limit:
        (entries,) = yield Batch((Command(
            ("ZREVRANGE", ctx.keys.index(workspace_id), start, start + page - 1, "WITHSCORES")),))
        entries = score_pairs(entries)
        if not entries:
            break
        ids = [job_id for job_id, _ in entries]
        n = len(routing.reads)
        keys = [job_keys(routing.reads, workspace_id, job_id) for job_id in ids]
        replies = yield Batch(
            tuple(Command(("HGETALL", key)) for per_job in keys for key in per_job)
        )
        # entries read before their records: a job enqueued again since has another score
        gone = [entry for i, entry in enumerate(entries) if not any(replies[i * n:(i + 1) * n])]
        if gone:
            # removed entries were before the next page: it starts that much earlier
            start -= yield from prune_gone(ctx, workspace_id, gone,
                                           [s.name for s in routing.reads])
        for i in range(len(ids)):
            records = [as_record(r) for r in replies[i * n : (i + 1) * n]]
            try:
                _, job = pick(ctx, "list", keys[i], records, workspace_id)
            except CorruptRecord:
                if errors == "raise":
                    raise
                continue
            if job is not None and (status is None or job.status is status):
                found.append(job)
                if len(found) == limit:
                    break
        if len(ids) < page:
            break
        start += page
    return found


def dead_letters(ctx: Context, limit: int) -> Op[list[DeadLetter]]:
    """The newest ``limit`` dead letters, newest first."""
    (texts,) = yield Batch((Command(("LRANGE", ctx.keys.dead, 0, limit - 1)),))
    return [DeadLetter.from_json(text) for text in texts]
