"""jobstore's import graph (issue 23): no import cycle runs through the migration's modules or
through ``jobstore.events``, type-only imports (``if TYPE_CHECKING:``) included, as a type
checker follows those too; naming a report type loads no migration machinery.

grimp builds the graph (it comes with import-linter, in the ``testing`` extra). Without it these
tests skip, except under ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


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

    return grimp.build_graph("jobstore", exclude_type_checking_imports=False)


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
    run = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"Contracts: [1-9][0-9]* kept, 0 broken", run.stdout), run.stdout
