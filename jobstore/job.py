"""The job record, its statuses, and its stored form (one Redis hash of strings)."""

from __future__ import annotations

import datetime
import enum
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from collections.abc import Mapping

# The JSON text form and the time formats are the codec's; TIME_FORMATS and encode_json are also
# importable from here, where they were defined before.
from .codec import TIME_FORMATS as TIME_FORMATS
from .codec import Codec, _decode_json, encode_json
from .errors_base import CorruptRecord
from .rules import count as count


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

    def can_move_to(self, other: JobStatus) -> bool:
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
    params: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # How many times a dequeue has handed the job out (a lease that ran out hands it out again),
    # and the opaque claim of the current hand-out: ``update_status(..., claim=job.claim)`` and
    # ``store.extend(job)`` are refused once another worker has taken the job over.
    attempts: int = 0
    claim: str | None = None

    @classmethod
    def _of(cls, job_id: str, workspace_id: str, action: str, status: JobStatus,
            params: dict[str, Any], result: Any, error: str | None, created_at: float,
            updated_at: float, attempts: int = 0, claim: str | None = None) -> Job:
        """``cls(...)`` of fields already checked (every enqueue and read builds one): the
        same job, its fields set in their order straight into its ``__dict__`` (which keeps the
        instances' dicts sharing their keys), not one by one through ``object.__setattr__`` as a
        frozen dataclass's ``__init__`` sets them (~0.5 us, not ~1.5). A subclass of Job is
        built by its own ``__init__`` (its fields, its ``__post_init__``)."""
        if cls is not Job:
            return cls(job_id, workspace_id, action, status, params, result, error, created_at,
                       updated_at, attempts, claim)
        job = _new_object(cls)
        fields = job.__dict__
        fields["job_id"] = job_id
        fields["workspace_id"] = workspace_id
        fields["action"] = action
        fields["status"] = status
        fields["params"] = params
        fields["result"] = result
        fields["error"] = error
        fields["created_at"] = created_at
        fields["updated_at"] = updated_at
        fields["attempts"] = attempts
        fields["claim"] = claim
        return job

    def to_hash(self, time_format: str = "epoch") -> dict[str, str]:
        """The stored form: every value a string, None as ``""``, JSON for params/result, times
        as epoch seconds (``time_format="epoch"``) or ISO 8601 (``"iso"``)."""
        return {
            "job_id": self.job_id,
            "workspace_id": self.workspace_id,
            "action": self.action,
            "status": self.status.value,
            "params": encode_json(self.params),
            "result": "" if self.result is None else encode_json(self.result),
            "error": "" if self.error is None else self.error,
            "created_at": format_time(self.created_at, time_format),
            "updated_at": format_time(self.updated_at, time_format),
            # Written by dequeue only; a job never handed out stores neither (memory per job).
            **({"attempts": str(self.attempts)} if self.attempts else {}),
            **({"claim": self.claim} if self.claim else {}),
        }

    @classmethod
    def pending(cls, job_id: str, workspace_id: str, action: str, params_json: str,
                seconds: float, time_format: str = "epoch",
                params: dict[str, Any] | None = None) -> tuple[Job, dict[str, str]]:
        """A new job and its stored form (as :meth:`to_hash` writes it), from ``params``
        already encoded (:func:`encode_json`); the job holds what :meth:`from_hash` reads back.
        The enqueue path: nothing is encoded or decoded twice. ``params``: what
        ``params_json`` decodes to, when the caller knows it (:func:`plain_params`)."""
        stamp = format_time(seconds, time_format)
        created = float(stamp) if time_format == "epoch" else _checked_time(stamp)
        if params is None:
            params = _decode_json(params_json) if params_json != "{}" else {}
        job = cls._of(job_id, workspace_id, action, JobStatus.PENDING, params, None, None,
                      created, created)
        return job, {"job_id": job_id, "workspace_id": workspace_id, "action": action,
                     "status": JobStatus.PENDING.value, "params": params_json, "result": "",
                     "error": "", "created_at": stamp, "updated_at": stamp}

    @classmethod
    def from_hash(cls, data: Mapping[str, str], key: str | None = None,
                  codec: Codec | None = None) -> Job:
        """Rebuild a job from its stored hash; fields jobstore does not know are ignored.

        ``key``: where the hash was read, named by the error.

        :raises CorruptRecord: a field every reader relies on is missing or not what jobstore
            writes (see :func:`record_problem`).
        """
        read = cls._read(data, codec)
        if isinstance(read, tuple):
            raise CorruptRecord(key, *read)
        return read

    @classmethod
    def _read(cls, data: Mapping[str, str], codec: Codec | None = None) -> Job | tuple[str, str]:
        """The job ``data`` holds, or ``(field, reason)`` of its first problem (as
        :func:`record_problem`, and a value ``codec`` cannot decode): every field checked and
        read once. ``codec``: how ``params`` and ``result`` are stored (None: jobstore's JSON)."""
        times = _record_times(data)
        if isinstance(times[0], str):
            return times  # (field, reason)
        params_text = data.get("params") or ""
        result_text = data.get("result") or ""
        if codec is None:
            params = _decode_json(params_text) if params_text else {}
            result = _decode_json(result_text) if result_text else None
        else:
            try:
                params = codec.decode("params", params_text) if params_text else {}
            except Exception as exc:  # noqa: BLE001 - a plugin's codec: any failure is the record's
                return "params", f"codec {codec.name!r} cannot decode it: {type(exc).__name__}: {exc}"
            try:
                result = codec.decode("result", result_text) if result_text else None
            except Exception as exc:  # noqa: BLE001
                return "result", f"codec {codec.name!r} cannot decode it: {type(exc).__name__}: {exc}"
        # Positionally, in the order of the fields (job_id ... claim): every read builds one.
        return cls._of(data["job_id"], data["workspace_id"], data.get("action", ""),
                       _STATUS_OF[data.get("status") or "pending"], params, result,
                       data.get("error") or None, times[0], times[1],
                       count(data.get("attempts")), data.get("claim") or None)


# A time as jobstore reads it: epoch seconds as jobstore writes them (the repr of a float,
# 1732816496.123456, 1e+16, or an integer), or ISO 8601 text as other Python services write it
# (2025-10-17T12:34:56.123456, with a 'T' or a space, optional seconds and fraction, and a zone
# 'Z', '+HH:MM', '+HHMM' or '+HH'; no zone is UTC; a date alone is its midnight, UTC). The
# scripts apply the same rule in Lua (jobstore/lua/includes/record_check.lua), before they write.
_TIME = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")
_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
                  r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?"
                  r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?")
_STATUSES = frozenset(s.value for s in JobStatus)
_STATUS_OF = {s.value: s for s in JobStatus}


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Howard Hinnant's days_from_civil: the same arithmetic as the Lua twin, no datetime range.
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def parse_time(value: str | None) -> float | None:
    """Epoch seconds of a stored time (epoch seconds or ISO 8601, see above), or None when it
    is not one."""
    if not value:
        return None
    if value.isascii() and value[0].isdigit() and (
            value.isdigit() or (value.count(".") == 1 and value.replace(".", "").isdigit())):
        # The common case, as jobstore writes it (1732816496.123456): _TIME accepts it too.
        number = float(value)
        return number if math.isfinite(number) else None
    if _TIME.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else None
    match = _ISO.fullmatch(value)
    if match is None:
        return None
    y, mo, d, h, mi, sec, frac, zone = match.groups()
    y, mo, d = int(y), int(mo), int(d)
    h, mi, sec = int(h or 0), int(mi or 0), int(sec or 0)
    if not (1 <= y and 1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo)
            and h <= 23 and mi <= 59 and sec <= 59):
        return None
    offset = 0
    if zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:] or 0)
        if oh > 23 or om > 59:
            return None
        offset = (oh * 3600 + om * 60) * (1 if zone[0] == "+" else -1)
    seconds = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
    return seconds + (int(frac) / 10 ** len(frac) if frac else 0.0)


def is_iso(value: str | None) -> bool:
    """Whether a stored time is ISO 8601 text (so that an update keeps writing that form)."""
    return bool(value and _ISO.fullmatch(value))


def _checked_time(value: str) -> float:
    """A time :func:`record_problem` has already accepted."""
    seconds = parse_time(value)
    assert seconds is not None, "record_problem accepts only times"
    return seconds


_new_object = object.__new__


def format_time(seconds: float, time_format: str = "epoch") -> str:
    """A time as jobstore writes it: ``repr`` of the float, or ISO 8601 in UTC with microseconds
    and ``+00:00`` (``datetime.isoformat``)."""
    if time_format == "iso":
        return _from_timestamp(seconds, _UTC).isoformat(timespec="microseconds")
    return repr(float(seconds))


_from_timestamp = datetime.datetime.fromtimestamp
_UTC = datetime.timezone.utc


def record_problem(data: Mapping[str, str]) -> tuple[str, str] | None:
    """``(field, reason)`` of the first field that keeps ``data`` from reading as a job, or None.

    Required: ``job_id`` and ``workspace_id`` (non-empty), ``created_at`` (a time: epoch
    seconds or ISO 8601, see :func:`parse_time`); ``updated_at``, when present and not empty, a
    time too (missing, it reads as ``created_at``). ``status`` must be one of the enum or empty
    (``""`` and a missing status read as ``pending``). Everything else is lenient, as before:
    ``params``/``result`` that are not JSON come back as the raw text, a missing ``action`` is
    ``""``. Every field a job is read from (:data:`TEXT_FIELDS`) must be UTF-8 text, whatever
    else it may hold. The scripts check the same rules before they write
    (``jobstore/lua/includes/record_check.lua``).
    """
    times = _record_times(data)
    return times if isinstance(times[0], str) else None


def _record_times(data: Mapping[str, str]) -> tuple[str, str] | tuple[float, float]:
    """``(created_at, updated_at)`` in epoch seconds, or ``(field, reason)`` of the first
    problem :func:`record_problem` describes."""
    for name in ("job_id", "workspace_id"):
        if not data.get(name):
            return name, "missing"
    status = data.get("status")
    if status and status not in _STATUSES:
        return "status", "not a job status"
    created_text = data.get("created_at")
    if not created_text:
        return "created_at", "missing"
    created = parse_time(created_text)
    if created is None:
        return "created_at", NOT_A_TIME
    updated_text = data.get("updated_at")  # optional: a record never updated may lack it
    updated = created
    if updated_text:
        parsed = parse_time(updated_text)
        if parsed is None:
            return "updated_at", NOT_A_TIME
        updated = parsed
    if not _all_ascii(data):  # else every field is text already (ASCII is UTF-8)
        for name in TEXT_FIELDS:
            value = data.get(name)
            if value and not value.isascii() and not _utf8(value):
                return name, NOT_UTF8
    return created, updated


def _all_ascii(data: Mapping[str, str]) -> bool:
    """Whether every value of ``data`` is ASCII text: one look at the whole record, the common
    case, instead of one per field."""
    try:
        return "".join(data.values()).isascii()
    except TypeError:  # a value that is not a str: the fields are looked at one by one
        return False


NOT_A_TIME = "not a time (epoch seconds or ISO 8601)"
NOT_UTF8 = "not UTF-8 text"
# The fields a Job is read from, in the order their bytes are checked to be UTF-8 (after the
# rules above; lua/includes/record_check.lua checks the same fields in the same order). Others
# are not read, and may hold any bytes.
TEXT_FIELDS = ("job_id", "workspace_id", "action", "status", "params", "result", "error",
               "created_at", "updated_at", "attempts", "claim")


def _utf8(value: str) -> bool:
    """Whether ``value`` was UTF-8 in Redis: jobstore's clients read other bytes as lone
    surrogates (``surrogateescape``, see jobstore.connection.DECODING), which do not encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})


def plain_params(params: dict[str, Any]) -> dict[str, Any] | None:
    """What the JSON of ``params`` (checked already: finite floats, valid text) decodes to,
    without decoding it, when that is easy to know: str keys and values that are exactly str,
    int, float, bool or None come back equal, in sorted key order (:func:`encode_json` sorts).
    None for anything else (nested values, tuples, subclasses, keys JSON converts)."""
    for key, value in params.items():
        if type(key) is not str or type(value) not in _PLAIN_VALUES:
            return None
    return dict(sorted(params.items()))
