"""Hypothesis profiles for the conformance kit: ``ci``, ``dev`` and ``nightly``.

Registered when this module is imported (the kit imports it). The profile is chosen by
``JOBSTORE_HYPOTHESIS_PROFILE``; unset, it is ``ci`` when the ``CI`` variable is set and ``dev``
otherwise, unless a profile was already chosen (``--hypothesis-profile``, or a ``load_profile``
in a conftest), which is then left alone.

- ``ci``: deterministic (``derandomize``, no example database), 25 machine runs of up to
  30 steps, no deadline (Redis latency is not a bug), too-slow health check off.
- ``dev``: random, 50 runs of up to 40 steps, failures saved to and replayed from the local
  ``.hypothesis/`` database.
- ``nightly``: 1000 runs of up to 80 steps.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

ENV_PROFILE = "JOBSTORE_HYPOTHESIS_PROFILE"
PROFILES = ("ci", "dev", "nightly")

_quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]


def register() -> None:
    """Register the three profiles (idempotent)."""
    settings.register_profile(
        "ci", derandomize=True, database=None, max_examples=25, stateful_step_count=30,
        deadline=None, print_blob=True, suppress_health_check=_quiet,
    )
    settings.register_profile(
        "dev", max_examples=50, stateful_step_count=40, deadline=None,
        suppress_health_check=_quiet,
    )
    settings.register_profile(
        "nightly", max_examples=1000, stateful_step_count=80, deadline=None, print_blob=True,
        suppress_health_check=_quiet,
    )


def selected(environ=None) -> str | None:
    """The profile the environment asks for; None: keep the profile already in force.

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


def load(environ=None) -> str:
    """Load the selected profile; returns the name of the profile in force."""
    name = selected(environ)
    if name is not None:
        settings.load_profile(name)
    return settings.get_current_profile_name()


register()
load()
