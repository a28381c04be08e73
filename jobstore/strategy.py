"""Strategies decide which schemas an operation reads and writes.

Operations (``jobstore.ops``) are written once against :class:`Routing`; a strategy only answers
"for this workspace, right now, read these schemas in this order and write those".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from .errors import ConfigError
from .layout import StoreKeys
from .schema import KeySchema


@dataclass(frozen=True)
class Routing:
    """Where one operation goes.

    ``reads``: schemas tried in order; the first record that belongs to the workspace wins.
    ``writes``: schemas a new job is written to, atomically; updates touch those that hold it.
    ``known``: every schema the strategy may hold a job in (checked by enqueue, cleared by delete).
    ``shadow``: schemas read alongside and compared (``dual-write``), never returned.
    """

    reads: tuple[KeySchema, ...]
    writes: tuple[KeySchema, ...]
    known: tuple[KeySchema, ...]
    # Read beside ``reads`` and compared with what they return, never returned themselves.
    shadow: tuple[KeySchema, ...] = ()

    @cached_property
    def touched(self) -> tuple[KeySchema, ...]:
        """Reads then writes, without repeats: the records an update or dequeue acts on
        (worked out once per routing: a strategy hands out the same one until its phase
        changes)."""
        return _unique(self.reads + self.writes)

    @cached_property
    def untouched(self) -> tuple[KeySchema, ...]:
        """The known schemas an update or dequeue does not act on in this phase: the copies a
        final move leaves as they are and expires with the job (docs/retention.md)."""
        touched = {s.identity for s in self.touched}
        return tuple(s for s in self.known if s.identity not in touched)


def _unique(schemas: tuple[KeySchema, ...]) -> tuple[KeySchema, ...]:
    seen: dict[str, KeySchema] = {}
    for schema in schemas:
        seen.setdefault(schema.identity, schema)
    return tuple(seen.values())


# Resolves a registered schema name to an instance for a prefix.
SchemaResolver = Callable[[str], KeySchema]


class Strategy:
    """Base class of strategies registered with ``jobstore_register_strategies``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @classmethod
    def create(cls, resolve: SchemaResolver, **options: Any) -> Strategy:
        """Build the strategy for one store. Unknown options raise ConfigError."""
        raise NotImplementedError

    def routing(self, workspace_id: str | None) -> Routing:
        """Where an operation on ``workspace_id`` goes (None: not known yet, as in dequeue)."""
        raise NotImplementedError

    @property
    def schemas(self) -> tuple[KeySchema, ...]:
        return self.routing(None).known

    def use_keys(self, keys: StoreKeys) -> None:
        """The store's own keys (:class:`jobstore.layout.StoreKeys`), given by the store before
        its first operation: state the strategy keeps in Redis lives among them."""

    def state_request(self, now: float, force: bool = False) -> tuple[Any, bool] | None:
        """A command reading state the routing depends on, when the cached copy is old (or
        ``force``).

        Returns None when fresh, else ``(command, must_wait)``: with ``must_wait`` the store
        reads it before the operation; otherwise it rides along with the operation's own batch.
        """
        return None

    def apply_state(self, reply: Any, now: float) -> None:
        """Take the reply to :meth:`state_request`'s command."""

    def migration_schemas(self) -> tuple[KeySchema, KeySchema] | None:
        """``(source, target)`` when the routing follows the phase of the migration between
        these two schemas (the phase ``jobstore migrate phase`` and :class:`Migration` switch),
        else None (the default).

        A strategy that returns them gets :meth:`JobStore.migration` (the
        :class:`jobstore.migration.Migration` between them) and its phase readings reach
        ``Events.phase`` under that migration's name. ``dual`` is one such strategy.
        """
        return None

    def fence(self) -> tuple[str, str, str] | None:
        """``(state key, phase routed for, phase when none is stored)`` for writes to check
        atomically, or None when routing depends on no stored state."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "schemas": [s.name for s in self.schemas]}


class SchemaStrategy(Strategy):
    """One schema, read and written alone: what every registered schema is on its own."""

    def __init__(self, schema: KeySchema):
        self.schema = schema
        self.name = schema.name  # type: ignore[misc]
        self.description = schema.description  # type: ignore[misc]
        self._routing = Routing((schema,), (schema,), (schema,))

    @classmethod
    def create(cls, resolve: SchemaResolver, **options: Any) -> Strategy:
        raise TypeError("SchemaStrategy is built from a schema, not from options")

    def routing(self, workspace_id: str | None) -> Routing:
        return self._routing


def reject_options(strategy: str, options: dict[str, Any]) -> None:
    if options:
        raise ConfigError(
            f"strategy {strategy!r} takes no option {', '.join(sorted(options))}"
        )
