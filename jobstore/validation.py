"""Argument checks that run before anything touches Redis."""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import ConfigError, InvalidArgument, InvalidIdentifier, PayloadTooLarge
from .codec import encode_json
from .job import JobStatus

# A workspace or job id: 1 to MAX_ID_LENGTH characters of the id alphabet: these ranges and
# these other characters. The forms below are made from them: ID_CLASS, a regular expression's
# class (rendered into the Lua scripts too), ID_CHARS, every character in order, ID_ALPHABET,
# as messages name it.
_ID_RANGES = ("A-Z", "a-z", "0-9")
_ID_OTHERS = "_.-"
ID_CLASS = "".join(_ID_RANGES) + _ID_OTHERS.replace("-", "\\-")
ID_CHARS = "".join(chr(c) for r in _ID_RANGES for c in range(ord(r[0]), ord(r[2]) + 1)) + _ID_OTHERS
ID_ALPHABET = " ".join([*_ID_RANGES, *_ID_OTHERS])
MAX_ID_LENGTH = 128
IDENTIFIER = re.compile(rf"[{ID_CLASS}]{{1,{MAX_ID_LENGTH}}}")
# A key prefix may nest namespaces with ':' but can never carry glob or hash-tag characters.
PREFIX = re.compile(rf"[{ID_CLASS}]+(?::[{ID_CLASS}]+)*")
MAX_ACTION_LENGTH = 256
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
# How deeply params and result may nest (the params dict itself is level 1). Far below where
# Python's json (or a consumer in another language: serde_json stops at 128) would hit its
# recursion limit, encoding here or decoding in get().
MAX_JSON_DEPTH = 100


def identifier(argument: str, value: Any) -> str:
    """Return ``value`` if it is a valid workspace or job id, else raise InvalidIdentifier."""
    if not isinstance(value, str):
        raise InvalidIdentifier(argument, value, f"must be a str, not {type(value).__name__}")
    if not IDENTIFIER.fullmatch(value):
        if not value:
            reason = "must not be empty"
        elif len(value) > MAX_ID_LENGTH:
            reason = f"is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        else:
            bad = sorted({c for c in value if not IDENTIFIER.fullmatch(c)})
            reason = f"may only contain {ID_ALPHABET} (found {''.join(bad)!r})"
        raise InvalidIdentifier(argument, value, reason)
    return value


def prefix(value: Any) -> str:
    if not isinstance(value, str) or not PREFIX.fullmatch(value):
        raise ConfigError(f"prefix {value!r} must be segments of A-Z a-z 0-9 _ . - separated by ':'")
    return value


def own_prefix(value: Any, key_prefix: str) -> str:
    """The prefix of jobstore's own keys (queue, indexes, leases, markers, migration state):
    ``value``, or the key prefix when None. Another value must sit apart from the key prefix
    (neither inside the other), so that no own key can ever be a record key, nor the reverse."""
    if value is None:
        return key_prefix
    if not isinstance(value, str) or not PREFIX.fullmatch(value):
        raise ConfigError(f"own_prefix {value!r} must be segments of A-Z a-z 0-9 _ . - "
                          "separated by ':'")
    if value != key_prefix and (f"{value}:".startswith(f"{key_prefix}:")
                                or f"{key_prefix}:".startswith(f"{value}:")):
        raise ConfigError(
            f"own_prefix {value!r} and the key prefix {key_prefix!r} must be the same or apart "
            f"(neither inside the other): jobstore's own keys would sit among the records; "
            f"e.g. own_prefix='jobstore'")
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
    text("action", value)
    if not value.isprintable():
        raise InvalidArgument("action", f"{value!r} contains non-printable characters")
    return value


def text(argument: str, value: str) -> str:
    """``value`` if it encodes as UTF-8 (what Redis is sent), else InvalidArgument.

    Only lone surrogates (U+D800-U+DFFF, e.g. from ``surrogateescape`` or UTF-16 halves) fail.
    """
    problem = text_problem(value)
    if problem is not None:
        raise InvalidArgument(argument, problem)
    return value


def text_problem(value: str) -> str | None:
    """Why ``value`` does not encode as UTF-8 (a lone surrogate), or None."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return _not_unicode(value, exc)
    return None


def _not_unicode(value: str, exc: UnicodeEncodeError) -> str:
    return (f"is not valid Unicode: it holds the lone surrogate {value[exc.start]!r} at index "
            f"{exc.start} (text must encode as UTF-8)")


# A status named by its value: the common case of status(), without the enum's lookup.
_STATUS_OF = {s.value: s for s in JobStatus}


def status(value: Any) -> JobStatus:
    if type(value) is JobStatus:
        return value
    if type(value) is str and value in _STATUS_OF:
        return _STATUS_OF[value]
    try:
        return JobStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise InvalidArgument("status", f"{value!r} is not one of {allowed}") from None


def params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument("params", f"must be a dict, not {type(value).__name__}")
    json_value("params", value)
    return value


def checked_json(argument: str, value: Any) -> Any:
    """``value`` once it passed :func:`json_value`'s checks (for a codec to encode)."""
    json_value(argument, value)
    return value


def params_json(value: Any) -> str:
    """``params`` checked (see :func:`params`) and encoded as stored, in one pass."""
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        raise InvalidArgument("params", f"must be a dict, not {type(value).__name__}")
    return json_value("params", value)


def json_value(argument: str, value: Any) -> str:
    """Encode ``value`` as JSON or raise InvalidArgument naming ``argument`` (and where in the
    value the problem is).

    Refused: anything ``json.dumps`` cannot encode (sets, bytes, objects, NaN and infinities,
    keys that are not str/int/float/bool/None), nesting deeper than :data:`MAX_JSON_DEPTH` (a
    value that contains itself included), and strings, keys too, that are not valid Unicode
    (lone surrogates: ``json.dumps`` would escape them, but the JSON is then not interoperable,
    and a surrogate pair written as two code points would read back as another string).
    """
    check_json(argument, value)
    try:
        return encode_json(value)
    except (TypeError, ValueError) as exc:  # what check_json lets through: keys of mixed types
        problem = f"must be JSON-serialisable ({exc})"  # (not sortable), ints of 4300+ digits
    raise InvalidArgument(argument, problem)


_CONTAINERS = (dict, list, tuple)
_PLAIN = frozenset({int, bool, type(None)})


def check_json(argument: str, value: Any) -> None:
    """Raise InvalidArgument unless ``value`` is JSON that round-trips; see :func:`json_value`.

    Iterative (no recursion of its own), one pass over the value.
    """
    # Each entry: a container, its nesting level, and its path as nested (parent, key) pairs,
    # rendered only for a message.
    stack: list[tuple[Any, int, Any]] = []
    _check_item(argument, value, 0, None, None, stack)
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidArgument(argument, f"is nested more than {MAX_JSON_DEPTH} levels deep "
                                            f"(at {_where(argument, path)}), or contains itself")
        # The common cases (ints, None, bools, ASCII text, finite floats) inline: this pass
        # costs about what json.dumps does.
        if isinstance(node, dict):
            for key, item in node.items():
                if type(key) is not str or not key.isascii():
                    _check_key(argument, key, path)
                kind = type(item)
                if kind in _PLAIN or (kind is str and item.isascii()) or (kind is float and item - item == 0):
                    continue
                _check_item(argument, item, depth, path, key, stack)
        else:
            for index, item in enumerate(node):
                kind = type(item)
                if kind in _PLAIN or (kind is str and item.isascii()) or (kind is float and item - item == 0):
                    continue
                _check_item(argument, item, depth, path, index, stack)


def _check_item(argument: str, item: Any, depth: int, path: Any, key: Any,
                stack: list[tuple[Any, int, Any]]) -> None:
    kind = type(item)
    if kind is str:
        if not item.isascii():
            _check_text(argument, item, (path, key))
    elif kind is int or kind is bool or item is None:
        pass
    elif kind is float:
        if not math.isfinite(item):
            raise InvalidArgument(argument, f"{_where(argument, (path, key))} is {item!r}; JSON has "
                                            "no NaN or infinity")
    elif kind in _CONTAINERS:
        stack.append((item, depth + 1, (path, key)))
    elif isinstance(item, str):
        _check_text(argument, item, (path, key))
    elif isinstance(item, float):
        _check_item(argument, float(item), depth, path, key, stack)
    elif isinstance(item, int):
        pass
    elif isinstance(item, _CONTAINERS):
        stack.append((item, depth + 1, (path, key)))
    else:
        raise InvalidArgument(argument, f"{_where(argument, (path, key))} is a "
                                        f"{_type_name(item)}, which JSON cannot encode")


def _check_key(argument: str, key: Any, path: Any) -> None:
    if isinstance(key, str):
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(argument, f"{_where(argument, path)} has a key {_short(key)} "
                                            f"that {_not_unicode(key, exc)}") from None
    elif isinstance(key, float) and not math.isfinite(key):
        raise InvalidArgument(argument, f"{_where(argument, path)} has a key {key!r}; JSON has "
                                        "no NaN or infinity")
    elif not (key is None or isinstance(key, (int, float))):
        raise InvalidArgument(argument, f"{_where(argument, path)} has a key {_short(key)} of type "
                                        f"{_type_name(key)}; JSON keys are str (int, float, bool "
                                        "and None are converted)")


def _check_text(argument: str, value: str, path: Any) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(argument, f"{_where(argument, path)} {_not_unicode(value, exc)}") from None


def _where(argument: str, path: Any) -> str:
    """``params['a'][0]`` for the nested (parent, key) pairs of ``path``."""
    keys = []
    while path is not None:
        path, key = path
        if key is not None or path is not None:
            keys.append(key)
    keys.reverse()
    shown = [f"[{_short(k)}]" for k in keys]
    if len(shown) > 8:
        shown[3:-3] = ["..."]
    return argument + "".join(shown)


def _short(value: Any, limit: int = 40) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def error_text(value: Any) -> str:
    """``update_status``'s ``error``; the caller leaves None (no change) out."""
    if isinstance(value, str):
        return text("error", value)
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
    # Bytes as stored (UTF-8); str.isascii is O(1) in CPython, so ASCII text costs no encoding.
    text = "".join(fields) + "".join(fields.values())
    size = len(text) if text.isascii() else len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(size, max_bytes)
