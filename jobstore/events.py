"""What a store reports as it works. The base class keeps a small sample and counts nothing;
``jobstore.metrics`` turns the same calls into Prometheus metrics."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dead_letters import DeadLetter
    from .migration.reports import PassReport, VerifyReport


@dataclass(frozen=True)
class ShadowMismatch:
    """One shadow read whose target record differed from the source record returned."""

    workspace_id: str
    job_id: str
    fields: tuple[str, ...]  # the fields that differ; ("*",) when the target record is missing


@dataclass(frozen=True)
class CorruptSeen:
    """One record a store met and could not decode (see :class:`jobstore.CorruptRecord`)."""

    operation: str
    key: str
    field: str
    reason: str


class Events:
    """Receives what happens in a store. Every method must be cheap and must never raise."""

    def __init__(self, mismatch_sample: int = 50) -> None:
        self._lock = threading.Lock()
        self.mismatches: deque[ShadowMismatch] = deque(maxlen=mismatch_sample)
        self.corrupt_records: deque[CorruptSeen] = deque(maxlen=mismatch_sample)

    def operation(self, name: str, strategy: str, workspace_id: str | None, outcome: str,
                  seconds: float) -> None:
        """An operation finished: ``outcome`` is ``ok`` or the error class name."""

    def enqueued(self, workspace_id: str, n: int = 1) -> None:
        """``n`` jobs of ``workspace_id`` were stored and queued (by enqueue or enqueue_many)."""

    def dual_write(self, workspace_id: str, succeeded: bool) -> None:
        """A job was written to two schemas (or the attempt failed)."""

    def read_fallback(self, workspace_id: str) -> None:
        """A read found the job only in a later-preference schema (the source, in read-target)."""

    def shadow_read(self, workspace_id: str, job_id: str, outcome: str,
                    fields: tuple[str, ...] = ()) -> None:
        """A shadow read: ``outcome`` is ``match``, ``mismatch`` or ``missing`` (no target copy)."""
        if outcome == "mismatch":
            with self._lock:
                self.mismatches.append(ShadowMismatch(workspace_id, job_id, fields))

    def corrupt_record(self, key: str, field: str, reason: str, *, operation: str) -> None:
        """``operation`` (``get``, ``list``, ``update_status``, ``dequeue``) met the record at
        ``key`` and could not decode it: ``field`` is missing or wrong (``reason``). ``get`` and
        ``update_status`` then raise ``CorruptRecord``; ``list`` leaves the record out (or
        raises, with ``errors="raise"``); ``dequeue`` moves its queue entry to the dead letters."""
        with self._lock:
            self.corrupt_records.append(CorruptSeen(operation, key, field, reason))

    def dead_letter(self, letter: DeadLetter) -> None:
        """``dequeue`` moved a queue entry to the dead-letter list; ``letter`` is its
        :class:`jobstore.DeadLetter` (``key`` is None for an entry it could not parse)."""

    def lease_expired(self, workspace_id: str, outcome: str) -> None:
        """A dequeue found a job whose lease had run out: ``outcome`` is ``reclaimed`` (handed
        out again, to that dequeue) or ``failed`` (it had had ``max_attempts`` hand-outs)."""

    def migration_progress(self, migration: str, step: str, done: int, total: int | None,
                           counts: dict[str, int]) -> None:
        """A backfill, verify, reverse sync or cleanup finished a batch."""

    def phase(self, migration: str, phase: str) -> None:
        """A store saw the migration's current phase."""

    def pass_result(self, migration: str, report: PassReport) -> None:
        """A backfill, reverse sync or cleanup pass ended; ``report`` is its PassReport."""

    def verify_result(self, migration: str, report: VerifyReport) -> None:
        """A verify ended; ``report`` is its VerifyReport."""
