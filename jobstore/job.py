"""The job record, its statuses, and its stored form (one Redis hash of strings)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


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
        }

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> "Job":
        """Rebuild a job from its stored hash; fields jobstore does not know are ignored."""
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
            created_at=float(data.get("created_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
        )


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
