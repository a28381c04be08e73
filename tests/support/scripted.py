"""A scripted driver: runs an operation (a generator of steps, jobstore.ops) without Redis.

Each step the operation yields is checked against the next entry of a script, and that entry's
canned reply is sent back, as a driver would send Redis's::

    job = run(ops.get(ctx, "j1", "acme"), [
        Expect(batch("HGETALL"), [record]),
    ])

An entry matches a step by equality (a whole :class:`jobstore.steps.Batch`...), by a predicate
(:func:`batch` builds the usual one: the calls' script or command names, in order), or by the
step's type. A step that does not match, a step past the script's end, or a script left with
entries when the operation returns fails the test with what was expected and what came.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobstore.steps import Batch, Command, Pause, Script, Step

Match = Step | type | Callable[[Step], bool]


@dataclass
class Expect:
    """One scripted step: what the operation must yield, and what it gets back.

    ``reply``: sent into the operation (a Batch's list of replies; None for a Refresh, a Pause or
    a Tidy). ``raises``: thrown into the operation instead, at that step (a connection that
    failed). ``effect``: called with the step before the reply goes back (a clock a server-side
    wait moves on, say).
    """

    match: Match
    reply: Any = None
    raises: BaseException | None = None
    effect: Callable[[Step], None] | None = None


@dataclass
class Scripted:
    """Runs operations against a script; ``steps`` keeps every step they yielded, in order.

    ``clock``: a fake clock (jobstore.testing.FakeClock) that a :class:`Pause` step moves on
    by its seconds, as a driver's sleep would."""

    clock: Any = None
    steps: list[Step] = field(default_factory=list)

    def run(self, op: Generator[Step, Any, Any], script: Sequence[Expect]) -> Any:
        """The operation's result (or the error it raises) once it ran through ``script``."""
        entries = list(script)
        send: Any = None
        throw: BaseException | None = None
        position = 0
        while True:
            try:
                step = op.throw(throw) if throw is not None else op.send(send)
            except StopIteration as finished:
                if position < len(entries):
                    raise AssertionError(
                        f"the operation returned {finished.value!r} after {position} steps; the "
                        f"script expected {len(entries)}, next {describe(entries[position].match)}"
                    ) from None
                return finished.value
            self.steps.append(step)
            if position >= len(entries):
                op.close()
                raise AssertionError(f"step {position} is past the script's end: {show(step)}")
            entry = entries[position]
            if not matches(entry.match, step):
                op.close()
                raise AssertionError(f"step {position}: expected {describe(entry.match)}, "
                                     f"got {show(step)}")
            position += 1
            if isinstance(step, Pause) and self.clock is not None:
                self.clock.wait(step.seconds)
            if entry.effect is not None:
                entry.effect(step)
            send, throw = entry.reply, entry.raises


def run(op: Generator[Step, Any, Any], script: Sequence[Expect], clock: Any = None) -> Any:
    """Run ``op`` through ``script`` (see :class:`Scripted`); its result."""
    return Scripted(clock).run(op, script)


def matches(match: Match, step: Step) -> bool:
    if isinstance(match, type):
        return isinstance(step, match)
    if callable(match):  # steps are frozen dataclasses, never callable
        return bool(match(step))
    return match == step


def call_name(call: Command | Script) -> str:
    """A script's name (``update_status``: jobstore/lua/update_status.lua) or a command's."""
    return call.lua.name if isinstance(call, Script) else str(call.args[0]).upper()


def batch(*names: str, check: Callable[[Batch], bool] | None = None) -> Callable[[Step], bool]:
    """A Batch whose calls are ``names`` in order: script names in lower case, commands in
    upper case (``batch("update_status")``, ``batch("HGETALL", "HGETALL")``); ``check``: a
    further condition on the batch."""

    def predicate(step: Step) -> bool:
        return (isinstance(step, Batch) and tuple(map(call_name, step.calls)) == names
                and (check is None or check(step)))

    predicate.__qualname__ = f"batch{names!r}" + (" with a check" if check else "")
    return predicate


def describe(match: Match) -> str:
    if isinstance(match, type):
        return f"a {match.__name__}"
    if callable(match):  # steps are frozen dataclasses, never callable
        return getattr(match, "__qualname__", repr(match))
    return show(match)


def show(step: Any) -> str:
    if isinstance(step, Batch):
        return f"Batch{tuple(map(call_name, step.calls))!r}"
    return repr(step)
