"""The jobstore conformance kit: a model of the contract, state machines and pytest tests.

A plugin author tests a key schema with::

    from jobstore.testing import SchemaConformance

    class TestMySchema(SchemaConformance):
        schema = "mine"

See docs/testing.md. Needs the ``testing`` extra (``pip install 'jobstore[testing]'``). Names
are imported on first use, so that the pytest plugin (loaded by pytest wherever jobstore is
installed) never needs Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what a type checker sees of the names imported on first use
    from .conformance import SchemaConformance as SchemaConformance
    from .model import BY_DESIGN as BY_DESIGN, ModelJob as ModelJob, StoreModel as StoreModel
    from .model import job_view as job_view
    from .harness import StoreMachine as StoreMachine
    from .migrating import MIGRATION_CYCLE as MIGRATION_CYCLE, FakeClock as FakeClock
    from .migrating import MultiStrategyMachine as MultiStrategyMachine
    from .outcomes import Divergence as Divergence
    from .running import run_machine as run_machine

_EXPORTS = {
    "SchemaConformance": "conformance",
    "StoreModel": "model",
    "ModelJob": "model",
    "BY_DESIGN": "model",
    "job_view": "model",
    "StoreMachine": "harness",
    "MultiStrategyMachine": "migrating",
    "FakeClock": "migrating",
    "Divergence": "outcomes",
    "MIGRATION_CYCLE": "migrating",
    "run_machine": "running",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobstore.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
