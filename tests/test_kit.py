"""The conformance kit as a plugin author meets it: a pytest run in a fresh project directory.

Each test writes a conftest and a test file the way docs/testing.md tells a plugin author to,
runs pytest on them in a subprocess (the ``pytest11`` plugin loads from jobstore's entry point,
as in the author's own CI) and reads the outcome.
"""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

from jobstore import hookspecs

pytest_plugins = ["pytester"]

ROOT = pathlib.Path(__file__).resolve().parent.parent

# A plugin registered in-process by the conftest, as an installed plugin would be by its entry
# point. ``broken`` claims workspace-scoped keys, but its job_key puts every workspace's job
# under one key: the bug the kit exists to catch.
CONFTEST = '''
import types

import pytest

import jobstore
from jobstore import plugins


class TeamSchema(jobstore.KeySchema):
    name = "team"
    key_format = "${prefix}:team:${workspace_id}:job:${job_id}"


class BrokenSchema(jobstore.KeySchema):
    name = "broken"
    key_format = "${prefix}:broken:${workspace_id}:${job_id}"

    def job_key(self, workspace_id, job_id):
        return super().job_key("all", job_id)  # ignores the workspace


@jobstore.hookimpl
def jobstore_register_schemas(register):
    register(TeamSchema)
    register(BrokenSchema)


plugins.reset()
plugins.get_plugin_manager().register(
    types.SimpleNamespace(jobstore_register_schemas=jobstore_register_schemas), name="test-schemas"
)
'''

KIT_TESTS = '''
from hypothesis import Phase, settings

from jobstore.testing import SchemaConformance
from jobstore.testing.profiles import kit_settings


class TestSchema(SchemaConformance):
    schema = "{schema}"
{extra}
'''

# Hypothesis spends minutes shrinking a failing state machine run; what is asserted here is
# that it fails, with the model's report, so the broken schema's run skips the shrinking.
NO_SHRINK = ("    machine_settings = settings(kit_settings(), "
             "phases=[Phase.explicit, Phase.reuse, Phase.generate])")

# The kit's tests that must catch a job_key that ignores the workspace: the static key checks
# and, independently, the state machine driving a store of the schema against the model.
MUST_CATCH = ("test_job_keys_round_trip_through_parse_key", "test_distinct_jobs_have_distinct_keys",
              "test_machine_schema_alone")


def run_kit(pytester, schema: str, *args: str, extra: str = ""):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_schema=KIT_TESTS.format(schema=schema, extra=extra))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args)


def outcomes(result) -> dict[str, str]:
    found = {}
    for line in result.outlines:
        match = re.match(r"(PASSED|FAILED|SKIPPED|ERROR) \S*::TestSchema::(\w+)", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def test_the_kit_catches_a_schema_whose_job_key_ignores_the_workspace(pytester):
    result = run_kit(pytester, "broken", "-k", " or ".join(MUST_CATCH), extra=NO_SHRINK)
    found = outcomes(result)
    assert found == {name: "FAILED" for name in MUST_CATCH}, result.stdout.str()[-3000:]
    # The machine's report names the disagreement with the model, not a crash of the kit.
    assert "the contract (model)" in result.stdout.str()


def test_a_correct_schema_passes_the_same_tests(pytester):
    result = run_kit(pytester, "team", "-k", " or ".join(MUST_CATCH))
    assert outcomes(result) == {name: "PASSED" for name in MUST_CATCH}, result.stdout.str()[-3000:]


def test_the_whole_kit_on_a_third_party_schema_over_real_redis(pytester, redis_url):
    """``--jobstore-url`` points the kit at a real server: the round-trip count runs there too."""
    result = run_kit(pytester, "team", f"--jobstore-url={redis_url}")
    found = outcomes(result)
    assert found and set(found.values()) == {"PASSED"}, result.stdout.str()[-3000:]
    assert found["test_single_job_operations_take_one_round_trip"] == "PASSED"
    assert found["test_machine_every_strategy_reads_alike"] == "PASSED"


def test_the_pytest_plugin_gives_fixtures_for_a_strategy_and_url(pytester, redis_url):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fixture='''
import jobstore

def test_store(jobstore_store, jobstore_url):
    assert jobstore_store.strategy.name == "team"
    assert jobstore_url.startswith("redis://")
    jobstore_store.enqueue("ws", "a", job_id="j1")
    assert jobstore_store.client.exists("ai:team:ws:job:j1")
''')
    # The database is flushed before the test: a key left there beforehand is gone.
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("left-over", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--jobstore-url={redis_url}",
                                           "--jobstore-strategy=team")
    result.assert_outcomes(passed=1)
    assert not client.exists("left-over")
    client.close()


def test_the_hypothesis_profile_is_chosen_by_environment(pytester, monkeypatch):
    """The kit's machines and property tests run under the profile the environment names, and
    the project's own Hypothesis settings stay as Hypothesis chose them."""
    pytester.makepyfile(test_profile='''
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from jobstore.testing import run_machine
from jobstore.testing.profiles import kit_settings

RUNS = []

class Counting(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        RUNS.append(0)

    @rule(n=st.integers())
    def step(self, n):
        RUNS[-1] += 1

def test_profile():
    run_machine(Counting)
    kit = kit_settings()
    print("PROFILE", kit.max_examples, kit.stateful_step_count, "RUNS", len(RUNS),
          "STEPS", max(RUNS), "GLOBAL", settings.get_current_profile_name(), settings().max_examples)
''')

    def profile_line() -> str:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
        found = re.search(r"PROFILE .*", result.stdout.str())
        assert found, result.stdout.str()[-3000:]
        return found.group(0)

    monkeypatch.delenv("CI", raising=False)
    for name, examples, steps in (("ci", 25, 30), ("dev", 50, 40), ("nightly", 1000, 80)):
        monkeypatch.setenv("JOBSTORE_HYPOTHESIS_PROFILE", name)
        line = profile_line()
        assert line.startswith(f"PROFILE {examples} {steps} RUNS "), line
        runs, most = int(line.split()[4]), int(line.split()[6])
        assert 1 < runs <= examples and most <= steps, line
        assert line.endswith("GLOBAL default 100"), line  # the project's settings: untouched
    # Unset: CI chooses the kit's ci profile over the one Hypothesis loads by itself under CI,
    # for the kit only.
    monkeypatch.delenv("JOBSTORE_HYPOTHESIS_PROFILE")
    monkeypatch.setenv("CI", "true")
    line = profile_line()
    assert line.startswith("PROFILE 25 30 RUNS 25 ") and line.endswith("GLOBAL ci 100"), line
    monkeypatch.setenv("JOBSTORE_HYPOTHESIS_PROFILE", "weekly")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    assert "JOBSTORE_HYPOTHESIS_PROFILE='weekly' is not one of ci, dev, nightly" in result.stdout.str()


def test_a_profile_the_project_loads_is_the_kits_too(pytester, monkeypatch):
    monkeypatch.delenv("JOBSTORE_HYPOTHESIS_PROFILE", raising=False)
    pytester.makeconftest('''
from hypothesis import settings
settings.register_profile("mine", max_examples=7)
settings.load_profile("mine")
''')
    pytester.makepyfile(test_profile='''
from jobstore.testing.profiles import kit_settings

def test_profile():
    print("KIT", kit_settings().max_examples)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    assert "KIT 7" in result.stdout.str(), result.stdout.str()[-3000:]


def test_every_hook_is_documented_in_plugins_md_and_tested():
    """Like datasette's test_plugin_hooks_have_tests: a new hook needs its docs and its test."""
    docs = (ROOT / "docs" / "plugins.md").read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("jobstore_")]
    assert hooks, "no hooks found in jobstore.hookspecs"
    for hook in hooks:
        assert f"### Hook: `{hook}`" in docs, f"{hook} has no section in docs/plugins.md"
        assert re.search(rf"^def test_hook_{hook}\b", tests, re.M), f"{hook} has no test_hook_{hook}"
