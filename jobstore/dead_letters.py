"""Dead letters: queue entries ``dequeue`` could not hand out, kept with the reason.

An entry that cannot be parsed (no ``:``, an empty or invalid id), or whose job record cannot be
decoded, would otherwise fail every worker that pops it, or be marked ``running`` and never
returned. ``dequeue`` moves it to the store's dead-letter list instead (``<prefix>:dead:{...}``,
see :attr:`jobstore.layout.StoreKeys.dead`), leaves the record as it is, and goes on with the
next entry. The scripts write each letter (``jobstore/lua/includes/dead_letter.lua``, for
``dequeue.lua`` and, on Redis Cluster, ``bury.lua``), stamped with the Redis server's clock;
:meth:`DeadLetter.from_json` reads one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .layout import StoreKeys
from .validation import ID_ALPHABET, IDENTIFIER, MAX_ID_LENGTH

# The list keeps the newest letters only: a flood of bad entries cannot fill Redis.
MAX_DEAD_LETTERS = 10_000

NO_SEPARATOR = "no ':' between the workspace id and the job id"
BAD_WORKSPACE = f"the workspace id is empty or not 1-{MAX_ID_LENGTH} characters of {ID_ALPHABET}"
BAD_JOB = f"the job id is empty or not 1-{MAX_ID_LENGTH} characters of {ID_ALPHABET}"


@dataclass(frozen=True)
class DeadLetter:
    """One queue entry ``dequeue`` set aside.

    ``entry``: the entry as popped, with every byte outside printable ASCII (and ``\\``) written
    as ``\\xNN``; ``reason``: why; ``at``: when (epoch seconds, the Redis server's clock, which
    the sweep's ``dead_letter_ttl`` is measured on);
    ``key`` and ``field``: the record that cannot be decoded and its first bad field (None for
    an entry that cannot be parsed).
    """

    entry: str
    reason: str
    at: float
    key: str | None = None
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """The letter as JSON text, the fields the scripts store (:meth:`from_json` reads it)."""
        letter: dict[str, Any] = {"entry": self.entry, "reason": self.reason, "at": self.at}
        if self.key is not None:
            letter.update(key=self.key, field=self.field)
        return json.dumps(letter, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeadLetter:
        """A letter as stored; text that is not one (pushed by someone else) becomes the entry."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            at = data.get("at")
            return cls(
                entry=str(data.get("entry", "")),
                reason=str(data.get("reason", "")),
                at=float(at) if isinstance(at, (int, float)) else 0.0,
                key=None if data.get("key") is None else str(data["key"]),
                field=None if data.get("field") is None else str(data["field"]),
            )
        except ValueError:
            return cls(entry=printable(text), reason="not a dead letter written by jobstore",
                       at=0.0)


def printable(entry: str) -> str:
    """``entry`` with every UTF-8 byte outside printable ASCII, and ``\\``, as ``\\xNN``."""
    if entry.isascii() and entry.isprintable() and "\\" not in entry:
        return entry
    out = []
    for char in entry:
        if " " <= char <= "~" and char != "\\":
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def entry_problem(entry: str) -> str | None:
    """Why a queue entry cannot be parsed, or None. The DEQUEUE script applies the same rules."""
    if ":" not in StoreKeys.entry_head(entry):
        return NO_SEPARATOR
    workspace_id, job_id, _ = StoreKeys.parse_queue_entry(entry)
    if not IDENTIFIER.fullmatch(workspace_id):
        return BAD_WORKSPACE
    if not IDENTIFIER.fullmatch(job_id):
        return BAD_JOB
    return None
