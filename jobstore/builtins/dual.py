"""``dual``: one store over two schemas, routed by the phase of a migration between them."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, MigrationStateLost
from ..hookspecs import hookimpl
from ..layout import StoreKeys
from ..schema import KeySchema
from ..steps import Command
from ..phases import (
    DEFAULT_PHASE,
    STATE_MAX_AGE,
    STATE_REFRESH_AGE,
    MigrationState,
    Phase,
    migration_name,
    parse_phase,
)
from ..strategy import Routing, SchemaResolver, Strategy


class DualStrategy(Strategy):
    """Reads and writes a ``source`` and a ``target`` schema as the migration's phase says.

    - ``off``: write source; read source.
    - ``dual-write``: write both atomically; read source, shadow-read the target and compare.
    - ``read-target``: write both atomically; read target then source (for the workspaces the
      rollout includes; the others read as in ``dual-write``).
    - ``target-only``: write target; read target.

    A delete always clears both, so no phase switch can bring a deleted job back.

    The phase lives in Redis (``jobstore migrate phase``) and every store follows a switch within
    a second; ``phase=`` pins it instead, for tests and one-off tools. A store that never saw a
    stored state runs in the default phase; one that did and then finds the state gone (flushed,
    evicted, a failover) raises :class:`MigrationStateLost` until an operator restores it.
    """

    name = "dual"
    description = "migrates between two schemas (source legacy, target workspace by default)"

    def __init__(self, source, target, *, pinned: Phase | None = None):
        if source.identity == target.identity:
            raise ConfigError(f"dual: source and target are the same schema {source.name!r}")
        self.source = source
        self.target = target
        self.migration = migration_name(source.name, target.name)
        self.use_keys(StoreKeys(source.prefix))
        self.pinned = pinned
        self.state = MigrationState(phase=pinned) if pinned else MigrationState()
        self._fetched_at: float | None = None
        # The stored state vanished at the last read; the next state request refuses.
        self._lost = False
        both = (source, target)
        self._routes = {
            Phase.OFF: Routing((source,), (source,), both),
            Phase.DUAL_WRITE: Routing((source,), both, both, shadow=(target,)),
            Phase.READ_TARGET: Routing((target, source), both, both),
            Phase.TARGET_ONLY: Routing((target,), (target,), both),
        }

    @classmethod
    def create(
        cls,
        resolve: SchemaResolver,
        *,
        source: str = "legacy",
        target: str = "workspace",
        phase: str | Phase | None = None,
        **unknown: Any,
    ) -> DualStrategy:
        if unknown:
            raise ConfigError(
                f"strategy 'dual' takes no option {', '.join(sorted(unknown))}; "
                "it takes source, target and phase"
            )
        try:
            pinned = None if phase is None else parse_phase(phase)
        except ValueError:
            raise ConfigError(f"dual: phase {phase!r} is not one of "
                              f"{', '.join(p.value for p in Phase)}") from None
        return cls(resolve(source), resolve(target), pinned=pinned)

    def use_keys(self, keys: StoreKeys) -> None:
        # The phase lives among the store's own keys (its own_prefix, by default its prefix).
        self.state_key = keys.migration(self.source.name, self.target.name)
        self.own_prefix = keys.prefix

    def migration_schemas(self) -> tuple[KeySchema, KeySchema]:
        return self.source, self.target

    @property
    def phase(self) -> Phase:
        return self.state.phase

    def routing(self, workspace_id: str | None) -> Routing:
        phase = self.state.phase
        if (
            phase is Phase.READ_TARGET
            and workspace_id is not None
            and not self.state.rollout.includes(self.migration, workspace_id)
        ):
            phase = Phase.DUAL_WRITE
        return self._routes[phase]

    def state_request(self, now: float, force: bool = False) -> tuple[Command, bool] | None:
        if self.pinned is not None:
            return None
        if self._lost:
            # Raised here, before the next batch is sent, and not where the empty state was
            # read: that read may have ridden along with a write that has landed (under the
            # phase followed until then), and that operation did succeed. Cleared, so the
            # next request reads the state again: the store serves once it is restored.
            self._lost = False
            raise self.lost_error()
        age = None if self._fetched_at is None or force else now - self._fetched_at
        if age is not None and age < STATE_REFRESH_AGE:
            return None
        return Command(("HGETALL", self.state_key)), age is None or age >= STATE_MAX_AGE

    def apply_state(self, reply: Any, now: float) -> None:
        state = MigrationState.from_hash(reply or {})
        if self.state.stored and not state.stored:
            # Followed a stored phase, and now there is none: never fall back to the default
            # phase silently (it could route reads and writes to the wrong schema). Keep the
            # phase followed until now and refuse at the next state request.
            self._lost = True
            self._fetched_at = None
            return
        self.state = state
        self._fetched_at = now

    def lost_error(self) -> MigrationStateLost:
        """The error for a stored state that has vanished, with how to restore it."""
        phase = self.state.phase.value
        restore = (
            f"jobstore migrate phase {phase} --force --reason 'restore lost migration state' "
            f"--prefix {self.source.prefix} "
            + (f"--own-prefix {self.own_prefix} " if self.own_prefix != self.source.prefix else "")
            + f"--source {self.source.name} --target {self.target.name} "
            "(with --url of this Redis); the store serves again at its next operation"
        )
        return MigrationStateLost(self.state_key, phase, restore)

    def fence(self) -> tuple[str, str, str] | None:
        if self.pinned is not None:
            return None
        return self.state_key, self.state.phase.value, DEFAULT_PHASE.value

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "source": self.source.name,
            "target": self.target.name,
            "phase": self.state.phase.value,
        }


@hookimpl
def jobstore_register_strategies(register):
    register(DualStrategy)
