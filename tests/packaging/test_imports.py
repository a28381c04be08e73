"""jobstore's import graph: no import cycle among jobstore's modules (and none runs
through the migration's modules or through ``jobstore.events``), type-only imports (``if
TYPE_CHECKING:``) included, as a type checker follows those too; naming a report type loads no
migration machinery; the pytest plugin and the kit do not import each other; redis-py is imported
by the driver and the connection module, and by no module beyond the few listed here.

grimp builds the graph (it comes with import-linter, in the ``testing`` extra). Without it these
tests skip, except under ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        message = (f"{module} is not installed (it comes with the testing extra: "
                   "pip install -e '.[testing]')")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the import checks may not skip)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def graph() -> Any:
    need("grimp")
    import grimp

    # No cache: a cached graph has been seen to miss an edit made seconds before.
    return grimp.build_graph("jobstore", exclude_type_checking_imports=False, cache_dir=None)


@pytest.fixture(scope="module")
def full_graph() -> Any:
    """The graph with the packages jobstore imports (redis-py, the top-level plugin module...),
    each as one module."""
    need("grimp")
    import grimp

    return grimp.build_graph("jobstore", exclude_type_checking_imports=False,
                             include_external_packages=True, cache_dir=None)


def cycles_through(graph: Any, module: str) -> list[list[str]]:
    """A shortest way back to ``module`` from each module it imports directly, when there is one."""
    found = []
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
        back = graph.find_shortest_chain(importer=imported, imported=module)
        if back is not None:
            found.append([module, *back])
    return found


def watched(graph: Any) -> list[str]:
    return sorted(m for m in graph.modules
                  if m == "jobstore.events" or m == "jobstore.migration"
                  or m.startswith("jobstore.migration."))


def test_the_graph_holds_the_type_only_imports(graph):
    """The checks below see what a type checker sees: the modules watched, and the imports made
    under ``if TYPE_CHECKING:`` (the one from the events to the report types among them)."""
    assert {"jobstore.events", "jobstore.migration", "jobstore.migration.reports",
            "jobstore.migration.settle", "jobstore.migration.control"} <= set(watched(graph))
    assert graph.direct_import_exists(importer="jobstore.events",
                                      imported="jobstore.migration.reports")


def test_no_import_cycle_runs_through_the_events_or_the_migration(graph):
    cycles = {module: cycles_through(graph, module) for module in watched(graph)}
    assert {module: found for module, found in cycles.items() if found} == {}


def test_importing_the_events_loads_no_migration_module():
    """``jobstore.events`` names the report types for the type checker only. (``jobstore``'s own
    ``__init__`` loads the migration for ``jobstore.Migration``: it is left out here, so that
    what is seen is what ``jobstore.events`` itself pulls in.)"""
    code = (
        "import importlib.util, json, sys, types\n"
        "spec = importlib.util.find_spec('jobstore')\n"
        "package = types.ModuleType('jobstore')\n"
        "package.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['jobstore'] = package\n"
        "import jobstore.events\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('jobstore.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    loaded = json.loads(out)
    assert "jobstore.events" in loaded
    assert [m for m in loaded if m.startswith("jobstore.migration")] == []


def test_the_import_contracts_hold():
    """import-linter's contracts in pyproject.toml ([tool.importlinter]) are kept."""
    need("importlinter")
    linter = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"Contracts: [1-9][0-9]* kept, 0 broken", run.stdout), run.stdout


def test_no_import_cycle_among_jobstore_modules(graph):
    """Every module, package ``__init__`` included: a shortest way back from each import that
    has one. (codec, job and errors imported one another, and connection and the driver did.)"""
    cycles = {module: cycles_through(graph, module) for module in sorted(graph.modules)}
    assert {module: found for module, found in cycles.items() if found} == {}


def top_level_plugin_imports() -> set[str]:
    """The jobstore modules ``_jobstore_pytestplugin`` imports, in its functions too (grimp
    cannot read a top-level module that is no package: its source is parsed here)."""
    tree = ast.parse((ROOT / "_jobstore_pytestplugin.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return {name for name in found if name == "jobstore" or name.startswith("jobstore.")}


def test_the_pytest_plugin_and_the_kit_do_not_import_each_other(full_graph):
    """The plugin imports jobstore inside its fixtures, and the kit's module names the plugin's
    options: no module the plugin imports leads back to it."""
    imported = top_level_plugin_imports()
    assert "jobstore" in imported  # the parse sees the imports inside the fixtures
    assert full_graph.direct_import_exists(importer="jobstore.testing.pytest_plugin",
                                           imported="_jobstore_pytestplugin")
    back = {module: full_graph.find_shortest_chain(importer=module,
                                                   imported="_jobstore_pytestplugin")
            for module in sorted(imported)}
    assert {module: chain for module, chain in back.items() if chain is not None} == {}


# The modules that import redis-py themselves: the drivers, the connection module and its
# connections (jobstore.wire), where it belongs, and the one not moved (the kit's round-trip
# counter, a redis.Connection subclass).
REDIS_PY_IMPORTERS = {"jobstore.drivers.common", "jobstore.drivers.sync", "jobstore.drivers.aio",
                      "jobstore.wire", "jobstore.connection",
                      "jobstore.testing.conformance"}


def test_redis_py_is_imported_only_where_listed(full_graph):
    """An operation reports a refused command by raising ``jobstore.steps.Refused`` (the driver
    translates it), the migration asks ``connection.is_cluster``, the eviction check catches
    ``connection.REDIS_ERRORS``: none of them imports redis-py."""
    assert full_graph.find_modules_directly_imported_by("jobstore.connection") >= {"redis"}
    assert set(full_graph.find_modules_that_directly_import("redis")) <= REDIS_PY_IMPORTERS
    # (the drivers' shared code holds their redis-py errors and lookups; the sync driver itself
    # only calls its client)
    assert {"jobstore.drivers.common", "jobstore.connection"} <= set(
        full_graph.find_modules_that_directly_import("redis"))



# The operations' package, one module per concept (jobstore/ops/__init__.py describes each).
OPS_MODULES = {"jobstore.ops", "jobstore.ops.admin", "jobstore.ops.calls", "jobstore.ops.cluster",
               "jobstore.ops.cluster_enqueue", "jobstore.ops.context", "jobstore.ops.finish",
               "jobstore.ops.migration_calls", "jobstore.ops.queue", "jobstore.ops.reads",
               "jobstore.ops.records", "jobstore.ops.retention", "jobstore.ops.writes"}


def test_the_operations_reach_no_driver_connection_or_redis_py(full_graph):
    """The operations are sans-I/O: no chain of imports from any module of ``jobstore.ops``
    leads to the driver, the connection module or redis-py (the contract ops-without-drivers
    says the same; this also pins the modules it covers, so a module moved out of the package
    cannot leave it unwatched)."""
    assert {m for m in full_graph.modules if m == "jobstore.ops" or m.startswith("jobstore.ops.")
            } == OPS_MODULES
    reached = {(module, target): full_graph.find_shortest_chain(importer=module, imported=target)
               for module in sorted(OPS_MODULES)
               for target in ("jobstore.driver", "jobstore.connection", "redis")}
    assert {pair: chain for pair, chain in reached.items() if chain is not None} == {}
