"""Running a state machine under the kit's profile: :func:`run_machine`, and the limit on
shrinking a failure (:func:`shrink_limit`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from hypothesis import HealthCheck, Phase as HypothesisPhase, settings as Settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from .flavours import one_loop
from .profiles import kit_settings, selected, shrink_seconds


def run_machine(factory: Callable[[], RuleBasedStateMachine], settings: Settings | None = None) -> None:
    """Run a machine as a test under the kit's profile (or ``settings``), leaving the caller's
    global Hypothesis settings alone.

    The deadline is always off: a step's time is Redis latency, not a bug. Under the ``ci``
    profile a failing run shrinks for at most
    :data:`~jobstore.testing.profiles.SHRINK_SECONDS` seconds (see :func:`shrink_limit`).
    Asyncio machines (``flavour="async"``) share one event loop for the whole run, closed when
    it ends (:func:`jobstore.testing.flavours.one_loop`).
    """
    base = settings if settings is not None else kit_settings()
    limit = shrink_seconds()
    started = time.perf_counter()
    with shrink_limit(limit) as shrinks, one_loop():
        try:
            run_state_machine_as_test(
                # Hypothesis annotates a machine class; it documents (and runs) any factory.
                factory,  # type: ignore[arg-type]
                settings=Settings(base, deadline=None,
                                  phases=base.phases if shrinks else
                                  [p for p in base.phases if p is not HypothesisPhase.shrink],
                                  suppress_health_check=[*base.suppress_health_check,
                                                         HealthCheck.too_slow]),
            )
        except Exception as exc:
            if limit is not None:
                spent = time.perf_counter() - started
                how = (f"shrinks a failing run for at most {limit:g} s (this one took {spent:.0f} s "
                       "in all; a warning of Hypothesis's about five minutes of shrinking means "
                       "this limit)" if shrinks else "does not shrink a failing run")
                _add_note(exc, f"jobstore kit: the {selected()} profile {how}, so the steps "
                               "above may not be the shortest; JOBSTORE_HYPOTHESIS_PROFILE=dev "
                               "shrinks fully")
            raise


def _add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also before Python 3.11 (pytest shows ``__notes__`` there too)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


@contextlib.contextmanager
def shrink_limit(seconds: float | None) -> Iterator[bool]:
    """Within the block, Hypothesis stops shrinking a failure after ``seconds`` (None: its own
    five minutes). Yields whether shrinking is on at all.

    Hypothesis has no setting for this: it stops after its module constant
    ``MAX_SHRINKING_SECONDS``, which it lets users monkeypatch; the old value is put back when
    the block ends. A Hypothesis without it gets no shrinking within a limit at all.
    """
    if seconds is None:
        yield True
        return
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError:  # pragma: no cover - a Hypothesis that moved its engine
        patchable = False
    else:
        patchable = hasattr(engine, "MAX_SHRINKING_SECONDS")
    if not patchable:  # pragma: no cover
        yield False
        return
    before = engine.MAX_SHRINKING_SECONDS
    # Hypothesis declares an int, and adds it to a perf_counter() reading: a float does as well.
    engine.MAX_SHRINKING_SECONDS = seconds  # type: ignore[assignment]
    try:
        yield True
    finally:
        engine.MAX_SHRINKING_SECONDS = before
