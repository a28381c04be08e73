"""Argument checks that run before anything touches Redis (contract section 5)."""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import ConfigError, InvalidArgument, InvalidIdentifier, PayloadTooLarge
from .job import JobStatus, encode_json

IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
# A key prefix may nest namespaces with ':' but can never carry glob or hash-tag characters.
PREFIX = re.compile(r"[A-Za-z0-9_.\-]+(?::[A-Za-z0-9_.\-]+)*")
MAX_ACTION_LENGTH = 256
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024


def identifier(argument: str, value: Any) -> str:
    """Return ``value`` if it is a valid workspace or job id, else raise InvalidIdentifier."""
    if not isinstance(value, str):
        raise InvalidIdentifier(argument, value, f"must be a str, not {type(value).__name__}")
    if not IDENTIFIER.fullmatch(value):
        if not value:
            reason = "must not be empty"
        elif len(value) > 128:
            reason = f"is {len(value)} characters long; the limit is 128"
        else:
            bad = sorted({c for c in value if not IDENTIFIER.fullmatch(c)})
            reason = f"may only contain A-Z a-z 0-9 _ . - (found {''.join(bad)!r})"
        raise InvalidIdentifier(argument, value, reason)
    return value


def prefix(value: Any) -> str:
    if not isinstance(value, str) or not PREFIX.fullmatch(value):
        raise ConfigError(f"prefix {value!r} must be segments of A-Z a-z 0-9 _ . - separated by ':'")
    return value


def action(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgument("action", f"must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidArgument("action", "must not be empty")
    if len(value) > MAX_ACTION_LENGTH:
        raise InvalidArgument(
            "action", f"is {len(value)} characters long; the limit is {MAX_ACTION_LENGTH}"
        )
    if not value.isprintable():
        raise InvalidArgument("action", f"{value!r} contains non-printable characters")
    return value


def status(value: Any) -> JobStatus:
    try:
        return JobStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise InvalidArgument("status", f"{value!r} is not one of {allowed}") from None


def params(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument("params", f"must be a dict, not {type(value).__name__}")
    json_value("params", value)
    return value


def json_value(argument: str, value: Any) -> str:
    """Encode ``value`` as JSON or raise InvalidArgument naming ``argument``."""
    try:
        return encode_json(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(argument, f"must be JSON-serialisable ({exc})") from None


def error_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidArgument("error", f"must be a str or None, not {type(value).__name__}")


def limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument("limit", f"must be a positive int, not {value!r}")
    return value


def timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
        raise InvalidArgument("timeout", f"must be a number >= 0 or None, not {value!r}")
    return float(value)


def record_size(fields: dict[str, str], max_bytes: int) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())
    if size > max_bytes:
        raise PayloadTooLarge(size, max_bytes)
