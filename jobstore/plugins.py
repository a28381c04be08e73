"""Finding schemas and strategies: built-ins and entry points, through the same hooks.

Plugins load lazily, once per process, on the first call that needs them. Environment (process
options of :data:`jobstore.config.PROCESS`):

- ``JOBSTORE_LOAD_PLUGINS``: unset loads every ``jobstore`` entry point; a comma-separated list
  loads only those entry-point names; an empty value loads none (built-ins always load).
- ``JOBSTORE_TRACE_PLUGINS=1``: print every hook implementation called, and its plugin, to stderr.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from importlib import metadata
import sys
import threading
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .config import process_env
from .errors import ConfigError, PluginError, UnknownStrategy
from .determinism import check_across_processes
from .schema import KeySchema, check_schema
from .strategy import SchemaStrategy, Strategy
from .validation import ID_ALPHABET, IDENTIFIER

DEFAULT_PREFIX = "ai"

DEFAULT_PLUGINS = (
    "jobstore.builtins.legacy",
    "jobstore.builtins.workspace",
    "jobstore.builtins.dual",
)
ENTRY_POINT_GROUP = hookspecs.PROJECT
LOAD_PLUGINS = process_env("load_plugins")
TRACE_PLUGINS = process_env("trace_plugins")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrategyInfo:
    """One registered name, as ``jobstore.strategies()`` lists it."""

    name: str
    description: str
    plugin: str
    kind: str  # "schema" (usable alone and as dual's source/target) or "strategy"


class Registry:
    """Everything the loaded plugins registered, by name."""

    def __init__(self) -> None:
        self.schemas: dict[str, tuple[type[KeySchema], str]] = {}
        self.strategies: dict[str, tuple[type[Strategy], str]] = {}
        self.checked: set[tuple[str, str]] = set()
        # Registered schemas (default prefix) and their plugins, for the second interpreter.
        self.registered: list[tuple[KeySchema, str]] = []

    def add(self, table: dict[str, tuple[type[Any], str]], kind: type[Any], item: Any,
            plugin: str) -> None:
        if not (isinstance(item, type) and issubclass(item, kind)):
            raise PluginError(f"plugin {plugin!r} registered {item!r}, not a {kind.__name__} subclass")
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered {item.__name__} without a name")
        if not IDENTIFIER.fullmatch(name):
            raise PluginError(f"plugin {plugin!r} registered the name {name!r}: use {ID_ALPHABET}")
        if kind is KeySchema:
            # A schema that cannot work fails here, naming the plugin, not at open: its
            # key_format, and its keys on generated ids, against every schema registered before
            # (both ways); get_registry then asks a second interpreter for them.
            others = [cls(DEFAULT_PREFIX) for cls, _ in self.schemas.values()]
            schema = item(DEFAULT_PREFIX)
            check_schema(schema, others, plugin)
            self.registered.append((schema, plugin))
        for other in (self.schemas, self.strategies):
            if name in other:
                raise PluginError(
                    f"{name!r} is registered twice: by {other[name][1]!r} and by {plugin!r}"
                )
        table[name] = (item, plugin)

    def names(self) -> list[str]:
        return sorted({*self.schemas, *self.strategies})

    def schema(self, name: str, prefix: str) -> KeySchema:
        if name not in self.schemas:
            raise UnknownStrategy(name, list(self.schemas)) from None
        cls, plugin = self.schemas[name]
        schema = cls(prefix)
        if (name, prefix) not in self.checked:  # keys depend on the prefix: check it once each
            check_schema(schema, plugin=plugin)
            self.checked.add((name, prefix))
        return schema

    def create(self, name: str, prefix: str, options: dict[str, Any]) -> Strategy:
        if name in self.strategies:
            cls = self.strategies[name][0]
            return cls.create(lambda schema_name: self.schema(schema_name, prefix), **options)
        if name in self.schemas:
            if options:
                raise ConfigError(
                    f"strategy {name!r} takes no option {', '.join(sorted(options))}"
                )
            return SchemaStrategy(self.schema(name, prefix))
        raise UnknownStrategy(name, self.names())

    def infos(self) -> list[StrategyInfo]:
        rows = [
            StrategyInfo(n, c.description, p, "schema") for n, (c, p) in self.schemas.items()
        ] + [StrategyInfo(n, c.description, p, "strategy") for n, (c, p) in self.strategies.items()]
        return sorted(rows, key=lambda r: r.name)


_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_registry: Registry | None = None
# Entry-point plugins: plugin name -> distribution name, and -> how messages name them.
_origins: dict[str, str] = {}
_described: dict[str, str] = {}


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _origin(ep: metadata.EntryPoint) -> tuple[str, str]:
    """``(distribution name, "distribution (entry point name = value)")``."""
    dist = getattr(getattr(ep, "dist", None), "name", None) or "an unknown distribution"
    return dist, f"{dist!r} (entry point {ep.name!r} = {ep.value!r} in group {ENTRY_POINT_GROUP!r})"


def _load_entry_points(pm: pluggy.PluginManager, wanted: str | None) -> None:
    """Register the ``jobstore`` entry points (all, or those ``wanted`` names), each failure a
    PluginError that names the distribution and the entry point."""
    names = None if wanted is None else [n.strip() for n in wanted.split(",") if n.strip()]
    available = {ep.name: ep for ep in _entry_points()}
    for name in names if names is not None else list(available):
        ep = available.get(name)
        if ep is None:
            raise PluginError(
                f"{LOAD_PLUGINS} names {name!r}, but no installed "
                f"distribution has a {ENTRY_POINT_GROUP!r} entry point of that name"
            )
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        dist, origin = _origin(ep)
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {origin} failed to import: {type(exc).__name__}: {exc}") from exc
        try:
            pm.register(plugin, name=ep.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {origin} is invalid: {exc}") from exc
        _origins[ep.name] = dist
        _described[ep.name] = origin
        log.debug("plugin %s loaded", origin)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading built-ins and entry points on first use."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            try:
                for module in DEFAULT_PLUGINS:
                    pm.register(importlib.import_module(module), name=module)
                    log.debug("built-in plugin %s loaded", module)
                wanted = os.environ.get(LOAD_PLUGINS)
                log.debug("loading %s of the %r entry points (%s)",
                          "all" if wanted is None else repr(wanted) if wanted else "none",
                          ENTRY_POINT_GROUP, LOAD_PLUGINS)
                _load_entry_points(pm, wanted)
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                name = pm.get_name(exc.plugin) if exc.plugin is not None else None
                named = _described.get(name or "") or repr(name or exc.plugin)
                raise PluginError(f"plugin {named} is invalid: {exc}") from exc
            _manager = pm
        return _manager


def plugin_label(pm: pluggy.PluginManager, plugin_name: str) -> str:
    """A plugin's distribution name when it came from an entry point, else its module name."""
    if plugin_name in _origins:
        return _origins[plugin_name]
    plugin = pm.get_plugin(plugin_name)
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return dist.project_name
    return plugin_name


def get_registry() -> Registry:
    """What every plugin registered; built once, on first use."""
    global _registry
    pm = get_plugin_manager()
    with _lock:
        if _registry is None:
            registry = Registry()
            for hook, table, kind in (
                (pm.hook.jobstore_register_schemas, registry.schemas, KeySchema),
                (pm.hook.jobstore_register_strategies, registry.strategies, Strategy),
            ):
                # One plugin at a time, so that every registration says who made it.
                for impl in hook.get_hookimpls():
                    label = plugin_label(pm, impl.plugin_name)
                    if tracing():
                        sys.stderr.write(f"jobstore: {hook.name} of {label}\n")
                    log.debug("calling %s of %s", hook.name, label)
                    register = functools.partial(_register, registry, table, kind, plugin=label)
                    try:
                        returned = impl.function(register=register)
                    except PluginError:
                        raise
                    except Exception as exc:
                        raise PluginError(
                            f"plugin {label!r} failed in its {hook.name} hook: "
                            f"{type(exc).__name__}: {exc}") from exc
                    # A hook that returns its classes instead of calling register: taken as
                    # registrations (checked like any), never silently ignored.
                    if returned is not None:
                        items = returned if isinstance(returned, (list, tuple)) else [returned]
                        for item in items:
                            if not isinstance(item, type):
                                raise PluginError(
                                    f"plugin {label!r}'s {hook.name} hook returned {item!r}; "
                                    f"it should call register(<a {kind.__name__} subclass>)")
                            register(item)
            # Keys computed in Python must be the same in every process: asked of a second
            # interpreter, all schemas at once (jobstore.determinism).
            check_across_processes(registry.registered)
            _registry = registry
        return _registry


def _register(registry: Registry, table: dict[str, tuple[type[Any], str]], kind: type[Any],
              item: Any, plugin: str) -> None:
    registry.add(table, kind, item, plugin)
    log.debug("%s registered %s %r", plugin, "schema" if kind is KeySchema else "strategy",
              item.name)


def tracing() -> bool:
    return os.environ.get(TRACE_PLUGINS, "").lower() not in ("", "0", "false", "no")


def reset() -> None:
    """Forget loaded plugins (tests, or after installing a plugin in a running process)."""
    global _manager, _registry
    with _lock:
        _manager = None
        _registry = None
        _origins.clear()
        _described.clear()


def strategies() -> list[StrategyInfo]:
    """Every registered schema and strategy with its description and the plugin that gave it."""
    return get_registry().infos()


def create_strategy(name: str, prefix: str = "ai", **options: Any) -> Strategy:
    """Build the strategy ``name`` for a store with key ``prefix``.

    :raises UnknownStrategy: no such name is registered.
    :raises ConfigError: an option the strategy does not take, or a bad option value.
    """
    if not isinstance(name, str):
        raise ConfigError(f"strategy must be a str, not {type(name).__name__}")
    return get_registry().create(name, prefix, options)
