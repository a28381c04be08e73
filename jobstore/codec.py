"""How a record's free-form values are stored: a codec, declared by a schema or given to a store.

jobstore owns the meaning of ``job_id``, ``workspace_id``, ``status`` and the times (the scripts
read them), so those are stored one way, as docs/schemas.md says. The values only the caller
gives meaning to, a job's ``params`` and ``result``, go through the store's codec: JSON by
default (compact, keys sorted), or a plugin's, so that a service adopting jobstore can keep the
encoding the readers of its existing records expect (docs/adopting.md). Times are read in both
forms whatever the codec; ``time_format`` chooses the form new records are written in.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from .errors_base import ConfigError

CODED_FIELDS = ("params", "result")
# How a record's times are stored: epoch seconds or ISO 8601 (both are read, whatever this says).
TIME_FORMATS = ("epoch", "iso")


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


class Codec:
    """Encodes and decodes ``params`` and ``result`` (subclass and override both methods).

    ``encode`` gets a JSON value the store has checked already (str keys, finite floats, valid
    text, nesting below the limit) and returns the text to store. ``decode`` gets stored text,
    never empty (an empty ``params`` reads as ``{}``, an empty ``result`` as None), and returns
    the value; what it raises makes the record read as corrupt (:class:`jobstore.CorruptRecord`
    naming the field), never a crash. A codec must round-trip: ``decode(encode(v)) == v`` for
    every value it accepts (the conformance kit checks the store's answers against that).
    ``time_format``: how new records store their times under this codec (``"epoch"`` or
    ``"iso"``), when the store is not given one; None leaves the store's default (epoch).
    """

    name: ClassVar[str] = ""
    time_format: ClassVar[str | None] = None

    def encode(self, field: str, value: Any) -> str:
        raise NotImplementedError

    def decode(self, field: str, text: str) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class JSONCodec(Codec):
    """jobstore's own: compact JSON with sorted keys (equal values store equal text); text that
    is not JSON (written by other code) reads back as the text itself."""

    name = "json"

    def encode(self, field: str, value: Any) -> str:
        return encode_json(value)

    def decode(self, field: str, text: str) -> Any:
        return _decode_json(text)


JSON = JSONCodec()


def check_codec(codec: Any, where: str) -> Codec:
    """``codec`` if it is a usable :class:`Codec`; ConfigError naming ``where`` otherwise."""
    if not isinstance(codec, Codec):
        raise ConfigError(f"{where} must be a jobstore.Codec, not {codec!r}")
    if type(codec).encode is Codec.encode or type(codec).decode is Codec.decode:
        raise ConfigError(f"{where} {codec!r} must override both encode and decode")
    if codec.time_format not in (None, *TIME_FORMATS):
        raise ConfigError(f"{where} {codec!r} has time_format {codec.time_format!r}; "
                          "use 'epoch', 'iso' or None")
    return codec
