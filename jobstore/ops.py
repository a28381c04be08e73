"""The operations, written once, without I/O.

Each operation is a generator. It yields a :class:`Batch` (commands that go to Redis together,
in one round trip), receives the list of replies, and finally returns its result. A driver
(``JobStore._run`` today, an asyncio store tomorrow) does the network part, so that no logic
needs a second copy. Arguments are validated by the caller before an operation starts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable

from .errors import InvalidTransition, JobExists, JobNotFound
from .job import Job, JobStatus, statuses_allowed_before
from .layout import StoreKeys
from .events import Events
from .scripts import DELETE, DEQUEUE, ENQUEUE, UPDATE_STATUS
from .steps import Batch, Command, Script
from .strategy import Strategy


Op = Generator[Batch, list, Any]


@dataclass
class Context:
    """What every operation needs besides its arguments."""

    keys: StoreKeys
    strategy: Strategy
    marker_ttl: int = 600
    dequeue_scan: int = 50
    clock: Callable[[], float] = time.time
    new_token: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)
    events: Events = field(default_factory=Events)


def as_record(flat: list | dict) -> dict[str, str]:
    """A HGETALL reply from a script (a flat list) or a command (a dict) as a dict."""
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2]))


def owned(record: dict[str, str], workspace_id: str) -> bool:
    return bool(record) and record.get("workspace_id") == workspace_id


# -- writes ----------------------------------------------------------------------------------


def enqueue_script(ctx: Context, job: Job, fields: dict[str, str]) -> Script:
    routing = ctx.strategy.routing(job.workspace_id)
    writes = [s.job_key(job.workspace_id, job.job_id) for s in routing.writes]
    checks = [
        key
        for key in (s.job_key(job.workspace_id, job.job_id) for s in routing.known)
        if key not in writes
    ]
    flat = [part for item in fields.items() for part in item]
    return Script(
        ENQUEUE,
        (ctx.keys.op(ctx.new_token()), ctx.keys.index(job.workspace_id), ctx.keys.queue, *writes, *checks),
        (len(writes), ctx.marker_ttl, job.job_id, repr(job.created_at),
         ctx.keys.queue_entry(job.workspace_id, job.job_id), *flat),
    )


def enqueue_outcome(job: Job, reply: list) -> Job | None:
    """The enqueued job, or None when the id already existed."""
    if reply[0] == "exists":
        return None
    if reply[0] == "replayed" and reply[1]:
        return Job.from_hash(as_record(reply[1]))
    return job


def enqueue(ctx: Context, job: Job, fields: dict[str, str]) -> Op:
    (reply,) = yield Batch((enqueue_script(ctx, job, fields),))
    result = enqueue_outcome(job, reply)
    if result is None:
        raise JobExists([job.job_id])
    return result


def enqueue_many(ctx: Context, jobs: list[tuple[Job, dict[str, str]]]) -> Op:
    replies = yield Batch(tuple(enqueue_script(ctx, job, fields) for job, fields in jobs))
    created, existing = [], []
    for (job, _), reply in zip(jobs, replies):
        result = enqueue_outcome(job, reply)
        if result is None:
            existing.append(job.job_id)
        else:
            created.append(result)
    if existing:
        raise JobExists(existing, created=created)
    return created


def update_status(
    ctx: Context,
    job_id: str,
    workspace_id: str,
    status: JobStatus,
    changes: dict[str, str],
) -> Op:
    routing = ctx.strategy.routing(workspace_id)
    allowed = " ".join(s.value for s in statuses_allowed_before(status))
    fields = {"status": status.value, **changes, "updated_at": repr(ctx.clock())}
    flat = [part for item in fields.items() for part in item]
    (reply,) = yield Batch(
        (
            Script(
                UPDATE_STATUS,
                (ctx.keys.op(ctx.new_token()), *_keys(routing.touched, workspace_id, job_id)),
                (workspace_id, ctx.marker_ttl, allowed, *flat),
            ),
        )
    )
    if reply[0] == "missing" or not reply[1:] or not reply[1]:
        raise JobNotFound(job_id, workspace_id)
    if reply[0] == "invalid":
        raise InvalidTransition(job_id, reply[1], status.value)
    return Job.from_hash(as_record(reply[1]))


def delete(ctx: Context, job_id: str, workspace_id: str) -> Op:
    routing = ctx.strategy.routing(workspace_id)
    (reply,) = yield Batch(
        (
            Script(
                DELETE,
                (ctx.keys.op(ctx.new_token()), ctx.keys.index(workspace_id),
                 *_keys(routing.known, workspace_id, job_id)),
                (workspace_id, ctx.marker_ttl, job_id),
            ),
        )
    )
    return bool(reply)


def _dequeue_script(ctx: Context, source: str, marker: str) -> Script:
    # Routing is read afresh for every attempt, so a long wait follows a phase switch.
    templates = tuple(s.lua_template for s in ctx.strategy.routing(None).touched)
    return Script(
        DEQUEUE,
        (source, ctx.keys.queue, marker),
        (ctx.marker_ttl, repr(ctx.clock()), ctx.dequeue_scan, *templates),
    )


def dequeue(ctx: Context, timeout: float | None) -> Op:
    """Claim the oldest pending job. ``timeout``: 0 no wait, None wait forever, else seconds."""
    token = ctx.new_token()
    marker, claim, queue = ctx.keys.op(token), ctx.keys.claim(token), ctx.keys.queue
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        (reply,) = yield Batch((_dequeue_script(ctx, queue, marker),))
        if reply[0] == "busy":
            continue  # only dropped stale entries so far; look further
        if reply[0] != "empty":
            return Job.from_hash(as_record(reply[1])) if reply[1] else None
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        # Block server-side for a new entry, in short slices so a phase switch is seen soon.
        wait = 1.0 if remaining is None else max(0.01, min(remaining, 1.0))
        (moved,) = yield Batch(
            (Command(("BLMOVE", queue, claim, "RIGHT", "LEFT", round(wait, 3))),), blocks_for=wait
        )
        if moved is None:
            continue
        (reply,) = yield Batch((_dequeue_script(ctx, claim, marker),))
        if reply[0] in ("job", "replayed"):
            return Job.from_hash(as_record(reply[1])) if reply[1] else None


# -- reads -----------------------------------------------------------------------------------


def _keys(schemas: Iterable, workspace_id: str, job_id: str) -> tuple[str, ...]:
    return tuple(s.job_key(workspace_id, job_id) for s in schemas)


def pick(records: list[dict[str, str]], workspace_id: str) -> tuple[int, Job | None]:
    """The first record, in read order, that belongs to the workspace, and its position."""
    for position, record in enumerate(records):
        if owned(record, workspace_id):
            return position, Job.from_hash(record)
    return -1, None


def differing_fields(a: dict[str, str], b: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def get(ctx: Context, job_id: str, workspace_id: str) -> Op:
    routing = ctx.strategy.routing(workspace_id)
    schemas = routing.reads + routing.shadow
    replies = yield Batch(
        tuple(Command(("HGETALL", key)) for key in _keys(schemas, workspace_id, job_id))
    )
    records = [as_record(r) for r in replies]
    position, job = pick(records[: len(routing.reads)], workspace_id)
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


def list_jobs(ctx: Context, workspace_id: str, status: JobStatus | None, limit: int) -> Op:
    """Newest first, from the workspace index; a status filter pages through it."""
    routing = ctx.strategy.routing(workspace_id)
    page = limit if status is None else max(limit, 100)
    found: list[Job] = []
    start = 0
    while len(found) < limit:
        (ids,) = yield Batch(
            (Command(("ZREVRANGE", ctx.keys.index(workspace_id), start, start + page - 1)),)
        )
        if not ids:
            break
        n = len(routing.reads)
        replies = yield Batch(
            tuple(
                Command(("HGETALL", key))
                for job_id in ids
                for key in _keys(routing.reads, workspace_id, job_id)
            )
        )
        for i in range(len(ids)):
            _, job = pick([as_record(r) for r in replies[i * n : (i + 1) * n]], workspace_id)
            if job is not None and (status is None or job.status is status):
                found.append(job)
                if len(found) == limit:
                    break
        if len(ids) < page:
            break
        start += page
    return found
