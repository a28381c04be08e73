"""What a migration's passes, verify and set-aside report, and the interruption that carries a
report: the types :mod:`jobstore.events` and the CLI name. This module imports nothing else of
``jobstore.migration`` (an import-linter contract in pyproject.toml holds it to that), so that
naming a report never loads the migration itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..phases import Phase


@dataclass
class PassReport:
    """What a backfill, reverse sync or cleanup did. ``counts`` by outcome (see the scripts)."""

    step: str
    dry_run: bool = False
    scanned: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    seconds: float = 0.0
    finished: bool = False
    # Scans started again from the beginning because the server that gave the saved cursor
    # was gone (a restart, a failover, a node replaced, slots moved): ``notes`` says where.
    rescans: int = 0
    notes: list[str] = field(default_factory=list)
    # Stopped by Ctrl-C or SIGTERM (MigrationInterrupted): the counts are what was done so far.
    interrupted: bool = False

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SetAsideReport(PassReport):
    """What ``set_aside`` did: counts by outcome (``set-aside``, ``routable``: it names a usable
    workspace now and was left, ``gone``, ``busy``, ``not_a_record``, ``error``) and, for each
    record set aside, ``{"key": where it was, "to": where it is now}`` (the first
    MAX_SET_ASIDE_LISTED; the counts cover every one)."""

    moved: list[dict[str, str]] = field(default_factory=list)


# How many moved keys a SetAsideReport lists (``jobstore migrate set-aside --list`` lists all).
MAX_SET_ASIDE_LISTED = 10_000


@dataclass
class VerifyReport:
    """Record-by-record comparison of source and target."""

    phase: str
    checked_source: int = 0
    checked_target: int = 0
    same: int = 0
    target_newer: int = 0  # the target moved on after target-only: expected there, a problem before
    missing: int = 0  # in the source, not in the target
    differing: int = 0
    orphaned: int = 0  # in the target, not in the source (expected in target-only)
    unroutable: int = 0  # source records without a workspace_id: cannot be placed
    repaired: int = 0
    sampled: bool = False
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0
    not_records: int = 0  # keys in a schema's namespace that are not hashes: reported, skipped
    # Fresh starts after the server changed under the scan; ``complete`` is False when verify
    # gave up (VERIFY_ATTEMPTS): it could not vouch for every key, so it is not clean.
    rescans: int = 0
    complete: bool = True
    notes: list[str] = field(default_factory=list)
    # Stopped by Ctrl-C or SIGTERM (MigrationInterrupted): what it found until then; not clean.
    interrupted: bool = False

    @property
    def problems(self) -> int:
        only_target = Phase(self.phase) is Phase.TARGET_ONLY
        return (
            self.missing
            + self.differing
            + self.unroutable
            + (0 if only_target else self.orphaned + self.target_newer)
        )

    @property
    def clean(self) -> bool:
        return self.complete and not self.interrupted and self.problems == 0

    @property
    def evidence_against(self) -> bool:
        """Whether this verify shows the target may not be right: it found problems (a sample
        too), repaired some (unconfirmed until a verify after it), or gave up on a server that
        kept changing under it. An interrupted run that found nothing shows nothing."""
        return bool(self.problems or self.repaired or not (self.complete or self.interrupted))

    def summary(self) -> str:
        """What it found, in a few words (recorded with a verify that was not clean)."""
        kinds = [(n, label) for n, label in (
            (self.missing, "missing"), (self.differing, "differing"),
            (0 if self.phase == Phase.TARGET_ONLY.value else self.orphaned, "orphaned"),
            (0 if self.phase == Phase.TARGET_ONLY.value else self.target_newer, "target newer"),
            (self.unroutable, "unroutable")) if n]
        parts = [plural(self.problems, "problem")
                 + (f" ({', '.join(f'{label} {n}' for n, label in kinds)})" if kinds else "")]
        if self.repaired:
            parts.append(f"{self.repaired} repaired, not verified since")
        if not self.complete and not self.interrupted:
            parts.append("could not vouch for every key (servers changed under the scan)")
        if self.sampled:
            parts.append("a sample")
        if self.interrupted:
            parts.append("interrupted")
        return "; ".join(parts)

    def example(self, kind: str, limit: int, **detail: Any) -> None:
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < limit:
            bucket.append(detail)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problems": self.problems, "clean": self.clean}


def plural(n: int, word: str) -> str:
    """``1 problem``, ``2 problems``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


class MigrationInterrupted(KeyboardInterrupt):
    """A pass or a verify stopped by Ctrl-C (or SIGTERM under the CLI); ``report`` is what it
    did or found until then, with ``interrupted`` set. A KeyboardInterrupt, so code that stops
    on one still does; a pass run again resumes from its checkpoint."""

    def __init__(self, report: PassReport | VerifyReport) -> None:
        super().__init__(f"{getattr(report, 'step', 'verify')} interrupted")
        self.report = report


@dataclass
class NodePlan:
    """One server's share of a migration's target copies (:class:`PlanReport`): on Redis
    Cluster one primary, by the slots of the target keys; on standalone Redis the one server
    (``node`` ``standalone``). Bytes as ``INFO memory`` counts them; ``maxmemory`` 0 is no
    limit, and None where INFO could not be read (the embedded store)."""

    node: str
    target_records: int = 0
    target_bytes: int = 0  # the copies and the main table's growth
    slots: int = 0  # distinct slots the target keys seen land in (Redis Cluster)
    used_memory: int | None = None
    maxmemory: int | None = None
    fits: bool = True

    @property
    def after(self) -> int | None:
        """``used_memory`` once the target copies are written (None when unknown)."""
        return None if self.used_memory is None else self.used_memory + self.target_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "after": self.after}


@dataclass
class PlanReport:
    """What a migration will take, from a sample of its source (``Migration.plan``).

    ``records`` are counted by a full SCAN of the source; bytes are ``MEMORY USAGE`` of
    ``sampled`` records, extrapolated. ``workspaces`` (the ``top_workspaces`` first, with their
    record counts) are exact when the source's keys name the workspace, extrapolated from the
    sample otherwise (``workspaces_exact``). ``extra_memory``: what the target copies add while
    both layouts are held (dual write until cleanup), ``fits``: every node has room for its share
    with ``margin`` (a fraction of its share) to spare. Times in seconds, from rates measured on
    this server (``rates``, records a second) by the same reads the passes make, writing nothing;
    None when not measured. ``rate``: the backfill's throttle (None: unthrottled); verify takes
    none.
    """

    migration: str
    source: str
    target: str
    cluster: bool = False
    records: int = 0
    sampled: int = 0
    unroutable: int = 0  # source records without a usable workspace_id (estimated)
    source_bytes: int = 0
    target_bytes: int = 0  # the target copies alone
    extra_memory: int = 0  # the copies and the growth of the servers' key tables
    margin: float = 0.0
    fits: bool = True
    workspaces: int = 0
    workspaces_exact: bool = True
    top_workspaces: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[NodePlan] = field(default_factory=list)
    rate: float | None = None
    backfill_seconds: float | None = None
    verify_seconds: float | None = None
    rates: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_per_record(self) -> float:
        return self.target_bytes / self.records if self.records else 0.0

    def refusal(self) -> str:
        """Why the target does not fit ('' when it does), with the numbers of each node short."""
        short = [n for n in self.nodes if not n.fits]
        if not short:
            return ""
        parts = [f"{n.node} uses {human_size(n.used_memory or 0)} of maxmemory {human_size(n.maxmemory or 0)} "
                 f"and the target copies need about {human_size(n.target_bytes)} there "
                 f"(+{self.margin:.0%} margin)" for n in short]
        return (f"the target layout does not fit in memory: {'; '.join(parts)} "
                "(jobstore migrate plan shows the estimate; raise maxmemory first)")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nodes": [n.as_dict() for n in self.nodes],
                "bytes_per_record": self.bytes_per_record}


def human_size(n: float) -> str:
    """``1.5 MB``: a byte count for people (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
