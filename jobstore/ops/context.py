"""What every operation is given besides its arguments: the :class:`Context` (the store's keys,
routing, knobs and clocks), the call tokens, and the ``Op`` type of an operation."""

from __future__ import annotations

import os
import random
import time
from base64 import urlsafe_b64encode
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..codec import Codec
from ..dead_letters import MAX_DEAD_LETTERS
from ..events import Events
from ..job import format_time
from ..layout import StoreKeys
from ..steps import Step
from ..strategy import Strategy

T = TypeVar("T")

# An operation returning T: it yields steps, and the driver sends back each step's reply (see
# jobstore.steps.Step: a Batch's list of replies, None for a Refresh...).
Op = Generator[Step, Any, T]


@dataclass
class Context:
    """What every operation needs besides its arguments."""

    keys: StoreKeys
    strategy: Strategy
    marker_ttl: int = 600
    dequeue_scan: int = 50
    max_dead_letters: int = MAX_DEAD_LETTERS
    # Longest server-side wait of one blocking step; kept below the client's socket timeout.
    block_slice: float = 1.0
    max_record_bytes: int = 1024 * 1024
    # Leases: how long a dequeued job stays its worker's without an extend (ms, the store's
    # ``lease``), and how many hand-outs a job gets before a lease running out fails it.
    lease_ms: int = 3_600_000
    max_attempts: int = 3
    # Retention (docs/retention.md): how long a finished job's records live (ms; None: until
    # deleted) unless its enqueue or its final update said otherwise, and how old a dead letter
    # may grow before a sweep drops it (ms; None: the newest max_dead_letters are kept).
    finished_ttl_ms: int | None = None
    dead_letter_ttl_ms: int | None = None
    # How long a claim list may hold entries past its blocking wait before a later dequeue puts
    # them back (its dequeue died between the move and the claim), seconds.
    list_grace: float = 30.0
    # How new records store their times: "epoch" (the repr of a float) or "iso" (ISO 8601).
    # An update writes a record's updated_at in the form the record already has.
    time_format: str = "epoch"
    # How params and result are stored (jobstore.codec); None: jobstore's JSON.
    codec: Codec | None = None
    # The replaced system's queue (a list of bare job ids), shared until the fleet leaves it.
    legacy_queue: str | None = None
    # Redis Cluster: writes go through ops.cluster, and scripts are never fenced (the phase
    # lives in another slot; stores follow a switch by time alone, within a second).
    cluster: bool = False
    # Op markers of this store's calls that have their answer (no re-send of them can come),
    # deleted by its next call's script (spent_markers): update_status and dequeue markers on
    # standalone Redis, enqueue queue-step markers on a cluster (same slot as the next one).
    spent_markers: deque[str] = field(default_factory=deque)
    # Redis Cluster: op markers of this store's calls with their answer that sit in any slot (a
    # record's: update_status, dequeue, delete steps); no later script shares their slot, so
    # they go in bulk, a Tidy step once TIDY_AT of them wait (ops.cluster.tidy).
    spent_anywhere: deque[str] = field(default_factory=deque)
    # The clocks, so that no operation reads one itself (tests hand in a fake): ``clock``, wall
    # time in epoch seconds (the times records and dead letters carry); ``timer``, seconds on a
    # clock that never steps back (deadlines and elapsed times: a dequeue's timeout).
    clock: Callable[[], float] = time.time
    timer: Callable[[], float] = time.monotonic
    # A call's token (op markers, claims, a record's OP): 72 random bits in 12 characters.
    new_token: Callable[[], str] = field(default=lambda: new_token())
    events: Events = field(default_factory=Events)


# Where call tokens come from: a generator of jobstore's own, seeded from the OS when jobstore is
# imported and again in every forked child, so that neither an application's ``random.seed(n)``
# (ML jobs and test suites seed the process-wide generator) nor a fork repeats another call's
# token. Its getrandbits is one C call under the GIL: threads draw distinct values.
_TOKENS = random.Random()
_drawn_in = [os.getpid()]  # the process the generator was last seeded in


def _reseed() -> None:
    _TOKENS.seed()
    _drawn_in[0] = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_reseed)


def new_token() -> str:
    """72 random bits in 12 URL-safe characters: what tells one call from another.

    Drawn from jobstore's own generator (``_TOKENS``), not from the process-wide ``random``
    module, which the application may seed, and not from ``os.urandom``, a system call that
    costs a few microseconds per call: a token only has to differ from every other call's (a
    collision needs the same job and 2^-72 luck); it protects nothing secret. Job ids stay
    ``uuid4`` (their randomness is the OS's: :func:`new_job_id`)."""
    if os.getpid() != _drawn_in[0]:  # forked by a path that ran no at-fork hook (a C fork())
        _reseed()
    return urlsafe_b64encode(_TOKENS.getrandbits(72).to_bytes(9, "big")).decode()


# A version 4 UUID's fixed bits (RFC 4122: version 4, variant 10), over 128 random bits.
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_job_id() -> str:
    """A generated job id: ``uuid.uuid4().hex``, the same 122 bits from ``os.urandom`` and the
    same text, without building a ``UUID`` object (~0.8 us, not ~2)."""
    return "%032x" % (int.from_bytes(os.urandom(16), "big") & _UUID4_KEEP | _UUID4_SET)


def now(ctx: Context) -> tuple[str, str]:
    """The current time as the store writes it, and as ISO 8601 (for records that use it)."""
    seconds = ctx.clock()
    return format_time(seconds, ctx.time_format), format_time(seconds, "iso")


# Op markers one script deletes at most (spent_markers); the rest wait for the next ones.
SPENT_PER_CALL = 32


def spent_markers(ctx: Context, most: int = SPENT_PER_CALL, mine: str = "",
                  pool: deque[str] | None = None) -> list[str]:
    """Up to ``most`` op markers of this store's earlier calls that have their answer, taken
    off its list (thread-safe: another thread's call takes the others), for a script to
    delete: no re-send of those calls can come any more, so a marker lives until the store's
    next call instead of its whole ttl. Never ``mine``, the asking call's own marker.
    ``pool``: the list to take them from (default ``ctx.spent_markers``)."""
    spent: list[str] = []
    pool = ctx.spent_markers if pool is None else pool
    while len(spent) < most:
        try:
            marker = pool.popleft()
        except IndexError:
            break
        if marker != mine:
            spent.append(marker)
    return spent

