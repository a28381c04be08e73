"""A migration's plan: what its source holds and what the target will take, before it starts.

:func:`plan` is an operation (a generator of :mod:`jobstore.steps`, no I/O of its own) that
writes nothing: it counts the source's records with a full SCAN (timed: the scan the passes
make, step for step), reads ``MEMORY USAGE`` and the owner of a uniform sample of them
(reservoir sampling over the scan), reads ``INFO memory`` of every primary, and on request
times the passes' own record work on part of the sample: the backfill's ``pass_batch`` call
in its dry-run form (copy decided, nothing written) and verify's comparison, which never
writes. A real copy also writes the record, so the dry run's time is scaled by
COPY_WRITE_FACTOR, measured by ``benchmarks/plan_accuracy.py`` (docs/migration.md#plan).

What the target needs is each record's bytes with its target key's length instead of its
source key's, plus the growth of the servers' main key tables (a power-of-two array of 8-byte
slots). On Redis Cluster every target key's slot says which primary gets it.
"""

from __future__ import annotations

import binascii
import random
from collections.abc import Callable, Generator, Sequence
from typing import Any

from .. import validation
from ..errors import InvalidArgument
from ..ops import Op
from ..steps import Batch, Command, Primaries, Scan
from .core import MigrationCore, _Counter
from .reports import NodePlan, PlanReport
from .transport import _rate_chunk, lua_trips

# Records sampled by default (MEMORY USAGE and owner read for each), and timed by default (the
# dry-run copy and the comparison, each once over this many of the sampled records).
SAMPLE = 2000
TIMED = 2000
# Sampled records read per round trip.
SAMPLE_PER_TRIP = 100
# A real copy writes the record (HSET, PEXPIRE, the index entry) that the dry run only decides:
# the time of a real backfill over that of its dry run on the same records (measured at 100,000
# records by benchmarks/plan_accuracy.py: docs/migration.md#plan).
COPY_WRITE_FACTOR = 1.4
# The timed work is repeated over the same records until it took this long (at most
# TIMED_ROUNDS times): a short burst on a busy machine is not the share a long pass gets.
TIMED_SECONDS = 0.5
TIMED_ROUNDS = 5
# Verify compares each source record with its copy (timed before the copy exists, when each
# comparison hands back the record whole) and then checks each target record's owner: the time
# of a verify after the backfill over the timed comparison's, per record (as measured).
VERIFY_FACTOR = 0.75
# A node fits when its used memory plus its share of the target, and this fraction of that
# share, stays under its maxmemory (the estimate's accuracy target is 20%).
MARGIN = 0.2
# Where a slot's key table grows into: Redis keeps a power-of-two array of 8-byte buckets.
BUCKET_BYTES = 8
SLOTS = 16384


def plan(core: MigrationCore, *, rate: float | None, sample: int, top: int, batch: int,
         chunk: int, timed: int, seed: int | None = None) -> Op[PlanReport]:
    """The plan of ``core``'s migration (see the module). ``timed``: records whose passes'
    work is timed (0: no times). Writes nothing."""
    begun = core.timer()
    source, target = core.source, core.target
    report = PlanReport(f"{core.name}", source.name, target.name, cluster=core.driver.cluster,
                        rate=rate, margin=MARGIN)
    nodes: Sequence[str | None] = yield Primaries()
    infos = yield from memory_of(nodes)
    owners = _Owners(nodes)
    if core.driver.cluster:
        owners.slots = yield from _slot_map(nodes)
    rng = random.Random(seed)
    kept: list[str] = []
    workspaces: dict[str, float] = {}
    scan_seconds = 0.0
    for node in nodes:
        cursor = "0"
        while True:
            started = core.timer()
            _, cursor, keys = yield Scan(source.scan_pattern(), cursor, batch, node)
            scan_seconds += core.timer() - started
            for key in keys:
                ids = source.parse_key(key)
                if not ids:
                    continue
                report.records += 1
                if len(kept) < sample:  # reservoir sampling: every record equally likely kept
                    kept.append(key)
                elif (at := rng.randrange(report.records)) < sample:
                    kept[at] = key
                ws, job_id = ids
                if ws is not None:  # the key names the workspace: counted exactly
                    workspaces[ws] = workspaces.get(ws, 0) + 1
                    owners.add(target.job_key(ws, job_id), 1.0)
            if cursor == "0":
                break
    scale = report.records / len(kept) if kept else 0.0
    placed = yield from _sample(core, kept, report, owners, workspaces, scale)
    if not report.workspaces_exact:
        report.notes.append("the source's keys do not name the workspace: workspace counts are "
                            f"extrapolated from {report.sampled} sampled records")
    report.workspaces = len(workspaces)
    ranked = sorted(workspaces.items(), key=lambda item: (-item[1], item[0]))
    report.top_workspaces = [{"workspace_id": ws, "records": round(n)} for ws, n in ranked[:top]]
    _fit(report, nodes, infos, owners)
    if timed and placed:
        yield from _times(core, report, placed[:timed], scan_seconds, chunk)
    report.seconds = core.timer() - begun
    return report


class _Owners:
    """Target records and bytes by the server that will hold them."""

    def __init__(self, nodes: Sequence[str | None]) -> None:
        self.names = [node or "standalone" for node in nodes]
        self.records: dict[str, float] = dict.fromkeys(self.names, 0.0)
        self.bytes: dict[str, float] = dict.fromkeys(self.names, 0.0)
        self.slots_seen: dict[str, set[int]] = {name: set() for name in self.names}
        self.slots: list[str] | None = None  # slot -> primary (Redis Cluster)

    def node_of(self, key: str) -> tuple[str, int]:
        slot = key_slot(key)
        if self.slots is None:
            return self.names[0], slot
        return self.slots[slot] or self.names[0], slot

    def add(self, key: str, weight: float, nbytes: float = 0.0) -> None:
        name, slot = self.node_of(key)
        self.records[name] = self.records.get(name, 0.0) + weight
        self.bytes[name] = self.bytes.get(name, 0.0) + nbytes
        self.slots_seen.setdefault(name, set()).add(slot)


def key_slot(key: str) -> int:
    """The Redis Cluster slot of ``key``: CRC16 (XMODEM) of its hash tag, or of all of it."""
    raw = key.encode("utf-8", "surrogateescape")
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    return binascii.crc_hqx(raw, 0) % SLOTS


def memory_of(nodes: Sequence[str | None]) -> Op[dict[str, dict[str, Any] | None]]:
    """``INFO memory`` and the key count of each node (None where INFO is refused or absent)."""
    found: dict[str, dict[str, Any] | None] = {}
    for node in nodes:
        info, size = yield Batch((Command(("INFO", "memory"), node=node),
                                  Command(("DBSIZE",), node=node)), tolerate_errors=True)
        name = node or "standalone"
        if isinstance(info, dict):
            found[name] = {**{str(k): v for k, v in info.items()},
                           "keys": 0 if isinstance(size, Exception) else int(size or 0)}
        else:
            found[name] = None
    return found


def primaries() -> Op[list[str | None]]:
    nodes: list[str | None] = yield Primaries()
    return nodes


def _slot_map(nodes: Sequence[str | None]) -> Op[list[str]]:
    """Which primary serves each slot (CLUSTER SLOTS, asked of the first primary)."""
    (reply,) = yield Batch((Command(("CLUSTER", "SLOTS"), node=nodes[0]),))
    owners = [""] * SLOTS
    ranges: list[tuple[int, int, Any]] = []
    if isinstance(reply, dict):  # redis-py's parsed form: {(start, end): {"primary": (host, port)}}
        ranges = [(int(a), int(b), value.get("primary")) for (a, b), value in reply.items()]
    else:
        ranges = [(int(entry[0]), int(entry[1]), entry[2]) for entry in reply or []]
    for start, end, primary in ranges:
        name = f"{_str(primary[0])}:{int(primary[1])}"
        for slot in range(start, end + 1):
            owners[slot] = name
    known = {node for node in nodes if node}
    return [name if name in known else "" for name in owners]


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sample(core: MigrationCore, kept: list[str], report: PlanReport, owners: _Owners,
            workspaces: dict[str, float], scale: float) -> Op[list[str]]:
    """MEMORY USAGE and the owner of each sampled record: bytes, workspaces (when the keys do
    not name them) and target placement, extrapolated by ``scale``. The keys still there, of
    records a pass would place."""
    source, target = core.source, core.target
    placed: list[str] = []
    gone = unroutable = 0
    source_bytes = target_bytes = 0.0
    for start in range(0, len(kept), SAMPLE_PER_TRIP):
        keys = kept[start:start + SAMPLE_PER_TRIP]
        replies = yield Batch(tuple(
            Command(args) for key in keys
            for args in (("MEMORY", "USAGE", key, "SAMPLES", "0"), ("HGET", key, "workspace_id"))
        ), tolerate_errors=True)
        for i, key in enumerate(keys):
            size, owner = replies[2 * i], replies[2 * i + 1]
            named, job_id = source.parse_key(key) or (None, "")
            ws = named if named is not None else owner
            if isinstance(size, Exception) or isinstance(owner, Exception):
                if isinstance(size, Exception) and not isinstance(owner, Exception):
                    report.notes.append(f"MEMORY USAGE is not available: {size}")
                    size = 0
                else:
                    gone += 1  # not a hash: no pass copies it
                    continue
            if size is None:
                gone += 1  # deleted since the scan
                continue
            if not isinstance(ws, str) or not validation.IDENTIFIER.fullmatch(ws):
                unroutable += 1
                continue
            other = target.job_key(ws, job_id)
            copy = allocated(int(size) + len(other.encode()) - len(key.encode()))
            source_bytes += allocated(int(size))
            target_bytes += copy
            placed.append(key)
            if named is None:  # counted from the sample: extrapolated
                report.workspaces_exact = False
                workspaces[ws] = workspaces.get(ws, 0) + scale
            owners.add(other, 0.0 if named is not None else scale, copy * scale)
    report.notes[:] = list(dict.fromkeys(report.notes))
    report.sampled = len(placed)
    seen = len(placed) + gone + unroutable
    if seen:
        share = report.records / seen
        report.unroutable = round(unroutable * share)
        report.source_bytes = round(source_bytes * share)
        report.target_bytes = round(target_bytes * share)
    return placed


def _fit(report: PlanReport, nodes: Sequence[str | None],
         infos: dict[str, dict[str, Any] | None], owners: _Owners) -> None:
    """Each node's share, its memory, and whether the share fits there."""
    bytes_total = sum(owners.bytes.values()) or 1.0
    for name in owners.names:
        info = infos.get(name)
        share = owners.bytes[name] / bytes_total
        records = round(owners.records[name])
        if not any(owners.records.values()) and report.records:  # nothing placed: by bytes
            records = round(report.records * share)
        growth = 0
        if info is not None:
            keys = int(info.get("keys", 0))
            growth = BUCKET_BYTES * (_table(keys + records) - _table(keys))
        node = NodePlan(name, target_records=records,
                        target_bytes=round(report.target_bytes * share) + growth,
                        slots=len(owners.slots_seen[name]) if owners.slots is not None else 0)
        if info is not None:
            node.used_memory = int(info.get("used_memory", 0))
            node.maxmemory = int(info.get("maxmemory", 0))
            node.fits = not node.maxmemory or (
                node.used_memory + node.target_bytes * (1 + MARGIN) <= node.maxmemory)
        report.nodes.append(node)
    report.extra_memory = sum(n.target_bytes for n in report.nodes)
    report.fits = all(n.fits for n in report.nodes)


def allocated(n: int) -> int:
    """``n`` bytes rounded up to jemalloc's size class (Redis's allocator), as ``used_memory``
    counts them: MEMORY USAGE counts a small hash's bytes, not the block they sit in (four
    classes per doubling above 128 bytes, multiples of 16 below)."""
    if n <= 128:
        return max(8, -(-n // 16) * 16)
    step = 1 << ((n - 1).bit_length() - 3)
    return -(-n // step) * step


def _table(keys: int) -> int:
    """Buckets of a key table holding ``keys`` keys (a power of two, at least 4)."""
    size = 4
    while size < keys:
        size *= 2
    return size if keys else 0


def _times(core: MigrationCore, report: PlanReport, keys: list[str], scan_seconds: float,
           chunk: int) -> Op[None]:
    """Time the backfill's and verify's record work on ``keys`` (nothing is written), and
    predict both passes over every record."""
    source, target = core.source, core.target
    rate = report.rate
    paced = rate is not None
    per_call = _rate_chunk(rate, chunk) if rate else chunk

    def nothing(_: int) -> Generator[Any, Any, None]:
        return
        yield  # a generator that waits for nothing: one call per round trip, as under a rate

    def copy_dry() -> Op[None]:
        if core._in_lua(target):
            yield from lua_trips(core.keys, "copy", source, target, keys, True, "0", None,
                                 (nothing, per_call) if paced else None, per_call)
            return
        for at in range(0, len(keys), per_call):
            placed = yield from core._place(source, target, keys[at:at + per_call], _Counter())
            if placed:
                yield from core._apply("copy", placed, True)

    def compare_pairs() -> Op[None]:
        if core._in_lua(target):
            yield from lua_trips(core.keys, "source", source, target, keys, False, "0", None,
                                 None, chunk)
            return
        for at in range(0, len(keys), chunk):
            placed = yield from core._place(source, target, keys[at:at + chunk], _Counter())
            if placed:
                yield from core.settler.read_pairs(
                    tuple(k for _, _, a, b in placed for k in (a, b)))

    copy = yield from _per_record(core.timer, copy_dry, len(keys))
    compare = yield from _per_record(core.timer, compare_pairs, len(keys))
    scan = scan_seconds / report.records if report.records else 0.0
    n = report.records
    backfill = n * (scan + copy * COPY_WRITE_FACTOR)
    report.backfill_seconds = max(backfill, n / rate) if rate else backfill
    report.verify_seconds = n * (2 * scan + compare * VERIFY_FACTOR)
    report.rates = {
        "scan": round(1 / scan, 1) if scan else 0.0,
        "copy_dry_run": round(1 / copy, 1) if copy else 0.0,
        "compare": round(1 / compare, 1) if compare else 0.0,
        "timed_records": float(len(keys)),
    }


def _per_record(timer: Callable[[], float], work: Any, records: int) -> Op[float]:
    """Seconds per record of ``work()`` (an operation over ``records`` records), run until
    TIMED_SECONDS went by (on ``timer``) or TIMED_ROUNDS times."""
    started = timer()
    rounds = 0
    while True:
        yield from work()
        rounds += 1
        took = timer() - started
        if took >= TIMED_SECONDS or rounds >= TIMED_ROUNDS:
            return took / (rounds * records)


def check(rate: Any, sample: Any, top: Any, timed: Any) -> None:
    """:raises InvalidArgument: a bad ``rate``, ``sample``, ``top`` or ``timed``."""
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not rate > 0):
        raise InvalidArgument("rate", f"must be a number > 0 or None, not {rate!r}")
    for name, value, least in (("sample", sample, 1), ("top", top, 0), ("timed", timed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgument(name, f"must be an int >= {least}, not {value!r}")

