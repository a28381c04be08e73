"""jobstore.testing and its pytest plugin leave other people's test runs alone.

- Importing the kit changes no global Hypothesis setting: not ``settings.default``, not the
  current profile, not the registered profiles (the kit applies its profiles to its own runs).
- The ``pytest11`` plugin, loaded into every pytest run wherever jobstore is installed, imports
  nothing heavy (not jobstore, redis-py, fakeredis, lupa, Hypothesis) and changes nothing in a
  project that uses neither its options nor its fixtures.

Each check runs in a fresh interpreter, so that nothing this suite imported counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytest_plugins = ["pytester"]

# What the plugin must not import at load time: all of these cost time or change state.
HEAVY = ("jobstore", "redis", "fakeredis", "lupa", "hypothesis", "prometheus_client", "click",
         "tqdm")

SNAPSHOT = """
import json, sys
from hypothesis import settings

def snapshot():
    return {
        "current": settings.get_current_profile_name(),
        "default": repr(settings.default),
        "profiles": {name: repr(settings.get_profile(name)) for name in sorted(settings._profiles)},
    }
"""


def run_python(code: str, **env: str) -> Any:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("CI", "JOBSTORE_HYPOTHESIS_PROFILE") and not k.startswith("PYTEST_")}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=environ, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env", [{}, {"CI": "true"}, {"JOBSTORE_HYPOTHESIS_PROFILE": "nightly"}],
                         ids=["plain", "CI", "nightly"])
def test_importing_the_kit_leaves_global_hypothesis_settings_alone(env):
    found = run_python(SNAPSHOT + """
before = snapshot()
import jobstore.testing
from jobstore.testing import SchemaConformance, StoreMachine, run_machine  # every module
import jobstore.testing.profiles
jobstore.testing.profiles.kit_settings()
print(json.dumps({"before": before, "after": snapshot()}))
""", **env)
    assert found["after"] == found["before"]


# -- the pytest plugin ---------------------------------------------------------------------------

PLAIN_PROJECT = f"""
import json, sys

HEAVY = {HEAVY!r}

def test_something():
    assert 1 + 1 == 2

def test_report(request):
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY))
    report = {{"loaded": loaded,
               "plugin": request.config.pluginmanager.has_plugin("jobstore")}}
    if "hypothesis" in sys.modules:
        from hypothesis import settings
        report["profile"] = settings.get_current_profile_name()
    print("REPORT " + json.dumps(report))
"""


def report(result) -> dict:
    lines = [line.split("REPORT ", 1)[1] for line in result.outlines if "REPORT " in line]
    assert lines, result.stdout.str()[-3000:]
    return json.loads(lines[0])


def test_the_pytest_plugin_costs_nothing_in_a_project_that_does_not_use_it(pytester):
    pytester.makepyfile(test_plain=PLAIN_PROJECT)
    with_plugin = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:jobstore", "-s")
    with_plugin.assert_outcomes(passed=2)
    without.assert_outcomes(passed=2)
    loaded, bare = report(with_plugin), report(without)
    assert loaded.pop("plugin") is True and bare.pop("plugin") is False
    # Nothing heavy at all; Hypothesis's own plugin (not ours) would be the only excuse.
    assert set(loaded["loaded"]) <= {"hypothesis"}, loaded
    assert loaded == bare  # the same modules and the same Hypothesis profile as without it


def test_the_plugin_imports_jobstore_when_a_fixture_is_used(pytester, monkeypatch):
    monkeypatch.delenv("JOBSTORE_TEST_URL", raising=False)
    pytester.makepyfile(test_store="""
import sys

def test_before():
    assert "jobstore" not in sys.modules and "redis" not in sys.modules

def test_store(jobstore_store, jobstore_url):
    assert jobstore_url.startswith("memory://")
    job = jobstore_store.enqueue("ws", "act", job_id="j1")
    assert jobstore_store.get("j1", workspace_id="ws") == job
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_plugin_module_imports_nothing_heavy():
    found = run_python(f"""
import json, sys
import _jobstore_pytestplugin
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))))
""")
    assert found == []
