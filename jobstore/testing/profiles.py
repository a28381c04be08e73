"""Hypothesis profiles for the conformance kit: ``ci``, ``dev`` and ``nightly``.

They are settings objects the kit applies to its own tests and state machines only: importing
the kit registers no profile and loads none, so a project's own Hypothesis settings
(``settings.default``, the current profile, its registered profiles) stay as they were.

:func:`kit_settings` is what the kit runs under. The profile is chosen by
``JOBSTORE_HYPOTHESIS_PROFILE``; unset, it is ``ci`` when the ``CI`` variable is set and ``dev``
otherwise, unless the project chose a profile of its own (``--hypothesis-profile``, or a
``load_profile`` in a conftest): then the kit runs under that one.

- ``ci``: deterministic (``derandomize``, no example database), 25 machine runs of up to
  30 steps, no deadline (Redis latency is not a bug), too-slow health check off; one failure
  reported (the shortest), and a failing machine shrinks for at most
  :data:`SHRINK_SECONDS` ``["ci"]`` seconds, so that a failing run reports in about a minute.
- ``dev``: random, 50 runs of up to 40 steps, failures saved to and replayed from the local
  ``.hypothesis/`` database, shrunk fully (Hypothesis stops a shrink after five minutes).
- ``nightly``: 1000 runs of up to 80 steps, shrunk fully.

None runs Hypothesis's explain phase (see ``_PHASES``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, Phase, settings

__all__ = ["ENV_PROFILE", "PROFILES", "SHRINK_SECONDS", "kit_settings", "profile", "selected",
           "shrink_seconds"]

ENV_PROFILE = "JOBSTORE_HYPOTHESIS_PROFILE"
PROFILES = ("ci", "dev", "nightly")

# How long a failing state machine may shrink, per profile; None: as long as Hypothesis does
# (it stops after five minutes). Shrinking is most of a failing run's time: a machine run is
# tens of Redis operations, and the shrinker replays it hundreds of times.
SHRINK_SECONDS: dict[str, float | None] = {"ci": 20, "dev": None, "nightly": None}

_quiet = (HealthCheck.too_slow, HealthCheck.data_too_large)
# Every phase but explain: after the first failure it traces every line the test runs (with
# sys.settrace up to Python 3.11), and a failing machine that shrank in 30 s without it ran
# into Hypothesis's five-minute cap with it, for a report-only comment on the steps.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
_VALUES: dict[str, dict[str, Any]] = {
    "ci": dict(derandomize=True, database=None, max_examples=25, stateful_step_count=30,
               deadline=None, print_blob=True, suppress_health_check=_quiet,
               phases=_PHASES, report_multiple_bugs=False),
    "dev": dict(max_examples=50, stateful_step_count=40, deadline=None, suppress_health_check=_quiet,
                phases=_PHASES),
    "nightly": dict(max_examples=1000, stateful_step_count=80, deadline=None, print_blob=True,
                    suppress_health_check=_quiet, phases=_PHASES),
}


def profile(name: str) -> settings:
    """The kit's profile ``name`` as a settings object, over Hypothesis's own defaults (never
    over a profile the caller loaded).

    :raises ValueError: ``name`` is not one of :data:`PROFILES`.
    """
    if name not in _VALUES:
        raise ValueError(f"{name!r} is not one of {', '.join(PROFILES)}")
    return settings(settings.get_profile("default"), **_VALUES[name])


def selected(environ: Mapping[str, str] | None = None) -> str | None:
    """The kit profile the environment asks for; None: run under the caller's profile.

    :raises ValueError: ``JOBSTORE_HYPOTHESIS_PROFILE`` names an unknown profile.
    """
    env = os.environ if environ is None else environ
    name = env.get(ENV_PROFILE) or ""
    if name:
        if name not in PROFILES:
            raise ValueError(f"{ENV_PROFILE}={name!r} is not one of {', '.join(PROFILES)}")
        return name
    # Hypothesis loads a "ci" profile of its own under CI (100 runs): ours replaces it.
    if settings.get_current_profile_name() not in ("default", "ci"):
        return None  # --hypothesis-profile or a conftest chose
    return "ci" if env.get("CI") else "dev"


def kit_settings(environ: Mapping[str, str] | None = None) -> settings:
    """The settings the kit's tests and machines run under, read at each call (so a profile a
    conftest loads counts). Start a class's ``machine_settings`` from it to change one thing::

        machine_settings = settings(kit_settings(), max_examples=10)

    :raises ValueError: ``JOBSTORE_HYPOTHESIS_PROFILE`` names an unknown profile.
    """
    name = selected(environ)
    if name is not None:
        return profile(name)
    current = settings.default
    assert current is not None, "Hypothesis loads its default profile when it is imported"
    return current


def shrink_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """How long a failing machine of the kit may shrink under the selected profile (None: no
    limit of the kit's, Hypothesis's own five minutes)."""
    name = selected(environ)
    return None if name is None else SHRINK_SECONDS[name]
