"""``finish``: a worker's move of its job to a final status and its claim of the next job.

What a worker loop did in two calls, ``update_status(..., claim=job.claim)`` then
``dequeue(timeout=0)``, with the same outcomes, errors, events, leases and dead letters:

- Standalone Redis: one script, jobstore/lua/finish.lua, runs update_status.lua's move and then,
  only once the move is made, dequeue.lua's claim, in one atomic step (one round trip). One op
  marker answers for both halves, so a re-sent call answers what its first attempt did: the move
  as made, the job the first attempt claimed (never a second one). When the claim half needs more
  (only entries it dropped or dead-lettered so far, or an entry whose computed schemas' keys the
  store must resolve), the take goes on as ``dequeue`` does, under the same marker.
- Redis Cluster: the record, the queue and the claim sit in different slots, and no script spans
  two: the move is jobstore.ops.cluster's update_status, then the take its dequeue, the steps
  those calls send (docs/cluster.md counts them).
"""

from __future__ import annotations

from ..job import Job, JobStatus
from ..steps import Script
from . import calls
from . import cluster as ops_cluster
from .context import Context, Op
from .queue import _claimed, _dequeue, _dequeue_script
from .queue import dequeue as standalone_dequeue
from .records import update_outcome
from .writes import moved
from .writes import update_status as standalone_update


def finish(ctx: Context, job: Job, status: JobStatus, changes: dict[str, str], take_next: bool,
           lease_ms: int | None = None, ttl_ms: int | None = None) -> Op[Job | None]:
    """Move ``job`` (a dequeued job: its claim fences the move) to ``status`` with ``changes``
    (encoded ``result``/``error``), then, with ``take_next``, claim the next job without waiting,
    leased for ``lease_ms`` (default: the store's lease). Returns that job, or None.
    ``ttl_ms``: how long the finished job's records live (None: as update_status decides).

    :raises LeaseLost, InvalidTransition, JobNotFound, CorruptRecord, PayloadTooLarge: as
        update_status; nothing was written and nothing claimed.
    """
    if ctx.cluster or not take_next:
        update = ops_cluster.update_status if ctx.cluster else standalone_update
        take = ops_cluster.dequeue if ctx.cluster else standalone_dequeue
        yield from update(ctx, job.job_id, job.workspace_id, status, changes, claim=job.claim,
                          ttl_ms=ttl_ms)
        return (yield from take(ctx, 0, lease_ms)) if take_next else None
    marker = [ctx.keys.op(ctx.new_token(), near=ctx.keys.queue)]
    try:
        return (yield from _finish(ctx, job, status, changes, lease_ms, marker, ttl_ms))
    finally:
        ctx.spent_markers.append(marker[0])  # this call has its answer (or has given up)


def _finish(ctx: Context, job: Job, status: JobStatus, changes: dict[str, str],
            lease_ms: int | None, marker: list[str], ttl_ms: int | None) -> Op[Job | None]:
    """``marker[0]``: the call's op marker, both halves' (a new one when it was another call's)."""
    claim = job.claim or ""
    lease_ms = ctx.lease_ms if lease_ms is None else lease_ms

    def joined(move: Script) -> Script | None:
        take = _dequeue_script(ctx, ctx.keys.queue, marker[0], marker[0].rsplit(":", 1)[1],
                               lease_ms)
        if calls.fence_of(move) != calls.fence_of(take):
            return None  # the routing state was refreshed in between: both halves from one
        return calls.finish(move, take)

    # Never this call's own marker (a call re-sent whole, with its token, after it gave up).
    reply = yield from moved(ctx, job.job_id, job.workspace_id, status, changes, claim, ttl_ms,
                             joined, shared=marker)
    if reply[0][0] not in ("updated", "replayed"):  # the move was refused: nothing written
        update_outcome(ctx, reply[0], job.job_id, job.workspace_id, status, claim=claim)  # raises
    (claimed,) = reply[1:]
    found = _claimed(ctx, claimed)
    if claimed[0] in ("job", "replayed"):
        return found
    if claimed[0] == "empty":
        return None
    # 'busy' or 'need': go on as dequeue does (no wait), under this call's marker.
    return (yield from _dequeue(ctx, 0, lease_ms, marker[0]))
