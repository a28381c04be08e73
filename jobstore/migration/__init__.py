"""Driving a migration: phase switches, backfill, verify, reverse sync and cleanup.

Every pass is safe while traffic runs: each record is copied, compared-and-repaired or deleted
by one Lua script that re-reads both sides at that instant (``SYNC_RECORD``,
``CLEANUP_RECORD``), so a pass never overwrites a newer record, never revives a job deleted
meanwhile, and can be stopped and resumed at any point. Passes are generators of steps, like
the store's operations, run by the same driver.

The package's modules, each importing only those listed before it:

- ``reports``: what passes, verify, set-aside and a plan report (:class:`PassReport`,
  :class:`VerifyReport`, :class:`SetAsideReport`, :class:`PlanReport`, :class:`NodePlan`,
  :class:`MigrationInterrupted`); it imports
  nothing else of the package, nor :mod:`jobstore.events`, which names these types.
- ``settle``: how records are settled and compared, one way for standalone Redis and one for
  Redis Cluster (the per-record settle there), chosen once per migration.
- ``transport``: the batch transport of the passes and verify (``pass_batch`` calls, chunks,
  round trips, replies).
- ``core``: what the parts of a migration share (schemas, keys, state, clock, placing records).
- ``passes``: backfill, reverse sync, cleanup and the scan/checkpoint/pace engine.
- ``verify`` and ``setaside``: verify and its repairs; records no workspace can hold.
- ``plan``: what a migration will take (records, bytes, memory per server, times), an
  operation that writes nothing (:func:`jobstore.migration.plan.plan`).
- ``control``: :class:`Migration` (phase switches, rollout, log, status) and
  :func:`open_migration`; every call there is its checks and one operation (``Operations``),
  which :class:`Migration` runs.
- ``aio``: :class:`~jobstore.migration.aio.AsyncMigration`, the same operations awaited on
  asyncio (``jobstore.aio`` names it and its ``open_migration``).

Every name ``jobstore.migration`` has held is still importable from here. Its module-level
settings (``CHUNK``, ``MAX_KEYS_PER_CALL``, ...) are read where they are defined: to change one,
set it on that module (``jobstore.migration.transport.CHUNK``).
"""

from __future__ import annotations

from .reports import (MAX_SET_ASIDE_LISTED, MigrationInterrupted, NodePlan, PassReport,
                      PlanReport, SetAsideReport, VerifyReport, plural)
from .settle import NOT_A_HASH, Placed, Prefer
from .transport import (CHUNK, CHUNKS_PER_TRIP, MAX_KEYS_PER_CALL, RATE_CALLS_PER_SECOND,
                        RATE_CHUNK_MIN, Paced, Sent)
from .core import VERIFY_ATTEMPTS, Progress
from .passes import CHECKPOINT_EVERY, COUNT_SAMPLES, EXACT_COUNT_UP_TO
from .verify import MUTABLE, REPAIRED, Compared
from .control import Migration, open_migration
from .aio import AsyncMigration

# The private names the module had, for code (tests among it) that reaches for them.
from .core import _Authority as _Authority
from .core import _authority as _authority
from .core import _check_batch as _check_batch
from .core import _Counter as _Counter
from .core import _flat as _flat
from .core import _one as _one
from .core import _seconds as _seconds
from .core import _short as _short
from .core import log as log
from .transport import _Checkpoint as _Checkpoint
from .transport import _flat_replies as _flat_replies
from .transport import _keys_per_call as _keys_per_call
from .transport import _rate_chunk as _rate_chunk
from .verify import _compare as _compare
from .verify import _diff as _diff
from .verify import _log_repairs as _log_repairs
from .setaside import _ids as _ids
from .control import _checkpoint as _checkpoint

__all__ = [
    "Progress",
    "Prefer",
    "Placed",
    "Compared",
    "Sent",
    "Paced",
    "MUTABLE",
    "VERIFY_ATTEMPTS",
    "CHUNK",
    "CHUNKS_PER_TRIP",
    "MAX_KEYS_PER_CALL",
    "RATE_CALLS_PER_SECOND",
    "RATE_CHUNK_MIN",
    "EXACT_COUNT_UP_TO",
    "COUNT_SAMPLES",
    "CHECKPOINT_EVERY",
    "PassReport",
    "SetAsideReport",
    "MAX_SET_ASIDE_LISTED",
    "VerifyReport",
    "PlanReport",
    "NodePlan",
    "plural",
    "MigrationInterrupted",
    "open_migration",
    "Migration",
    "AsyncMigration",
    "REPAIRED",
    "NOT_A_HASH",
]
