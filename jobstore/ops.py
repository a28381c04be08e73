"""The operations, written once, without I/O.

Each operation is a generator. It yields steps (:data:`jobstore.steps.Step`): mostly a
:class:`Batch` (commands that go to Redis together, in one round trip), whose list of replies it
receives, and a :class:`Refresh` when a script found the routing state stale; it finally returns
its result. A driver
(``JobStore._run`` today, an asyncio store tomorrow) does the network part, so that no logic
needs a second copy. Arguments are validated by the caller before an operation starts.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from base64 import urlsafe_b64encode
from collections.abc import Callable, Generator, Iterable, Sequence
from itertools import chain
from dataclasses import dataclass, field
from typing import Any, TypeVar


from .dead_letters import MAX_DEAD_LETTERS, DeadLetter
from .errors import (CorruptRecord, EnqueueIncomplete, InvalidTransition, JobExists, JobNotFound,
                     LeaseLost, PayloadTooLarge)
from .job import Job, JobStatus, format_time, statuses_allowed_before
from .layout import CARRIED, StoreKeys
from .schema import WORKSPACE_MARK, KeySchema
from .codec import Codec
from .events import Events
from .rules import OP
from .scripts import (DELETE, DEQUEUE, ENQUEUE, EXTEND, LEASE_LIST, LEAVE_LEGACY_QUEUE, READ_FIRST,
                      UPDATE_STATUS, Lua)
from .steps import Batch, Command, Refresh, Refused, Script, Step
from .strategy import Strategy

T = TypeVar("T")

# An operation returning T: it yields steps, and the driver sends back each step's reply (see
# jobstore.steps.Step: a Batch's list of replies, None for a Refresh...).
Op = Generator[Step, Any, T]


@dataclass
class Context:
    """What every operation needs besides its arguments."""

    keys: StoreKeys
    strategy: Strategy
    marker_ttl: int = 600
    dequeue_scan: int = 50
    max_dead_letters: int = MAX_DEAD_LETTERS
    # Longest server-side wait of one blocking step; kept below the client's socket timeout.
    block_slice: float = 1.0
    max_record_bytes: int = 1024 * 1024
    # Leases: how long a dequeued job stays its worker's without an extend (ms, the store's
    # ``lease``), and how many hand-outs a job gets before a lease running out fails it.
    lease_ms: int = 3_600_000
    max_attempts: int = 3
    # How long a claim list may hold entries past its blocking wait before a later dequeue puts
    # them back (its dequeue died between the move and the claim), seconds.
    list_grace: float = 30.0
    # How new records store their times: "epoch" (the repr of a float) or "iso" (ISO 8601).
    # An update writes a record's updated_at in the form the record already has.
    time_format: str = "epoch"
    # How params and result are stored (jobstore.codec); None: jobstore's JSON.
    codec: Codec | None = None
    # The replaced system's queue (a list of bare job ids), shared until the fleet leaves it.
    legacy_queue: str | None = None
    # Redis Cluster: writes go through ops_cluster, and scripts are never fenced (the phase
    # lives in another slot; stores follow a switch by time alone, within a second).
    cluster: bool = False
    # Op markers of this store's calls that have their answer (no re-send of them can come),
    # deleted by its next call's script (spent_markers): update_status and dequeue markers on
    # standalone Redis, enqueue queue-step markers on a cluster (same slot as the next one).
    spent_markers: deque[str] = field(default_factory=deque)
    # Redis Cluster: op markers of this store's calls with their answer that sit in any slot (a
    # record's: update_status, dequeue, delete steps); no later script shares their slot, so
    # they go in bulk, a Tidy step once TIDY_AT of them wait (ops_cluster.tidy).
    spent_anywhere: deque[str] = field(default_factory=deque)
    clock: Callable[[], float] = time.time
    # A call's token (op markers, claims, a record's OP): 72 random bits in 12 characters.
    new_token: Callable[[], str] = field(default=lambda: new_token())
    events: Events = field(default_factory=Events)


# Where call tokens come from: a generator of jobstore's own, seeded from the OS when jobstore is
# imported and again in every forked child, so that neither an application's ``random.seed(n)``
# (ML jobs and test suites seed the process-wide generator) nor a fork repeats another call's
# token. Its getrandbits is one C call under the GIL: threads draw distinct values.
_TOKENS = random.Random()
_drawn_in = [os.getpid()]  # the process the generator was last seeded in


def _reseed() -> None:
    _TOKENS.seed()
    _drawn_in[0] = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_reseed)


def new_token() -> str:
    """72 random bits in 12 URL-safe characters: what tells one call from another.

    Drawn from jobstore's own generator (``_TOKENS``), not from the process-wide ``random``
    module, which the application may seed, and not from ``os.urandom``, a system call that
    costs a few microseconds per call: a token only has to differ from every other call's (a
    collision needs the same job and 2^-72 luck); it protects nothing secret. Job ids stay
    ``uuid4`` (their randomness is the OS's)."""
    if os.getpid() != _drawn_in[0]:  # forked by a path that ran no at-fork hook (a C fork())
        _reseed()
    return urlsafe_b64encode(_TOKENS.getrandbits(72).to_bytes(9, "big")).decode()


def now(ctx: Context) -> tuple[str, str]:
    """The current time as the store writes it, and as ISO 8601 (for records that use it)."""
    seconds = ctx.clock()
    return format_time(seconds, ctx.time_format), format_time(seconds, "iso")


def as_record(flat: list[str] | dict[str, str]) -> dict[str, str]:
    """A HGETALL reply from a script (a flat list) or a command (a dict) as a dict."""
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2]))


def owned(record: dict[str, str], workspace_id: str) -> bool:
    return bool(record) and record.get("workspace_id") == workspace_id


def addressed(record: dict[str, str], workspace_id: str) -> bool:
    """The workspace's record, or one without a ``workspace_id``: such a record is taken for the
    workspace whose key led to it, and reported corrupt, never silently for no one's (the
    scripts' ``addressed`` is the same rule)."""
    return bool(record) and record.get("workspace_id", "") in (workspace_id, "")


def corrupt(ctx: Context, operation: str, key: str | None, field: str,
            reason: str) -> CorruptRecord:
    """Report a record that cannot be decoded to the events; the error to raise for it."""
    ctx.events.corrupt_record(key or "", field, reason, operation=operation)
    return CorruptRecord(key, field, reason)


def decode(ctx: Context, operation: str, key: str | None, record: dict[str, str]) -> Job:
    """The job a record holds.

    :raises CorruptRecord: it cannot be decoded (reported to the events first).
    """
    read = Job._read(record, ctx.codec)
    if isinstance(read, tuple):
        raise corrupt(ctx, operation, key, *read)
    return read


def fenced_script(ctx: Context, lua: Lua, keys: tuple[str, ...], args: tuple[Any, ...]) -> Script:
    """A routed script call, fenced by the phase its routing came from (see
    jobstore/lua/includes/fence.lua)."""
    fence = None if ctx.cluster else ctx.strategy.fence()
    if fence is None:
        return Script(lua, (keys[0], *keys), ("", "", *args))
    state_key, phase, default = fence
    return Script(lua, (state_key, *keys), (phase, default, *args))


def stale(reply: Any) -> bool:
    return isinstance(reply, list) and reply[:1] == ["stale"]


# -- writes ----------------------------------------------------------------------------------


# Jobs per ENQUEUE call of an enqueue_many: a call runs about 15 us per job in Redis, which
# serves nothing else meanwhile; larger batches are several calls in one pipeline.
ENQUEUE_CHUNK = 100


def enqueue_script(ctx: Context, jobs: Sequence[tuple[Job, dict[str, str]]]) -> Script:
    """One ENQUEUE call for ``jobs`` (see jobstore/lua/enqueue.lua for the layout)."""
    legacy = (ctx.legacy_queue, ctx.keys.queue_mode) if ctx.legacy_queue else ()
    keys: list[str] = [ctx.keys.queue, *(legacy or (ctx.keys.queue, ctx.keys.queue))]
    args: list[Any] = ["1" if legacy else "", len(jobs)]
    for job, fields in jobs:
        ws, job_id = job.workspace_id, job.job_id
        routing = ctx.strategy.routing(ws)
        writes = [s.job_key(ws, job_id) for s in routing.writes]
        checks = [key for key in (s.job_key(ws, job_id) for s in routing.known) if key not in writes]
        entry = queue_entry(ctx, ws, job_id, fields["created_at"], routing.known)
        keys += (ctx.keys.gone(ws, job_id), ctx.keys.index(ws), *writes, *checks)
        args += (len(writes), len(checks), fields[OP], job_id, repr(job.created_at), entry,
                 2 * len(fields), *chain.from_iterable(fields.items()))
    return fenced_script(ctx, ENQUEUE, tuple(keys), tuple(args))


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
    (outcome,) = reply
    if outcome[0] == "error":  # as if Redis had refused the command itself (RedisCommandError)
        raise Refused(outcome[1])
    result = enqueue_outcome(job, outcome)
    if result is None:
        raise JobExists([job.job_id])
    return result


def enqueue_many(ctx: Context, jobs: list[tuple[Job, dict[str, str]]]) -> Op[list[Job]]:
    replies: list[Any] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    while todo:
        # A job Redis refuses (OOM, a key in the way) is that job's failure: nothing of it was
        # written, and the rest of the batch goes on.
        chunks = [todo[i:i + ENQUEUE_CHUNK] for i in range(0, len(todo), ENQUEUE_CHUNK)]
        sent = yield Batch(tuple(enqueue_script(ctx, [jobs[i] for i in chunk]) for chunk in chunks),
                           tolerate_errors=True)
        for chunk, reply in zip(chunks, sent):
            for n, i in enumerate(chunk):
                replies[i] = reply if isinstance(reply, Exception) or stale(reply) else reply[n]
        todo = [i for i in todo if stale(replies[i])]
        if todo:
            yield Refresh()
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
) -> Op[Job]:
    allowed = " ".join(s.value for s in statuses_allowed_before(status))
    stamp, iso = now(ctx)
    fields = {"status": status.value, **changes, "updated_at": stamp}
    flat = [part for item in fields.items() for part in item]
    marker = ctx.keys.op(ctx.new_token(), near=ctx.keys.index(workspace_id))
    spent = spent_markers(ctx, mine=marker)
    try:
        while True:
            routing = ctx.strategy.routing(workspace_id)
            (reply,) = yield Batch((fenced_script(
                ctx, UPDATE_STATUS,
                (marker, *_keys(routing.touched, workspace_id, job_id), ctx.keys.leases, *spent),
                (workspace_id, ctx.marker_ttl, allowed, ctx.max_record_bytes, "", claim or "", "",
                 1 + len(spent), iso, *flat),
            ),))
            if reply[0] == "not_mine":  # another call's marker: nothing was written; a new token
                marker = ctx.keys.op(ctx.new_token(), near=ctx.keys.index(workspace_id))
                spent = []
                continue
            if not stale(reply):
                break
            yield Refresh()
    finally:
        ctx.spent_markers.append(marker)  # this call has its answer (or has given up)
    return update_outcome(ctx, reply, job_id, workspace_id, status, claim=claim)


# Op markers one script deletes at most (ops.spent_markers); the rest wait for the next ones.
SPENT_PER_CALL = 32


def spent_markers(ctx: Context, most: int = SPENT_PER_CALL, mine: str = "",
                  pool: deque[str] | None = None) -> list[str]:
    """Up to ``most`` op markers of this store's earlier calls that have their answer, taken
    off its list (thread-safe: another thread's call takes the others), for a script to
    delete: no re-send of those calls can come any more, so a marker lives until the store's
    next call instead of its whole ttl. Never ``mine``, the asking call's own marker.
    ``pool``: the list to take them from (default ``ctx.spent_markers``)."""
    spent: list[str] = []
    pool = ctx.spent_markers if pool is None else pool
    while len(spent) < most:
        try:
            marker = pool.popleft()
        except IndexError:
            break
        if marker != mine:
            spent.append(marker)
    return spent


def update_outcome(ctx: Context, reply: list[Any], job_id: str, workspace_id: str, status: JobStatus,
                   operation: str = "update_status", claim: str | None = None) -> Job:
    """The job an UPDATE_STATUS reply holds, or the error it stands for.

    :raises InvalidTransition, PayloadTooLarge, JobNotFound, CorruptRecord, LeaseLost: (nothing
        was written)
    """
    if reply[0] == "lease_lost":
        attempts = int(reply[1])
        held = reply[2] == JobStatus.RUNNING.value and attempts > 0
        raise LeaseLost(job_id, claim or "", attempts if held else None,
                        f"the job is {reply[2] or 'pending'}")
    if reply[0] == "invalid":
        raise InvalidTransition(job_id, reply[1], status.value)
    if reply[0] == "too_large":
        raise PayloadTooLarge(int(reply[1]), ctx.max_record_bytes)
    if reply[0] == "corrupt":
        raise corrupt(ctx, operation, reply[1], reply[2], reply[3])
    if reply[0] == "missing" or not reply[1:] or not reply[1]:
        raise JobNotFound(job_id, workspace_id)
    return decode(ctx, operation, reply[2] if len(reply) > 2 else None, as_record(reply[1]))


def delete(ctx: Context, job_id: str, workspace_id: str) -> Op[bool]:
    token = ctx.new_token()
    while True:
        routing = ctx.strategy.routing(workspace_id)
        (reply,) = yield Batch((fenced_script(
            ctx, DELETE,
            (ctx.keys.gone(workspace_id, job_id), ctx.keys.index(workspace_id), ctx.keys.leases,
             *_keys(routing.known, workspace_id, job_id)),
            (workspace_id, ctx.marker_ttl, job_id, token),
        ),))
        if not stale(reply):
            return bool(reply)
        yield Refresh()


def _dequeue_script(ctx: Context, source: str, marker: str, token: str, lease_ms: int,
                    resolved: str = "", spent: Sequence[str] = ()) -> Script:
    # Routing is read afresh for every attempt, so a long wait follows a phase switch.
    schemas = tuple(s.lua_template if s.lua_template is not None else "\x03" + s.name
                    for s in ctx.strategy.routing(None).touched)
    stamp, iso = now(ctx)
    return fenced_script(
        ctx,
        DEQUEUE,
        (source, ctx.keys.queue, marker, ctx.keys.dead, ctx.keys.leases,
         ctx.legacy_queue or ctx.keys.queue, ctx.keys.queue_mode, *spent),
        (ctx.marker_ttl, stamp, ctx.dequeue_scan, ctx.max_dead_letters, lease_ms,
         ctx.max_attempts, token, resolved, iso, "1" if ctx.legacy_queue else "", *schemas),
    )


def resolve(ctx: Context, entry: str, workspace: str = "") -> str:
    """The computed schemas' keys of a queue entry that does not carry them all (enqueued before
    the store read a computed schema), for the DEQUEUE script's ARGV[8]. ``workspace``: the
    one the script found for a bare job id."""
    head = ctx.keys.entry_head(entry)
    workspace_id, job_id, _ = ctx.keys.parse_queue_entry(entry)
    if ":" not in head:
        workspace_id, job_id = workspace, head
    touched = ctx.strategy.routing(None).touched
    return head + "".join(
        f"{CARRIED}{name}={key}" for name, key in carried_keys(touched, workspace_id, job_id))


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
        return decode(ctx, "dequeue", reply[3] if len(reply) > 3 else None, as_record(reply[1]))
    return None


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
    deadline = None if timeout is None else time.monotonic() + timeout
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
        remaining = None if deadline is None else deadline - time.monotonic()
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
        _, _, reply = yield Batch(
            (Script(LEASE_LIST, (ctx.keys.leases,), (claim, int((wait + ctx.list_grace) * 1000))),
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


def extend(ctx: Context, job: Job, lease_ms: int) -> Op[None]:
    """Renew ``job``'s lease for ``lease_ms`` from now (server time), while the job's record
    is running under its claim (one script reads the record and renews the lease).

    :raises LeaseLost: the claim has ended (taken over, finished, deleted; its lease is dropped).
    """
    while True:
        keys = _keys(ctx.strategy.routing(job.workspace_id).touched, job.workspace_id, job.job_id)
        (until,) = yield Batch((fenced_script(ctx, EXTEND, (ctx.keys.leases, *keys),
                                              (job.claim, lease_ms, job.workspace_id)),))
        if not stale(until):
            break
        yield Refresh()
    if not until:
        raise LeaseLost(job.job_id, job.claim or "", detail="its claim has ended")
    return None


def leave_legacy_queue(ctx: Context, batch: int) -> Op[dict[str, int]]:
    """Move every id of the compatible queue into jobstore's own, ``batch`` per script call."""
    assert ctx.legacy_queue is not None, "JobStore.leave_legacy_queue checks the store has one"
    templates = tuple(s.lua_template for s in ctx.strategy.routing(None).known
                      if s.lua_template is not None and WORKSPACE_MARK not in s.lua_template)
    totals = {"moved": 0, "dropped": 0, "remaining": 0}
    while True:
        (reply,) = yield Batch((Script(LEAVE_LEGACY_QUEUE,
                                       (ctx.legacy_queue, ctx.keys.queue, ctx.keys.queue_mode),
                                       (batch, *templates)),))
        moved, dropped, remaining = (int(n) for n in reply)
        totals["moved"] += moved
        totals["dropped"] += dropped
        totals["remaining"] = remaining
        if not remaining or not moved + dropped:
            return totals


# -- reads -----------------------------------------------------------------------------------


def _keys(schemas: Iterable[KeySchema], workspace_id: str, job_id: str) -> tuple[str, ...]:
    return tuple(s.job_key(workspace_id, job_id) for s in schemas)


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
    keys = _keys(schemas, workspace_id, job_id)
    if len(keys) > 1 and not routing.shadow and not ctx.cluster:
        # Two schemas to read (dual's fallback), standalone: the first record that answers, in
        # one command rather than a pipeline of one HGETALL per key.
        ((position, *found),) = yield Batch((Script(READ_FIRST, keys, (workspace_id,)),))
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
    """
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
        keys = [_keys(routing.reads, workspace_id, job_id) for job_id in ids]
        replies = yield Batch(
            tuple(Command(("HGETALL", key)) for per_job in keys for key in per_job)
        )
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
