"""Reading what Redis answers: records, the keys of a job's records, and the replies the
scripts share, for the standalone and the Cluster operations alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import CorruptRecord, InvalidTransition, JobNotFound, LeaseLost, PayloadTooLarge
from ..job import Job, JobStatus, statuses_allowed_before
from ..schema import KeySchema
from ..steps import Script
from . import calls
from .calls import Fence
from .context import Context


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


def fence(ctx: Context) -> Fence:
    """The fence of a routed script call (jobstore/lua/includes/fence.lua): the phase its routing
    came from, None on Redis Cluster or for a strategy that follows no stored state."""
    return None if ctx.cluster else ctx.strategy.fence()


def move(ctx: Context, *, marker: str, records: Sequence[str], workspace_id: str,
         status: JobStatus, fields: dict[str, str], spent: Sequence[str] | None = None,
         stamp: str = "", claim: str = "", hand_out: bool = False, iso: str = "",
         ttl_ms: int | None = None, allowed: str | None = None) -> Script:
    """The UPDATE_STATUS call of a move to ``status`` (``fields`` written) under the store's
    settings: from a status that may precede it (``allowed``: this one only). ``spent``: the
    op markers the call deletes, standalone (None on Redis Cluster, which takes no leases
    key)."""
    before = (allowed,) if allowed is not None else _ALLOWED_BEFORE[status]
    return calls.update_status(
        fence(ctx), marker=marker, records=records,
        leases=None if spent is None else ctx.keys.leases, spent=spent or (),
        workspace_id=workspace_id, marker_ttl=ctx.marker_ttl, allowed=before,
        max_record_bytes=ctx.max_record_bytes, fields=fields, stamp=stamp, claim=claim,
        hand_out=hand_out, iso=iso, ttl_ms=ttl_ms, finished_ttl_ms=ctx.finished_ttl_ms)


# The statuses a move to each status may start from, as the scripts are sent them.
_ALLOWED_BEFORE = {status: tuple(s.value for s in statuses_allowed_before(status))
                   for status in JobStatus}


def stale(reply: Any) -> bool:
    return isinstance(reply, list) and len(reply) > 0 and reply[0] == "stale"


def job_keys(schemas: Iterable[KeySchema], workspace_id: str, job_id: str) -> tuple[str, ...]:
    """The keys of a job's records in ``schemas``, in their order."""
    return tuple(s.job_key(workspace_id, job_id) for s in schemas)


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


def score_pairs(reply: Any) -> list[tuple[str, Any]]:
    """A sorted-set range read WITHSCORES as (member, score) pairs: redis-py gives pairs
    where it parses the reply (RESP3, redis-py 8), a flat list where it does not (RESP2)."""
    if reply and not isinstance(reply[0], (tuple, list)):
        return list(zip(reply[::2], reply[1::2]))
    return [(member, score) for member, score in reply or []]
