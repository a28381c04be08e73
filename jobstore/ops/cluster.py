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

from ..dead_letters import DeadLetter, entry_problem, printable
from ..errors import (CorruptRecord, EnqueueIncomplete, InvalidTransition, JobExists, JobNotFound,
                     LeaseLost)
from ..job import Job, JobStatus, count, parse_time, record_problem, statuses_allowed_before
from ..rules import LEASE_EXPIRED, OP
from ..scripts import (ARBITRATE, BURY, CREATE_RECORD, DELETE_RECORD, EXTEND, LEASE_CLAIM,
                      LEASE_LIST, MIRROR, PUSH_ONCE, RETURN_CLAIMS, TAKE, UPDATE_STATUS)
from ..steps import Batch, Call, Command, Script, Tidy
from .context import SPENT_PER_CALL, Context, Op, now, spent_markers
from .records import addressed, as_record, corrupt, fenced_script, job_keys, update_outcome
from .writes import queue_entry

CLAIM_TTL = 3600
TOMB_TTL = 86400
# Spent op markers of record steps a store lets wait before one Tidy step deletes them: about
# 500 bytes each (a marker holds its call's reply), some 32 KB held back per store; the deletes
# go off the operations' path (jobstore.driver.Tidier), one round trip per primary per Tidy.
TIDY_AT = 64


def _marker(ctx: Context, token: str, key: str) -> str:
    """The op marker of one call's script on one record key: in the key's slot, and of that key
    alone (records whose keys share a hash tag share a slot, and must not share a marker)."""
    return ctx.keys.op(f"{token}:{key}", near=key)


def tidy(ctx: Context) -> Op[None]:
    """Delete spent op markers once TIDY_AT of them wait: those of record steps (see
    Context.spent_anywhere), which would otherwise live their whole ttl, then those of queue
    steps no enqueue of this store took with its push yet (a store that stopped enqueueing).
    Never fails."""
    if len(ctx.spent_anywhere) + len(ctx.spent_markers) >= TIDY_AT:
        spent = spent_markers(ctx, TIDY_AT, pool=ctx.spent_anywhere)
        spent += spent_markers(ctx, TIDY_AT - len(spent))
        if spent:
            yield Tidy(tuple(spent))


def _same_job(stored: dict[str, str], fields: dict[str, str]) -> bool:
    """An existing record may be an interrupted enqueue of this job: same job, still pending.
    (It is one only if it is not indexed yet: the index is an enqueue's last step.)"""
    return stored.get("status") == "pending" and all(
        stored.get(k) == fields[k] for k in ("workspace_id", "action", "params")
    )


def _indexed(ctx: Context, jobs: list[Job]) -> Op[set[str]]:
    """The ids of ``jobs`` in their workspace index: jobs whose enqueue finished."""
    scores = yield Batch(tuple(
        Command(("ZSCORE", ctx.keys.index(job.workspace_id), job.job_id)) for job in jobs
    ))
    return {job.job_id for job, score in zip(jobs, scores) if score is not None}


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
        calls: list[Call] = []
        subjects: list[tuple[Job, dict[str, str]]] = []
        for job, fields in todo:
            schemas = routing[job.job_id].writes
            if position < len(schemas):
                key = schemas[position].job_key(job.workspace_id, job.job_id)
                flat = [part for item in fields.items() for part in item]
                calls.append(Script(CREATE_RECORD, (key, ctx.keys.tomb(key)),
                                    (fields[OP], f"{job.workspace_id}:{fields['created_at']}",
                                     *flat)))
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
            unsure: list[Job] = []
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
            pushed = [ctx.keys.op(f"{token}-{job.job_id}", near=ctx.keys.queue) for job, _ in todo]
            # The markers of earlier pushes that have their answer (no re-send of them can come
            # any more) go with this push, in the same script: a finished enqueue leaves no key.
            spent = spent_markers(ctx, SPENT_PER_CALL * len(todo))
            calls = list(
                Script(PUSH_ONCE, (marker, ctx.keys.queue,
                                   *spent[n * SPENT_PER_CALL:(n + 1) * SPENT_PER_CALL]),
                       (ctx.marker_ttl, queue_entry(ctx, job.workspace_id, job.job_id,
                                                    fields["created_at"])))
                for n, (marker, (job, fields)) in enumerate(zip(pushed, todo)))
        else:  # last: the index marks the enqueue finished (see _same_job)
            calls = list(
                Command(("ZADD", ctx.keys.index(job.workspace_id), "NX",
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
    created = [Job.from_hash(fields, codec=ctx.codec) for _, fields in todo]
    if failed:
        raise EnqueueIncomplete(failed, created, existing)
    if existing:
        order = {job.job_id: position for position, (job, _) in enumerate(jobs)}
        raise JobExists(sorted(existing, key=order.__getitem__), created=created)  # batch order
    return created


def enqueue(ctx: Context, job: Job, fields: dict[str, str]) -> Op[Job]:
    (created,) = yield from enqueue_many(ctx, [(job, fields)])
    return created


def _move(ctx: Context, token: str, keys: tuple[str, ...], workspace_id: str, job_id: str,
          status: JobStatus, allowed: str, fields: dict[str, str], stamp: str = "",
          operation: str = "update_status", claim: str = "", hand_out: bool = False,
          iso: str = "") -> Op[Job]:
    """The first record (in read order) decides and takes the move; the others follow it.

    ``stamp``: the ``created_at`` the record must have (a claim through a queue entry).
    ``claim``: the claim the record must hold (else :class:`LeaseLost`). ``hand_out``: the move
    hands the job out (its attempt count goes up by one).

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

    sent: list[str] = []  # markers of the steps sent: spent once this call has its answer
    try:
        for position, key in enumerate(keys):
            sent.append(_marker(ctx, token, key))
            (reply,) = yield Batch((fenced_script(
                ctx, UPDATE_STATUS, (sent[-1], key),
                (workspace_id, ctx.marker_ttl, allowed, ctx.max_record_bytes, stamp, claim,
                 "1" if hand_out else "", "0", iso, *flat),
            ),))
            if reply[0] == "missing":
                continue
            job = update_outcome(ctx, reply, job_id, workspace_id, status, operation, claim=claim)
            rest = keys[position + 1:]
            if rest:
                # The move is taken; the other copies follow it with the record's own fields.
                record = as_record(reply[1])
                moved = {k: record[k] for k in (*fields, "updated_at", "attempts", "claim")
                         if k in record}
                flat_moved = [part for item in moved.items() for part in item]
                sent.extend(_marker(ctx, token, other) for other in rest)
                yield Batch(tuple(
                    Script(MIRROR, (marker, other), (workspace_id, ctx.marker_ttl, *flat_moved))
                    for marker, other in zip(sent[-len(rest):], rest)
                ))
            return job
        raise JobNotFound(job_id, workspace_id)
    finally:
        ctx.spent_anywhere.extend(sent)


def update_status(ctx: Context, job_id: str, workspace_id: str, status: JobStatus,
                  changes: dict[str, str], claim: str | None = None) -> Op[Job]:
    routing = ctx.strategy.routing(workspace_id)
    allowed = " ".join(s.value for s in statuses_allowed_before(status))
    stamp, iso = now(ctx)
    fields = {"status": status.value, **changes, "updated_at": stamp}
    job = yield from _move(ctx, ctx.new_token(), job_keys(routing.touched, workspace_id, job_id),
                           workspace_id, job_id, status, allowed, fields, claim=claim or "",
                           iso=iso)
    if job.claim and status is not JobStatus.RUNNING:
        # The claim ended with this move; its lease sits in the queue's slot. (Left behind by a
        # crash here, it runs out and a dequeue drops it: the job is no longer running.)
        yield Batch((Command(("ZREM", ctx.keys.leases, job.claim)),))
        if status.is_terminal:
            _arbiter_spent(ctx, job.claim)
    yield from tidy(ctx)
    return job


def _arbiter_spent(ctx: Context, claim: str) -> None:
    """The job of ``claim`` is final in every copy (its moves and mirrors all landed): no entry
    of it can be handed out any more (every copy refuses the move from pending), so its arbiter
    goes with the next Tidy instead of living CLAIM_TTL."""
    workspace_id, job_id, stamp = ctx.keys.parse_queue_entry(claim.partition(":")[2])
    if workspace_id and job_id:
        ctx.spent_anywhere.append(ctx.keys.claimed(workspace_id, job_id, stamp))


def delete(ctx: Context, job_id: str, workspace_id: str) -> Op[bool]:
    token = ctx.new_token()
    keys = job_keys(ctx.strategy.routing(workspace_id).known, workspace_id, job_id)
    # What is deleted, by incarnation (created_at): every slot's tombstone names each of them, so
    # a copy running beside the delete cannot bring any of them back into a slot already cleared.
    found = yield Batch(tuple(Command(("HGETALL", key)) for key in keys), tolerate_errors=True)
    stamps = sorted({(r.get("created_at") or "") for r in found
                     if isinstance(r, dict) and r.get("workspace_id") == workspace_id})
    deleted = False
    for key in reversed(keys):  # the source last: while it stands, the job still reads
        marker = _marker(ctx, token, key)
        try:
            (reply,) = yield Batch((Script(
                DELETE_RECORD, (marker, key, ctx.keys.tomb(key)),
                (workspace_id, ctx.marker_ttl, TOMB_TTL, *stamps),
            ),))
        finally:
            ctx.spent_anywhere.append(marker)
        deleted = deleted or bool(reply)
    # The claims the deleted records held end with them: their leases go (ZREM: safe to replay).
    # A take-over between the read above and the deletes leaves its new lease; extend drops it
    # (the record is gone), and so does the dequeue that finds it run out.
    claims = sorted({r["claim"] for r in found if isinstance(r, dict)
                     and r.get("workspace_id") == workspace_id and r.get("claim")})
    ends = [Command(("ZREM", ctx.keys.leases, *claims))] if claims and deleted else []
    if deleted:
        yield Batch((Command(("ZREM", ctx.keys.index(workspace_id), job_id)), *ends))
    yield from tidy(ctx)
    return deleted


def extend(ctx: Context, job: Job, lease_ms: int) -> Op[None]:
    """Renew ``job``'s lease, while its record is running under its claim. The record sits in
    another slot than the leases: it is read first (the first copy in read order decides), then
    the lease renewed. A delete or a move that lands in between ends the lease itself.

    :raises LeaseLost: the claim has ended (taken over, finished, deleted; its lease is dropped).
    """
    claim = job.claim or ""
    keys = job_keys(ctx.strategy.routing(job.workspace_id).touched, job.workspace_id, job.job_id)
    records = yield Batch(tuple(Command(("HGETALL", key)) for key in keys))
    record = next((r for r in map(as_record, records) if addressed(r, job.workspace_id)), {})
    until = 0
    if record.get("claim") == claim and record.get("status") == JobStatus.RUNNING.value:
        (until,) = yield Batch((fenced_script(ctx, EXTEND, (ctx.keys.leases,),
                                              (claim, lease_ms, job.workspace_id)),))
    else:
        yield Batch((Command(("ZREM", ctx.keys.leases, claim)),))
    if not until:
        raise LeaseLost(job.job_id, claim, detail="its claim has ended")


def _bury(ctx: Context, entry: str, reason: str, key: str | None = None,
          field: str | None = None) -> Op[None]:
    """Write one dead letter (once, however often the step is re-sent) and report it."""
    letter = DeadLetter(printable(entry), reason, ctx.clock(), key, field)
    dead = ctx.keys.dead
    marker = ctx.keys.op(ctx.new_token(), near=dead)
    try:
        yield Batch((Script(BURY, (marker, dead),
                            (ctx.marker_ttl, letter.to_json(), ctx.max_dead_letters)),))
    finally:
        ctx.spent_anywhere.append(marker)
    ctx.events.dead_letter(letter)  # a record that cannot be decoded was reported by _move


def _claim(ctx: Context, token: str, entry: str, lease_ms: int) -> Op[Job | None]:
    """The job of one queue entry, now running and ours; None when it is not to be run."""
    problem = entry_problem(entry)
    if problem is not None:
        yield from _bury(ctx, entry, problem)
        return None
    workspace_id, job_id, stamp = ctx.keys.parse_queue_entry(entry)
    arbiter = ctx.keys.claimed(workspace_id, job_id, stamp)
    keys = job_keys(ctx.strategy.routing(None).touched, workspace_id, job_id)
    claim = f"{token}:{entry}"
    (won,) = yield Batch((Script(ARBITRATE, (arbiter,), (claim, CLAIM_TTL, "")),))
    if won[0] == "held":
        holder, age_ms = won[1], int(won[2])
        if age_ms < ctx.list_grace * 1000:
            return None  # another dequeue claims it right now (a duplicated entry)
        # Won long ago (an entry comes back from a dead dequeue's claim list only after
        # list_grace): that dequeue claimed the job, or died before it moved any copy.
        records = yield Batch(tuple(Command(("HGETALL", key)) for key in keys))
        copies = [r for r in map(as_record, records) if addressed(r, workspace_id)]
        untouched = bool(copies) and all(
            (r.get("status") or "pending") == "pending" and not r.get("claim")
            and (not stamp or r.get("created_at") == stamp) for r in copies)
        if not untouched:
            return None  # claimed (or finished, deleted) through another entry: drop this one
        (won,) = yield Batch((Script(ARBITRATE, (arbiter,), (claim, CLAIM_TTL, holder)),))
        if won[0] != "won":
            return None
    # Leased before the records move: a dequeue that dies in between leaves a lease that runs
    # out and is dropped (the job is still pending, its entry back in the queue).
    leased = ctx.timer()
    yield Batch((Script(LEASE_CLAIM, (ctx.keys.leases,), (claim, lease_ms)),))
    at, iso = now(ctx)
    fields = {"status": JobStatus.RUNNING.value, "claim": claim, "updated_at": at}
    try:
        job = yield from _move(ctx, token, keys, workspace_id, job_id, JobStatus.RUNNING,
                               JobStatus.PENDING.value, fields, stamp, operation="dequeue",
                               hand_out=True, iso=iso)
        if (ctx.timer() - leased) * 1000 > lease_ms / 2:
            # A claim this slow may have outlived its lease (and another dequeue, list_grace
            # later, dropped it): lease it afresh, now that the job is ours.
            yield Batch((Script(LEASE_CLAIM, (ctx.keys.leases,), (claim, lease_ms)),))
        return job
    except (InvalidTransition, JobNotFound):
        yield Batch((Command(("ZREM", ctx.keys.leases, claim)),))
        return None  # cancelled, finished or deleted meanwhile: drop the entry
    except CorruptRecord as exc:  # nothing written; the record stays as it is
        yield Batch((Command(("ZREM", ctx.keys.leases, claim)),))
        yield from _bury(ctx, entry, exc.reason, exc.key, exc.field)
        return None


def _take_over(ctx: Context, token: str, member: str, overdue_ms: int,
               lease_ms: int) -> Op[Job | None]:
    """Hand out again the job of a claim whose lease ran out, or fail it at max attempts; None
    when the claim no longer holds the job (finished, deleted, taken over: the lease is dropped).

    Exactly one dequeue takes a job over: the move checks, in the record's slot, that the record
    still holds the expired claim. The new claim is leased before the move and the old lease
    dropped after it, so that a crash between the steps never leaves a running job unleased.
    A lease whose job is still pending may belong to a dequeue that leased its claim and has not
    moved the record yet (slow, not dead): it is dropped only ``list_grace`` after it ran out.
    """
    entry = member.partition(":")[2]
    workspace_id, job_id, stamp = ctx.keys.parse_queue_entry(entry)
    keys = job_keys(ctx.strategy.routing(None).touched, workspace_id, job_id)
    # The op markers of these moves: not the call's own token, which a claim of a duplicate
    # entry of the same job later in this dequeue marks its move with ('.' is in no token).
    mark = f"{token}.t"
    records = yield Batch(tuple(Command(("HGETALL", key)) for key in keys))
    record = next((r for r in map(as_record, records) if addressed(r, workspace_id)), {})
    job = None
    if (record and (record.get("status") or "pending") == JobStatus.PENDING.value
            and overdue_ms < ctx.list_grace * 1000):
        return None  # its dequeue may still move the job: look again later
    if record.get("claim") == member and record.get("status") == JobStatus.RUNNING.value:
        attempts = count(record.get("attempts"))
        at, iso = now(ctx)
        try:
            if attempts >= ctx.max_attempts:
                why = LEASE_EXPIRED % (attempts, ctx.max_attempts)
                yield from _move(ctx, mark, keys, workspace_id, job_id, JobStatus.FAILED,
                                 JobStatus.RUNNING.value, {"status": JobStatus.FAILED.value,
                                                           "error": why, "updated_at": at,
                                                           "claim": ""},
                                 stamp, operation="dequeue", claim=member, iso=iso)
                _arbiter_spent(ctx, member)
                ctx.events.lease_expired(workspace_id, "failed")
            else:
                claim = f"{token}:{entry}"
                yield Batch((Script(LEASE_CLAIM, (ctx.keys.leases,), (claim, lease_ms)),))
                job = yield from _move(
                    ctx, mark, keys, workspace_id, job_id, JobStatus.RUNNING,
                    JobStatus.RUNNING.value, {"status": JobStatus.RUNNING.value,
                                              "claim": claim, "updated_at": at},
                    stamp, operation="dequeue", claim=member, hand_out=True, iso=iso)
                ctx.events.lease_expired(workspace_id, "reclaimed")
        except (LeaseLost, InvalidTransition, JobNotFound):
            pass  # another dequeue took it over, or it finished, first
        except CorruptRecord as exc:
            yield from _bury(ctx, entry, exc.reason, exc.key, exc.field)
        if job is None and attempts < ctx.max_attempts:  # our new claim's lease, unused
            yield Batch((Command(("ZREM", ctx.keys.leases, f"{token}:{entry}")),))
    yield Batch((Command(("ZREM", ctx.keys.leases, member)),))
    return job


def dequeue(ctx: Context, timeout: float | None, lease_ms: int | None = None) -> Op[Job | None]:
    job = yield from _dequeue(ctx, timeout, lease_ms)
    yield from tidy(ctx)
    return job


def _dequeue(ctx: Context, timeout: float | None, lease_ms: int | None) -> Op[Job | None]:
    token = ctx.new_token()
    lease_ms = ctx.lease_ms if lease_ms is None else lease_ms
    queue, claim, leases = ctx.keys.queue, ctx.keys.claim(token), ctx.keys.leases
    deadline = None if timeout is None else ctx.timer() + timeout
    while True:
        # One step: the oldest entry into this call's claim list, and the leases that ran out
        # (claim lists of dequeues that died go back to the queue there).
        (taken,) = yield Batch((Script(TAKE, (queue, claim, leases),
                                       (int(ctx.list_grace * 1000), ctx.dequeue_scan)),))
        moved, expired = taken[0], taken[1:]
        for member, overdue_ms in zip(expired[::2], expired[1::2]):  # older than any entry
            job = yield from _take_over(ctx, token, member, int(overdue_ms), lease_ms)
            if job is not None:
                if moved is not None:  # back to the queue's oldest end, for the next dequeue
                    yield Batch((Script(RETURN_CLAIMS, (claim, queue, leases), ()),))
                return job
        if moved is None:
            remaining = None if deadline is None else deadline - ctx.timer()
            if remaining is not None and remaining <= 0:
                return None
            wait = ctx.block_slice if remaining is None else max(0.01, min(remaining, ctx.block_slice))
            _, moved = yield Batch((
                Script(LEASE_LIST, (leases,), (claim, int((wait + ctx.list_grace) * 1000))),
                Command(("BLMOVE", queue, claim, "RIGHT", "LEFT", round(wait, 3)))))
            if moved is None:
                yield Batch((Script(RETURN_CLAIMS, (claim, queue, leases), ()),))
                continue
        # A re-sent move may have moved a second entry: claim the oldest, return the rest.
        (entries,) = yield Batch((Command(("LRANGE", claim, 0, -1)),))
        job = None
        while entries and job is None:
            entry = entries.pop()  # the oldest is at the tail
            job = yield from _claim(ctx, token, entry, lease_ms)
            # This entry, not whatever is at the tail: a re-sent RPOP would drop a second one.
            yield Batch((Command(("LREM", claim, -1, entry)),))
        yield Batch((Script(RETURN_CLAIMS, (claim, queue, leases), ()),))
        if job is not None:
            return job
