"""The tests' one fake clock: time advances when something waits, instead of sleeping."""

from __future__ import annotations

import time


class FakeClock:
    """A clock whose readings stand still until a wait moves them on.

    ``Migration(..., clock=clock, wait=clock.wait)``; a store's ``context.clock`` (the times
    records carry) and ``context.timer`` (deadlines); or ``time.monotonic`` and ``time.sleep``
    patched with ``clock`` and ``clock.wait``. ``start``: the first reading (default: now);
    ``waits``: every wait asked for, in order.
    """

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
