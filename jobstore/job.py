"""The job record, its statuses, and its stored form (one Redis hash of strings)."""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .errors import CorruptRecord


class JobStatus(str, enum.Enum):
    """The life-cycle of a job. Terminal states are final."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    def can_move_to(self, other: "JobStatus") -> bool:
        return other in ALLOWED_MOVES[self]


ALLOWED_MOVES: Mapping[JobStatus, frozenset[JobStatus]] = MappingProxyType(
    {
        JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
        JobStatus.RUNNING: frozenset(
            {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
        ),
        JobStatus.COMPLETED: frozenset(),
        JobStatus.FAILED: frozenset(),
        JobStatus.CANCELLED: frozenset(),
    }
)
TERMINAL = frozenset(s for s, moves in ALLOWED_MOVES.items() if not moves)


def statuses_allowed_before(status: JobStatus) -> list[JobStatus]:
    """The statuses from which a job may move to ``status``."""
    return [s for s, moves in ALLOWED_MOVES.items() if status in moves]


# The fields jobstore owns in a stored hash; any other field is preserved untouched.
FIELDS = (
    "job_id",
    "workspace_id",
    "action",
    "status",
    "params",
    "result",
    "error",
    "created_at",
    "updated_at",
    "attempts",
    "claim",
)


@dataclass(frozen=True)
class Job:
    """One background job, as read from the store. Immutable."""

    job_id: str
    workspace_id: str
    action: str
    status: JobStatus
    params: dict = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # How many times a dequeue has handed the job out (a lease that ran out hands it out again),
    # and the opaque claim of the current hand-out: ``update_status(..., claim=job.claim)`` and
    # ``store.extend(job)`` are refused once another worker has taken the job over.
    attempts: int = 0
    claim: str | None = None

    def to_hash(self) -> dict[str, str]:
        """The stored form: every value a string, None as ``""``, JSON for params/result."""
        return {
            "job_id": self.job_id,
            "workspace_id": self.workspace_id,
            "action": self.action,
            "status": self.status.value,
            "params": encode_json(self.params),
            "result": "" if self.result is None else encode_json(self.result),
            "error": "" if self.error is None else self.error,
            "created_at": repr(float(self.created_at)),
            "updated_at": repr(float(self.updated_at)),
            # Written by dequeue only; a job never handed out stores neither (memory per job).
            **({"attempts": str(self.attempts)} if self.attempts else {}),
            **({"claim": self.claim} if self.claim else {}),
        }

    @classmethod
    def from_hash(cls, data: Mapping[str, str], key: str | None = None) -> "Job":
        """Rebuild a job from its stored hash; fields jobstore does not know are ignored.

        ``key``: where the hash was read, named by the error.

        :raises CorruptRecord: a field every reader relies on is missing or not what jobstore
            writes (see :func:`record_problem`).
        """
        problem = record_problem(data)
        if problem is not None:
            raise CorruptRecord(key, *problem)
        params = data.get("params") or ""
        result = data.get("result") or ""
        return cls(
            job_id=data["job_id"],
            workspace_id=data["workspace_id"],
            action=data.get("action", ""),
            status=JobStatus(data.get("status") or "pending"),
            params=_decode_json(params) if params else {},
            result=_decode_json(result) if result else None,
            error=data.get("error") or None,
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            attempts=count(data.get("attempts")),
            claim=data.get("claim") or None,
        )


# A time as jobstore stores it: the repr of a float (1732816496.123456, 1e+16), or an integer.
# The scripts apply the same rule in Lua (scripts.RECORD_CHECK), before they write.
_TIME = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")
_STATUSES = frozenset(s.value for s in JobStatus)


def _is_time(value: str | None) -> bool:
    return bool(value) and _TIME.fullmatch(value) is not None and math.isfinite(float(value))


def count(value: str | None) -> int:
    """A stored counter (``attempts``): up to 15 decimal digits, else 0, as the scripts read it."""
    return int(value) if value and len(value) <= 15 and value.isascii() and value.isdigit() else 0


def record_problem(data: Mapping[str, str]) -> tuple[str, str] | None:
    """``(field, reason)`` of the first field that keeps ``data`` from reading as a job, or None.

    Required: ``job_id`` and ``workspace_id`` (non-empty), ``created_at`` and ``updated_at`` (a
    finite decimal number, as jobstore writes them). ``status`` must be one of the enum or empty
    (``""`` and a missing status read as ``pending``). Everything else is lenient, as before:
    ``params``/``result`` that are not JSON come back as the raw text, a missing ``action`` is
    ``""``. The scripts check the same rules before they write (``scripts.RECORD_CHECK``).
    """
    for name in ("job_id", "workspace_id"):
        if not data.get(name):
            return name, "missing"
    status = data.get("status")
    if status and status not in _STATUSES:
        return "status", "not a job status"
    for name in ("created_at", "updated_at"):
        value = data.get(name)
        if not value:
            return name, "missing"
        if not _is_time(value):
            return name, "not a decimal number"
    return None


def encode_json(value: Any) -> str:
    """Compact, deterministic JSON (so equal values store equal text).

    :raises TypeError, ValueError: ``value`` is not JSON (nesting too deep for the encoder is a
        ValueError too, not a RecursionError). The store checks arguments first, see
        :func:`jobstore.validation.json_value`.
    """
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except RecursionError:
        problem = "nested too deeply to encode as JSON"
    raise ValueError(problem)


def _decode_json(text: str) -> Any:
    # Records written by older code may hold plain text here; hand it back rather than fail.
    try:
        return json.loads(text)
    except ValueError:
        return text
