"""``dual``: one store over two schemas, routed by the phase of a migration between them."""

from __future__ import annotations

import enum
from typing import Any, Callable

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..strategy import Routing, SchemaResolver, Strategy


class Phase(str, enum.Enum):
    """The phases of a source -> target migration, in order."""

    OFF = "off"
    DUAL_WRITE = "dual-write"
    READ_TARGET = "read-target"
    TARGET_ONLY = "target-only"

    def __str__(self) -> str:
        return self.value


class DualStrategy(Strategy):
    """Reads and writes a ``source`` and a ``target`` schema as the current phase says.

    ========== ================================ ===========================
    phase      writes                           reads
    ========== ================================ ===========================
    off        source                           source
    dual-write source and target, atomically    source
    read-target source and target, atomically   target, then source
    target-only target                          target
    ========== ================================ ===========================

    A delete always clears both, so no phase switch can bring a deleted job back.
    """

    name = "dual"
    description = "migrates between two schemas (source legacy, target workspace by default)"

    def __init__(self, source, target, phase: Callable[[], Phase]):
        if source.lua_template == target.lua_template:
            raise ConfigError(f"dual: source and target are the same schema {source.name!r}")
        self.source = source
        self.target = target
        self.current_phase = phase
        both = (source, target)
        self._routes = {
            Phase.OFF: Routing((source,), (source,), both),
            Phase.DUAL_WRITE: Routing((source,), both, both),
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
        phase: str | Phase = Phase.READ_TARGET,
        **unknown: Any,
    ) -> "DualStrategy":
        if unknown:
            raise ConfigError(
                f"strategy 'dual' takes no option {', '.join(sorted(unknown))}; "
                "it takes source, target and phase"
            )
        try:
            fixed = Phase(phase)
        except ValueError:
            allowed = ", ".join(p.value for p in Phase)
            raise ConfigError(f"dual: phase {phase!r} is not one of {allowed}") from None
        return cls(resolve(source), resolve(target), lambda: fixed)

    def routing(self, workspace_id: str | None) -> Routing:
        return self._routes[self.current_phase()]

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "source": self.source.name,
            "target": self.target.name,
            "phase": self.current_phase().value,
        }


@hookimpl
def jobstore_register_strategies(register):
    register(DualStrategy)
