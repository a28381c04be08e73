"""The batch transport of the passes and verify on standalone Redis: scanned keys sent to the
``pass_batch`` script a chunk per call, the calls grouped into round trips (under a rate, one
call per trip, each when it is due), a pass's checkpoint riding along with the next trip, and the
replies flattened to one per key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import validation
from ..errors import InvalidArgument
from ..layout import StoreKeys
from ..ops import Op
from ..schema import WORKSPACE_MARK, KeySchema
from ..ops import migration_calls
from ..steps import Batch, Command, Script
from .reports import PassReport

# A key sent to PASS_BATCH: ``(key, the script's reply for it)``.
Sent = tuple[str, Any]
# A pass under a rate: how to wait until ``n`` more records are due, and keys per script call.
Paced = tuple[Callable[[int], Op[None]], int]
# Keys settled by one pass_batch script call by default (standalone Redis, schemas with a key
# format; a pass's keys_per_call chooses otherwise). Redis serves nobody else while a script
# runs: at about 20 us per record, 50 keys hold a live request back by about a millisecond.
# Calls go one per round trip: Redis runs everything one read of a pipeline holds (16 KB, some
# 340 keys) back to back, and the pass's own Python work between round trips stays short (a
# get in a thread of the same process waits for it). Measured (docs/migration.md): 50 keys had
# the best p99 of a live get; larger calls go faster (200: backfill 1.6x, verify 1.6x) and
# hold live requests 2-4 times longer.
CHUNK = 50
CHUNKS_PER_TRIP = 1
# The most keys_per_call a pass accepts: a call of 1,000 keys holds Redis some 20 ms.
MAX_KEYS_PER_CALL = 1000
# Under a rate, calls are made smaller to come about this often (each then holds Redis for a
# small fraction of a millisecond), and never hold fewer than RATE_CHUNK_MIN keys: at 5,000
# records a second, 5 keys every millisecond (measured against 10 and 50: docs/performance.md).
RATE_CALLS_PER_SECOND = 1000
RATE_CHUNK_MIN = 5


def _rate_chunk(rate: float, most: int = CHUNK) -> int:
    """Keys per PASS_BATCH call under ``rate`` records a second (see RATE_CALLS_PER_SECOND),
    never more than ``most`` (the pass's keys_per_call)."""
    return max(min(RATE_CHUNK_MIN, most), min(most, round(rate / RATE_CALLS_PER_SECOND)))


def _keys_per_call(value: Any) -> int:
    """A pass's keys_per_call, checked (None: CHUNK).

    :raises InvalidArgument: not an int from 1 to MAX_KEYS_PER_CALL.
    """
    if value is None:
        return CHUNK
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_KEYS_PER_CALL:
        raise InvalidArgument("keys_per_call",
                              f"must be an int from 1 to {MAX_KEYS_PER_CALL}, not {value!r}")
    return value


def _flat_replies(calls: Sequence[Script], replies: list[Any]) -> list[Any]:
    """One entry per key of ``calls`` from their PASS_BATCH replies; a call Redis refused
    whole (a script error) counts each of its records as an ``error``."""
    out: list[Any] = []
    for call, reply in zip(calls, replies):
        out += ["error"] * len(call.keys) if isinstance(reply, Exception) else reply
    return out


class _Checkpoint:
    """A pass's checkpoint not written yet, and the progress it covers (told once written)."""

    def __init__(self, tell: Callable[[int, dict[str, int], int], None]) -> None:
        self.command: Command | None = None
        self.tell = tell
        self._covers: tuple[int, dict[str, int], int] = (0, {}, 0)

    def hold(self, command: Command | None, report: PassReport) -> None:
        """The checkpoint of ``report`` as it is now (None: a dry run, which writes none and
        tells at once)."""
        self.command = command
        self._covers = (report.scanned, dict(report.counts), report.rescans)
        if command is None:
            self.written()

    def written(self) -> None:
        self.command = None
        self.tell(*self._covers)


def lua_trips(store_keys: StoreKeys, mode: str, scan_schema: KeySchema, other: KeySchema,
              keys: list[str], dry_run: bool, authority: str, riders: _Checkpoint | None,
              pace: Paced | None, chunk: int) -> Op[tuple[list[Sent], list[str]]]:
    """Send ``keys`` to PASS_BATCH, ``chunk`` keys per call and CHUNKS_PER_TRIP calls per round
    trip (under a rate, ``pace`` = (wait until due, keys per call): one call per round trip,
    each when it is due), the checkpoint ``riders`` holds riding along with the first.
    Returns ``(key, reply)`` per key sent, and the keys that name an unusable workspace
    (``unroutable``: only a computed schema's key can). For a schema with a key format the
    script reads the ids off the keys itself; a computed schema's are parsed here. Each
    round trip's keys are prepared just before it is sent, so that neither Redis (one
    script) nor this process (its Python work) is busy long at a stretch."""
    assert other.lua_template is not None, "only for a templated other side"
    def call(keys: Sequence[str], ids: Sequence[str] = ()) -> Script:
        assert other.lua_template is not None
        return migration_calls.pass_batch(
            keys=keys, mode=mode, dry_run=dry_run, authority=authority,
            other_template=other.lua_template, index_template=store_keys.index(WORKSPACE_MARK),
            scan_template=scan_schema.lua_template or "", ids=ids)

    chunk = chunk if pace is None else pace[1]
    per_trip = chunk if pace is not None else chunk * CHUNKS_PER_TRIP
    out: list[Sent] = []
    unroutable: list[str] = []
    sent: list[str]
    args: list[str]
    for start in range(0, len(keys), per_trip):
        if scan_schema.lua_template is not None:
            sent = keys[start:start + per_trip]
            calls = tuple(call(sent[i:i + chunk]) for i in range(0, len(sent), chunk))
        else:
            sent, args = [], []
            for key in keys[start:start + per_trip]:
                ids = scan_schema.parse_key(key)
                if not ids:
                    continue
                ws, job_id = ids
                if ws is not None and not validation.IDENTIFIER.fullmatch(ws):
                    unroutable.append(key)
                    continue
                sent.append(key)
                args += (ws or "", job_id)
            calls = tuple(call(sent[i:i + chunk], args[2 * i:2 * (i + chunk)])
                          for i in range(0, len(sent), chunk))
        if not sent:
            continue
        if pace is not None:
            yield from pace[0](len(out))
        ride = () if riders is None or riders.command is None else (riders.command,)
        # A verify must not call records it could not compare the same: errors raise.
        got = yield Batch(ride + calls, tolerate_errors=riders is not None)
        if ride:
            if isinstance(got[0], Exception):
                raise got[0]
            assert riders is not None
            riders.written()
        out += zip(sent, _flat_replies(calls, got[len(ride):]))
    return out, unroutable
