"""Progress of a migration pass, a verify or a set-aside on stderr (:class:`ProgressPrinter`)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click


def short_counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


class ProgressPrinter:
    """Progress of a pass or a verify on stderr: a bar with rate and ETA on a terminal, a plain
    line every few seconds otherwise.

    ``total`` is what the pass counted when it started; records the service adds meanwhile can
    make ``done`` larger, so the total shown is never below ``done`` (never past 100%). A verify
    has no total: it shows how many records it has checked.
    """

    active: ProgressPrinter | None = None  # the one drawing a bar, for log lines to go above

    def __init__(self, enabled: bool = True, every: float = 2.0, terminal: bool | None = None):
        self.enabled = enabled
        self.every = every
        self.terminal = terminal
        self.bar: Any = None  # a tqdm bar (tqdm has no type information)
        self.step: str | None = None
        self.last = 0.0
        self.shown = ""
        self.reached: str | None = None  # the step whose line at its total was shown

    def __call__(self, step: str, done: int, total, counts: dict) -> None:
        if not self.enabled:
            return
        if total is not None:
            total = max(total, done)
        if step == "verify restarted":
            self.close()
            self.line(f"verify: a server changed under the scan (restart, failover or slots "
                      f"moved); starting again from the beginning (fresh start "
                      f"{counts.get('rescans', '?')})")
            return
        terminal = self.terminal if self.terminal is not None else sys.stderr.isatty()
        if terminal and self._bar(step, total) is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(short_counts(counts), refresh=False)
            return
        now = time.monotonic()
        # The pass reaching its total is shown at once, once: a total that keeps growing with
        # the records scanned (the service adds records, SCAN returns a key twice) must not
        # print a "100%" line per batch.
        at_total = bool(total and done >= total)
        text = self.describe(step, done, total, counts, again=at_total and self.reached == step)
        if text != self.shown and (step != self.step or now - self.last >= self.every
                                   or (at_total and self.reached != step)):
            self.step, self.last, self.shown = step, now, text
            if at_total:
                self.reached = step
            self.line(text)

    @staticmethod
    def describe(step: str, done: int, total, counts: dict, again: bool = False) -> str:
        """``again``: the total was reached before and keeps growing with ``done``."""
        if step.startswith("verify "):
            side = step.split(" ", 1)[1]
            return f"verify: {done} {side} records checked so far"
        if again:
            scanned = f"{done} records scanned (more than counted when it started)"
        elif total:
            scanned = f"{done} of {total} records scanned ({done * 100 // total}%)"
        else:
            scanned = f"{done} records scanned"
        return f"{step}: {scanned}" + (f"; {short_counts(counts)}" if counts else "")

    def _bar(self, step: str, total):
        """The tqdm bar of this step (a new one per step); None without tqdm."""
        if self.bar is not None and self.step == step:
            return self.bar
        self.close()
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        desc = f"verify {step.split(' ', 1)[1]} records checked" if step.startswith("verify ") \
            else f"{step} records scanned"
        self.step = step
        self.bar = tqdm(total=total, desc=desc, unit="rec", file=sys.stderr)
        ProgressPrinter.active = self
        return self.bar

    def line(self, text: str) -> None:
        self.write(text)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if ProgressPrinter.active is self:
            ProgressPrinter.active = None
