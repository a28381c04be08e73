"""State machines that drive real stores and the model with the same operations.

:class:`StoreMachine` feeds one store (or several stores that must behave the same, such as
``dual`` pinned in each phase) and a :class:`~jobstore.testing.model.StoreModel` with a random
stream of enqueues, batch enqueues, reads, legal and illegal status moves, lists, dequeues and
deletes, over three workspaces and a small pool of job ids (so ids collide, within and across
workspaces). Each run draws its pools from the whole identifier alphabet (``A-Z a-z 0-9 _ . -``,
1 to 128 characters), always with two ids that differ only by case and two long ids that differ
only in their last character, so that a schema that folds case or truncates ids gives two jobs
one key. Every outcome, a result or an error, must equal the model's, and after every step
every workspace is listed and compared: the first step where a store differs from the model
stops the run with a :class:`Divergence` naming the store, the operation, what the model
expected and what the store did.

:class:`MultiStrategyMachine` feeds the same stream to stores of every strategy (``legacy``,
``workspace``, extra schemas, ``dual`` pinned in each phase) plus ``dual`` stores whose phase is
moved through a whole migration and back (:class:`jobstore.migration.Migration`) while the
stream runs: every store must read exactly what the model says, whatever its layout or phase.

Both are plain Hypothesis ``RuleBasedStateMachine`` classes; :func:`run_machine` runs one under
the kit's profile (:func:`jobstore.testing.profiles.kit_settings`)::

    run_machine(lambda: StoreMachine("memory://", "hashtag"))
    run_machine(lambda: StoreMachine("memory://", "hashtag", flavour="async"))  # AsyncJobStore

Every run uses a fresh random key prefix on the given database and deletes its own keys when it
ends, so runs never see each other and nothing else in the database is touched.

The machines live in modules of their own; this module gathers their public names, where
plugin authors import them from:

- :mod:`~jobstore.testing.draws`: the pools of ids and the values the operations draw;
- :mod:`~jobstore.testing.outcomes`: the stores under test and :class:`Divergence`;
- :mod:`~jobstore.testing.harness`: the shared rules and checks, and :class:`StoreMachine`;
- :mod:`~jobstore.testing.migrating`: :class:`MultiStrategyMachine`, :class:`FakeClock` and
  :data:`MIGRATION_CYCLE`;
- :mod:`~jobstore.testing.running`: :func:`run_machine` and :func:`shrink_limit`;
- :mod:`~jobstore.testing.flavours`: driving the asyncio store (``flavour="async"`` on either
  machine) from the machines' synchronous rules, and the share of runs it makes.
"""

from __future__ import annotations

from .draws import (
    ID_CHARS,
    JOB_IDS,
    MAX_ID,
    WORKSPACES,
    actions,
    errors,
    job_id_pools,
    json_values,
    limits,
    params_values,
    pool_ids,
    results,
    statuses,
    workspace_pools,
    workspaces,
)
from .harness import StoreMachine
from .migrating import MIGRATION_CYCLE, PHASES, FakeClock, MultiStrategyMachine
from .outcomes import Check, Divergence, Item, Migrating, Outcome, Subject
from .running import run_machine, shrink_limit

__all__ = [
    "ID_CHARS",
    "JOB_IDS",
    "MAX_ID",
    "MIGRATION_CYCLE",
    "PHASES",
    "WORKSPACES",
    "Check",
    "Divergence",
    "FakeClock",
    "Item",
    "Migrating",
    "MultiStrategyMachine",
    "Outcome",
    "StoreMachine",
    "Subject",
    "actions",
    "errors",
    "job_id_pools",
    "json_values",
    "limits",
    "params_values",
    "pool_ids",
    "results",
    "run_machine",
    "shrink_limit",
    "statuses",
    "workspace_pools",
    "workspaces",
]
