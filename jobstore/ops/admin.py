"""Operations an operator runs once in a while, not on a job's path."""

from __future__ import annotations

from ..schema import WORKSPACE_MARK
from ..steps import Batch
from . import calls
from .context import Context, Op


def leave_legacy_queue(ctx: Context, batch: int) -> Op[dict[str, int]]:
    """Move every id of the compatible queue into jobstore's own, ``batch`` per script call."""
    assert ctx.legacy_queue is not None, "JobStore.leave_legacy_queue checks the store has one"
    templates = tuple(s.lua_template for s in ctx.strategy.routing(None).known
                      if s.lua_template is not None and WORKSPACE_MARK not in s.lua_template)
    totals = {"moved": 0, "dropped": 0, "remaining": 0}
    while True:
        (reply,) = yield Batch((calls.leave_legacy_queue(
            legacy_queue=ctx.legacy_queue, queue=ctx.keys.queue, queue_mode=ctx.keys.queue_mode,
            most=batch, templates=templates),))
        moved, dropped, remaining = (int(n) for n in reply)
        totals["moved"] += moved
        totals["dropped"] += dropped
        totals["remaining"] = remaining
        if not remaining or not moved + dropped:
            return totals

