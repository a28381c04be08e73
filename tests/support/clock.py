"""A migration clock for tests: time advances when the migration waits, instead of sleeping."""

from __future__ import annotations

import time


class FakeClock:
    """``Migration(..., clock=clock, wait=clock.wait)``: readings stand still until a wait."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds
