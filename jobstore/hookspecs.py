"""The whole extension surface of jobstore: every hook a plugin can implement.

Plugins are found through the ``jobstore`` entry-point group and mark their hooks with
:data:`jobstore.hookimpl`. The built-in schemas and strategies are registered through these
same hooks (see ``jobstore.plugins.DEFAULT_PLUGINS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .schema import KeySchema
    from .strategy import Strategy

PROJECT = "jobstore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def jobstore_register_schemas(register: Callable[[type[KeySchema]], None]) -> None:
    """Register key schemas: where job records live.

    Call ``register(schema_class)`` once per :class:`jobstore.KeySchema` subclass. Every
    schema is usable on its own as a strategy of the same name, and as the ``source`` or
    ``target`` of ``dual``. A name registered twice is an error naming both plugins.

    :param register: ``register(schema_class)``.
    :returns: nothing; the return value is ignored.
    """


@hookspec
def jobstore_register_strategies(register: Callable[[type[Strategy]], None]) -> None:
    """Register strategies that route operations across several schemas, like ``dual``.

    Call ``register(strategy_class)`` once per :class:`jobstore.Strategy` subclass; its
    ``create(resolve, **options)`` builds it for a store, ``resolve(name)`` turning a
    registered schema name into a schema for that store's prefix.

    :param register: ``register(strategy_class)``.
    :returns: nothing; the return value is ignored.
    """
