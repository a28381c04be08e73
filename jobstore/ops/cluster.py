"""The write operations on Redis Cluster, where a job's keys sit in several slots.

No script or MULTI can span slots, so each operation is a fixed sequence of single-slot scripts,
each safe to re-send (op markers) and each re-checking what it depends on. docs/cluster.md
states what is atomic and what verify --repair converges; in short:

- enqueue (jobstore.ops.cluster_enqueue): records in write order, then the queue entry, then
  the index. An enqueue interrupted after its first record is completed by retrying it with the
  same ``job_id`` and the same content.
- update_status: the first record in read order decides the move atomically; the others are then
  set to the same fields.
- delete: every known record, last-written first, each leaving a tombstone, then the index.
- dequeue: the entry moves into a claim list of this call, a ``claimed`` key arbitrates the job
  (so a duplicated entry cannot hand it out twice), then the records move to running, then the
  call's marker names the entry it claimed (a re-sent call answers with that job). An entry
  that cannot be parsed, or whose record cannot be decoded, is buried in the dead-letter list.

Reads (get, list) are the same as on standalone Redis: redis-py pipelines across nodes.
"""

from __future__ import annotations

from ..dead_letters import DeadLetter, entry_problem, printable
from ..errors import CorruptRecord, InvalidTransition, JobNotFound, LeaseLost
from ..job import Job, JobStatus, count, record_problem, statuses_allowed_before
from ..rules import LEASE_EXPIRED
from ..steps import Batch, Command, Tidy
from . import calls
from .cluster_enqueue import enqueue, enqueue_many
from .context import Context, Op, now, spent_markers
from .records import addressed, as_record, corrupt, decode, fence, job_keys, move, update_outcome

__all__ = ["CLAIM_TTL", "TIDY_AT", "TOMB_TTL", "delete", "dequeue", "enqueue", "enqueue_many",
           "extend", "tidy", "update_status"]

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


def _move(ctx: Context, token: str, keys: tuple[str, ...], workspace_id: str, job_id: str,
          status: JobStatus, allowed: str, fields: dict[str, str], stamp: str = "",
          operation: str = "update_status", claim: str = "", hand_out: bool = False,
          iso: str = "", ttl_ms: int | None = None, others: tuple[str, ...] = ()) -> Op[Job]:
    """The first record (in read order) decides and takes the move; the others follow it.
    ``others``: the job's keys the move does not update, which expire with it (a final move).

    ``stamp``: the ``created_at`` the record must have (a claim through a queue entry).
    ``claim``: the claim the record must hold (else :class:`LeaseLost`). ``hand_out``: the move
    hands the job out (its attempt count goes up by one).

    :raises CorruptRecord: a copy cannot be decoded; nothing was written.
    """
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
            (reply,) = yield Batch((move(
                ctx, marker=sent[-1], records=(key,), workspace_id=workspace_id, status=status,
                fields=fields, stamp=stamp, claim=claim, hand_out=hand_out, iso=iso,
                ttl_ms=ttl_ms, allowed=allowed),))
            if reply[0] == "missing":
                continue
            job = update_outcome(ctx, reply, job_id, workspace_id, status, operation, claim=claim)
            rest = keys[position + 1:]
            expiry = int(reply[3]) if len(reply) > 3 else 0
            if rest:
                # The move is taken; the other copies follow it with the record's own fields,
                # and expire when it does (a final move: docs/retention.md).
                record = as_record(reply[1])
                moved = {k: record[k] for k in (*fields, "updated_at", "attempts", "claim")
                         if k in record}
                sent.extend(_marker(ctx, token, other) for other in rest)
                yield Batch(tuple(
                    calls.mirror(marker=marker, record=other, workspace_id=workspace_id,
                                 marker_ttl=ctx.marker_ttl, expiry=expiry, fields=moved)
                    for marker, other in zip(sent[-len(rest):], rest)
                ))
            if expiry > 0 and others:
                yield Batch(tuple(calls.expire_copy(record=other, workspace_id=workspace_id,
                                                    expiry=expiry) for other in others))
            return job
        raise JobNotFound(job_id, workspace_id)
    finally:
        ctx.spent_anywhere.extend(sent)


def update_status(ctx: Context, job_id: str, workspace_id: str, status: JobStatus,
                  changes: dict[str, str], claim: str | None = None,
                  ttl_ms: int | None = None) -> Op[Job]:
    routing = ctx.strategy.routing(workspace_id)
    allowed = " ".join(s.value for s in statuses_allowed_before(status))
    stamp, iso = now(ctx)
    fields = {"status": status.value, **changes, "updated_at": stamp}
    keys = job_keys(routing.touched, workspace_id, job_id)
    others = job_keys(routing.untouched, workspace_id, job_id)
    job = yield from _move(ctx, ctx.new_token(), keys, workspace_id, job_id, status, allowed,
                           fields, claim=claim or "", iso=iso, ttl_ms=ttl_ms, others=others)
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
            (reply,) = yield Batch((calls.delete_record(
                marker=marker, record=key, tombstone=ctx.keys.tomb(key), workspace_id=workspace_id,
                marker_ttl=ctx.marker_ttl, tomb_ttl=TOMB_TTL, stamps=stamps),))
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
        (until,) = yield Batch((calls.extend(fence(ctx), leases=ctx.keys.leases, records=(),
                                             claim=claim, lease_ms=lease_ms,
                                             workspace_id=job.workspace_id),))
    else:
        yield Batch((Command(("ZREM", ctx.keys.leases, claim)),))
    if not until:
        raise LeaseLost(job.job_id, claim, detail="its claim has ended")


def _bury(ctx: Context, entry: str, reason: str, key: str | None = None,
          field: str | None = None) -> Op[None]:
    """Write one dead letter, at the server's time (once, however often the step is re-sent),
    and report it."""
    dead = ctx.keys.dead
    marker = ctx.keys.op(ctx.new_token(), near=dead)
    try:
        (written,) = yield Batch((calls.bury(
            marker=marker, dead=dead, marker_ttl=ctx.marker_ttl, most=ctx.max_dead_letters,
            entry=printable(entry), reason=reason, key=key, field=field),))
    finally:
        ctx.spent_anywhere.append(marker)
    # (a record that cannot be decoded was reported by _move)
    ctx.events.dead_letter(DeadLetter.from_json(written))


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
    (won,) = yield Batch((calls.arbitrate(arbiter=arbiter, claim=claim, ttl=CLAIM_TTL),))
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
        (won,) = yield Batch((calls.arbitrate(arbiter=arbiter, claim=claim, ttl=CLAIM_TTL,
                                              holder=holder),))
        if won[0] != "won":
            return None
    # Leased before the records move: a dequeue that dies in between leaves a lease that runs
    # out and is dropped (the job is still pending, its entry back in the queue).
    leased = ctx.timer()
    yield Batch((calls.lease_claim(leases=ctx.keys.leases, claim=claim, lease_ms=lease_ms),))
    at, iso = now(ctx)
    fields = {"status": JobStatus.RUNNING.value, "claim": claim, "updated_at": at}
    try:
        job = yield from _move(ctx, token, keys, workspace_id, job_id, JobStatus.RUNNING,
                               JobStatus.PENDING.value, fields, stamp, operation="dequeue",
                               hand_out=True, iso=iso)
        if (ctx.timer() - leased) * 1000 > lease_ms / 2:
            # A claim this slow may have outlived its lease (and another dequeue, list_grace
            # later, dropped it): lease it afresh, now that the job is ours.
            yield Batch((calls.lease_claim(leases=ctx.keys.leases, claim=claim, lease_ms=lease_ms),))
        return job
    except (InvalidTransition, JobNotFound):
        yield Batch((Command(("ZREM", ctx.keys.leases, claim)),))
        return None  # cancelled, finished or deleted meanwhile: drop the entry
    except CorruptRecord as exc:  # nothing written; the record stays as it is
        yield Batch((Command(("ZREM", ctx.keys.leases, claim)),))
        yield from _bury(ctx, entry, exc.reason, exc.key, exc.field)
        return None


def _own(ctx: Context, token: str, entry: str,
         records: list[dict[str, str]] | None = None) -> Op[Job | None]:
    """The job of ``entry`` if it runs under this call's claim (the call re-sent after it
    claimed the job): the first copy in read order decides. None: not (or no longer) ours.
    ``records``: the copies, read already."""
    workspace_id, job_id, _ = ctx.keys.parse_queue_entry(entry)
    keys = job_keys(ctx.strategy.routing(None).touched, workspace_id, job_id)
    if records is None:
        records = list(map(as_record, (yield Batch(tuple(Command(("HGETALL", key))
                                                         for key in keys)))))
    for key, record in zip(keys, records):
        if addressed(record, workspace_id):
            if (record.get("claim") == f"{token}:{entry}"
                    and record.get("status") == JobStatus.RUNNING.value):
                return decode(ctx, "dequeue", key, record)
            return None
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
    routing = ctx.strategy.routing(None)
    keys = job_keys(routing.touched, workspace_id, job_id)
    # The op markers of these moves: not the call's own token, which a claim of a duplicate
    # entry of the same job later in this dequeue marks its move with ('.' is in no token).
    mark = f"{token}.t"
    records = list(map(as_record, (yield Batch(tuple(Command(("HGETALL", key)) for key in keys)))))
    record = next((r for r in records if addressed(r, workspace_id)), {})
    job = yield from _own(ctx, token, entry, records)  # this call took it over already: re-sent
    if job is not None:
        return job
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
                                 stamp, operation="dequeue", claim=member, iso=iso,
                                 others=job_keys(routing.untouched, workspace_id, job_id))
                _arbiter_spent(ctx, member)
                ctx.events.lease_expired(workspace_id, "failed")
            else:
                claim = f"{token}:{entry}"
                yield Batch((calls.lease_claim(leases=ctx.keys.leases, claim=claim, lease_ms=lease_ms),))
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
    if job is None:
        yield Batch((Command(("ZREM", ctx.keys.leases, member)),))
    return job


def dequeue(ctx: Context, timeout: float | None, lease_ms: int | None = None) -> Op[Job | None]:
    token = ctx.new_token()
    # The call's op marker (the queue's slot): once it has claimed a job, the entry it claimed,
    # so that the call re-sent whole (its tokens the same) answers with that job (see _took).
    marker = ctx.keys.op(token, near=ctx.keys.queue)
    job = yield from _dequeue(ctx, token, marker, timeout, lease_ms)
    yield from tidy(ctx)
    return job


def _took(ctx: Context, token: str, marker: str, entry: str, expired: str = "") -> Op[None]:
    """The claim of ``entry``'s job is this call's: the entry leaves the claim list (or the
    ``expired`` claim it was taken over from its lease) and the call's marker names it, in one
    step, so that a re-send of the call finds the job it claimed (TAKE) instead of nothing."""
    yield Batch((calls.took(marker=marker, claim_list=ctx.keys.claim(token), leases=ctx.keys.leases,
                            marker_ttl=ctx.marker_ttl, entry=entry, expired=expired),))
    ctx.spent_anywhere.append(marker)  # the call has its job: only RETURN_CLAIMS may follow


def _dequeue(ctx: Context, token: str, marker: str, timeout: float | None,
             lease_ms: int | None) -> Op[Job | None]:
    lease_ms = ctx.lease_ms if lease_ms is None else lease_ms
    queue, claim, leases = ctx.keys.queue, ctx.keys.claim(token), ctx.keys.leases
    deadline = None if timeout is None else ctx.timer() + timeout
    while True:
        # One step: the oldest entry into this call's claim list (the one it holds already, when
        # this step is a re-send), and the leases that ran out (claim lists of dequeues that died
        # go back to the queue there); or, the call re-sent after its claim, the entry it claimed.
        (taken,) = yield Batch((calls.take(queue=queue, claim_list=claim, leases=leases,
                                           marker=marker, stay_ms=int(ctx.list_grace * 1000),
                                           most_expired=ctx.dequeue_scan),))
        moved, mine, expired = taken[0], taken[1], taken[2:]
        if mine is not None:
            return (yield from _own(ctx, token, mine))
        for member, overdue_ms in zip(expired[::2], expired[1::2]):  # older than any entry
            job = yield from _take_over(ctx, token, member, int(overdue_ms), lease_ms)
            if job is not None:
                yield from _took(ctx, token, marker, member.partition(":")[2], member)
                if moved is not None:  # back to the queue's oldest end, for the next dequeue
                    yield Batch((calls.return_claims(claim_list=claim, queue=queue, leases=leases),))
                return job
        if moved is None:
            remaining = None if deadline is None else deadline - ctx.timer()
            if remaining is not None and remaining <= 0:
                return None
            wait = ctx.block_slice if remaining is None else max(0.01, min(remaining, ctx.block_slice))
            _, moved = yield Batch((
                calls.lease_list(leases=leases, claim_list=claim,
                                 stay_ms=int((wait + ctx.list_grace) * 1000)),
                Command(("BLMOVE", queue, claim, "RIGHT", "LEFT", round(wait, 3)))))
            if moved is None:
                yield Batch((calls.return_claims(claim_list=claim, queue=queue, leases=leases),))
                continue
        # A re-sent move may have moved a second entry: claim the oldest, return the rest.
        (entries,) = yield Batch((Command(("LRANGE", claim, 0, -1)),))
        job = None
        while entries and job is None:
            entry = entries.pop()  # the oldest is at the tail
            job = yield from _claim(ctx, token, entry, lease_ms)
            # This entry, not whatever is at the tail: a re-sent RPOP would drop a second one.
            if job is None:
                yield Batch((Command(("LREM", claim, -1, entry)),))
            else:
                yield from _took(ctx, token, marker, entry)
        yield Batch((calls.return_claims(claim_list=claim, queue=queue, leases=leases),))
        if job is not None:
            return job
