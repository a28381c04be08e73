"""Hypothesis profiles for the conformance kit: ``ci``, ``dev`` and ``nightly``.

They are settings objects the kit applies to its own tests and state machines only: importing
the kit registers no profile and loads none, so a project's own Hypothesis settings
(``settings.default``, the current profile, its registered profiles) stay as they were.

:func:`kit_settings` is what the kit runs under. The profile is chosen by
``JOBSTORE_HYPOTHESIS_PROFILE``; unset, it is ``ci`` when the ``CI`` variable is set and ``dev``
otherwise, unless the project chose a profile of its own (``--hypothesis-profile``, or a
``load_profile`` in a conftest): then the kit runs under that one.

- ``ci``: deterministic (``derandomize``, no example database), 25 machine runs of up to
  30 steps, no deadline (Redis latency is not a bug), too-slow health check off.
- ``dev``: random, 50 runs of up to 40 steps, failures saved to and replayed from the local
  ``.hypothesis/`` database.
- ``nightly``: 1000 runs of up to 80 steps.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from hypothesis import HealthCheck, settings

__all__ = ["ENV_PROFILE", "PROFILES", "kit_settings", "profile", "selected"]

ENV_PROFILE = "JOBSTORE_HYPOTHESIS_PROFILE"
PROFILES = ("ci", "dev", "nightly")

_quiet = (HealthCheck.too_slow, HealthCheck.data_too_large)
_VALUES: dict[str, dict[str, Any]] = {
    "ci": dict(derandomize=True, database=None, max_examples=25, stateful_step_count=30,
               deadline=None, print_blob=True, suppress_health_check=_quiet),
    "dev": dict(max_examples=50, stateful_step_count=40, deadline=None, suppress_health_check=_quiet),
    "nightly": dict(max_examples=1000, stateful_step_count=80, deadline=None, print_blob=True,
                    suppress_health_check=_quiet),
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
    return settings.default if name is None else profile(name)

