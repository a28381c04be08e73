"""The conformance kit as a plugin author meets it: a pytest run in a fresh project directory.

Most tests write a conftest and a test file the way docs/testing.md tells a plugin author to,
run pytest on them in a subprocess (the ``pytest11`` plugin loads from jobstore's entry point,
as in the author's own CI) and read the outcome. The others run the kit's machines in-process
on schemas that jobstore's registration checks would refuse (switched off for them): each must
stop at its first divergence from the model, with a message that names it.
"""

from __future__ import annotations

import inspect
import pathlib
import re
import time
import uuid

import pytest
from hypothesis import Phase, given, settings, strategies as st

import jobstore
from jobstore import hookspecs, plugins
from jobstore.testing import Divergence, MultiStrategyMachine, SchemaConformance, StoreMachine, run_machine
from jobstore.testing import profiles
from jobstore.testing.profiles import profile
from jobstore.testing.stateful import MIGRATION_CYCLE, Migrating, job_id_pools, workspace_pools
from jobstore.validation import IDENTIFIER
from tests.plugins.test_plugins import extra_plugin, make_plugin  # noqa: F401 - the fixture
from tests.plugins.test_schema_checks import (Buckets, ByWorkspaceUnscoped, FoldsCase,
                                              IgnoresWorkspace, SaltedBuckets, TooWide, Truncates,
                                              Unstable)

pytest_plugins = ["pytester"]

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A plugin registered in-process by the conftest, as an installed plugin would be by its entry
# point. ``broken`` claims workspace-scoped keys, but its job_key puts every workspace's job
# under one key: the bug the kit exists to catch. jobstore's registration checks would refuse
# it before the kit runs; they are switched off here, so that the kit's own catching is tested.
CONFTEST = '''
import types

import pytest

import jobstore
from jobstore import plugins

plugins.check_schema = lambda *args, **kwargs: None


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
from jobstore.testing import SchemaConformance


class TestSchema(SchemaConformance):
    schema = "{schema}"
'''

# How the machines report the first step where a store differs from the model.
FIRST_FAILURE = re.compile(
    r"Divergence: step \d+, store (?P<store>\S+): (?P<operation>\w+\(.*\).*)\n"
    r"(?:E )?\s+the contract \(model\) (?P<expected>(returned|raised) .+)\n"
    r"(?:E )?\s+the store (?P<actual>(returned|raised) .+)"
)

# The kit's tests that must catch a job_key that ignores the workspace: the static key checks
# and, independently, the state machine driving a store of the schema against the model, on
# the synchronous store and on the asyncio one.
MUST_CATCH = ("test_job_keys_round_trip_through_parse_key", "test_distinct_jobs_have_distinct_keys",
              "test_machine_schema_alone")
MUST_CATCH_IDS = (*MUST_CATCH[:2], f"{MUST_CATCH[2]}[sync]", f"{MUST_CATCH[2]}[async]")


def run_kit(pytester, schema: str, *args: str):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_schema=KIT_TESTS.format(schema=schema))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args)


def outcomes(result) -> dict[str, str]:
    found = {}
    for line in result.outlines:
        match = re.match(r"(PASSED|FAILED|SKIPPED|ERROR) \S*::TestSchema::(\w+(?:\[\w+\])?)", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def test_the_kit_catches_a_schema_whose_job_key_ignores_the_workspace(pytester, monkeypatch):
    """Under the ci profile, as in a plugin author's CI: it fails within about a minute (the
    shrinking is bounded), and the machine's first failure is the step where the store
    differs from the model, named with what the model expected and what the store did."""
    monkeypatch.setenv("JOBSTORE_HYPOTHESIS_PROFILE", "ci")
    started = time.monotonic()
    result = run_kit(pytester, "broken", "-k", " or ".join(MUST_CATCH))
    took = time.monotonic() - started
    found = outcomes(result)
    output = result.stdout.str()
    assert found == {name: "FAILED" for name in MUST_CATCH_IDS}, output[-3000:]
    first = FIRST_FAILURE.search(output)
    assert first, output[-3000:]
    assert first["store"] == "broken", first.group(0)
    assert first["expected"] != first["actual"], first.group(0)
    for follow_on in ("NoneType", "AttributeError", "Hypothesis found 2 distinct failures"):
        assert follow_on not in output, output[-3000:]
    assert "the ci profile shrinks a failing run for at most 20 s" in output
    assert took < 120, f"a failing kit run took {took:.0f} s"


def test_a_correct_schema_passes_the_same_tests(pytester):
    result = run_kit(pytester, "team", "-k", " or ".join(MUST_CATCH))
    assert outcomes(result) == {name: "PASSED" for name in MUST_CATCH_IDS}, result.stdout.str()[-3000:]


# -- the machines catch broken schemas on their own ------------------------------------------
# jobstore's registration checks refuse each of these schemas before the kit runs; switched off
# here, what is tested is that the kit would catch them by itself.

class FoldsCaseInKey(Buckets):
    """Its key folds the workspace's case: ``Acme`` and ``acme`` share every job id's key."""

    name = "folds-case-in-key"

    def job_key(self, workspace_id, job_id):
        return super().job_key(workspace_id.lower(), job_id)


@pytest.fixture
def unchecked_schemas(extra_plugin, monkeypatch):
    monkeypatch.setattr(plugins, "check_schema", lambda *args, **kwargs: None)
    monkeypatch.setattr(plugins, "check_across_processes", lambda *args, **kwargs: None)
    monkeypatch.setattr(jobstore.schema, "check_schema", lambda *args, **kwargs: None)
    extra_plugin(make_plugin(IgnoresWorkspace, FoldsCase, FoldsCaseInKey, Truncates, Unstable,
                             TooWide, ByWorkspaceUnscoped, SaltedBuckets), "broken-schemas")


# No shrinking: the failure as first found, which the message must make clear by itself.
UNSHRUNK = settings(profile("ci"), phases=[Phase.explicit, Phase.reuse, Phase.generate])

# The first failure of a machine: the step, the store, the operation, the model's outcome and
# the store's.
DIVERGENCE = re.compile(r"step \d+, store (?P<store>.+?): (?P<operation>.+)\n"
                        r"  the contract \(model\) (?P<expected>.+)\n"
                        r"  the store (?P<actual>.+)")

CAUGHT_BY_A_MACHINE = [
    ("ignores-ws", StoreMachine),             # the key ignores the workspace
    ("folds-case-in-key", StoreMachine),      # Acme's and acme's jobs share keys
    ("truncates", StoreMachine),              # job ids cut to 64 characters
    ("unstable", StoreMachine),               # a computed key that differs between two calls
    ("folds-case", MultiStrategyMachine),     # parse_key lower-cases: a migration loses Acme
]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("schema, machine", CAUGHT_BY_A_MACHINE, ids=[c[0] for c in CAUGHT_BY_A_MACHINE])
def test_a_machine_stops_a_broken_schema_at_its_first_divergence(unchecked_schemas, schema, machine,
                                                                 flavour):
    url = f"memory://kit-{uuid.uuid4().hex}"
    factory = ((lambda: StoreMachine(url, schema, flavour=flavour)) if machine is StoreMachine
               else (lambda: MultiStrategyMachine(url, (schema,), flavour=flavour)))
    with pytest.raises(Divergence) as failed:  # not a crash of the kit, not a bare JobExists
        run_machine(factory, UNSHRUNK)
    message = str(failed.value)
    first = DIVERGENCE.match(message)
    assert first, message
    assert schema in first["store"], message
    assert first["expected"] != first["actual"], message


def test_the_kit_names_a_schema_keyed_by_id_alone_whose_key_depends_on_the_workspace(
        unchecked_schemas):
    class Kit(SchemaConformance):
        schema = ByWorkspaceUnscoped.name

    with pytest.raises(AssertionError, match=r"parse_key gives no workspace back .* but job_key "
                                             r"depends on the workspace: job_id="):
        Kit().test_a_schema_without_workspaces_keys_a_job_by_its_id_alone()
    Kit.schema = "bucketed"  # scoped: nothing to say
    Kit().test_a_schema_without_workspaces_keys_a_job_by_its_id_alone()


def test_the_kit_catches_keys_another_process_computes_otherwise(unchecked_schemas):
    class Kit(SchemaConformance):
        schema = SaltedBuckets.name

    with pytest.raises(jobstore.PluginError, match="gives another key in a second Python process"):
        Kit().test_keys_are_the_same_in_a_second_process()
    Kit.schema = "bucketed"
    Kit().test_keys_are_the_same_in_a_second_process()


def test_the_scan_tests_catch_a_scan_pattern_that_is_too_wide(unchecked_schemas):
    """``<prefix>:*`` finds every record (its parse_key is right), and every key of jobstore's
    own: backfill, verify and cleanup would scan the whole keyspace."""

    class TooWideKit(SchemaConformance):
        schema = "too-wide"

    kit = TooWideKit()
    with pytest.raises(AssertionError, match="too wide"):
        kit.test_scan_pattern_covers_job_keys_and_no_jobstore_key()
    with pytest.raises(AssertionError, match="too wide"):
        kit.test_scan_finds_exactly_the_record_keys(f"memory://kit-{uuid.uuid4().hex}")


@given(workspaces=workspace_pools(), job_ids=job_id_pools())
def test_the_machines_draw_ids_from_the_whole_alphabet(workspaces, job_ids):
    """Every run has case twins and long ids that differ only at the end, so that a schema that
    folds case or truncates gives two of its jobs one key."""
    for pool, size in ((workspaces, 3), (job_ids, 4)):
        assert len(set(pool)) == size and all(IDENTIFIER.fullmatch(i) for i in pool), pool
        assert pool[0] != pool[1] and pool[0].lower() == pool[1].lower(), pool
    long_a, long_b = job_ids[2:]
    assert len(long_a) == len(long_b) == 128 and long_a[:-1] == long_b[:-1], job_ids


@pytest.fixture
def buckets(extra_plugin):
    extra_plugin(make_plugin(Buckets), "buckets-plugin")


@pytest.mark.usefixtures("buckets")
@settings(max_examples=1, database=None, deadline=None)
@given(st.none())
def test_the_machine_migrates_to_and_from_the_schema_under_test(_):
    """Given a schema, MultiStrategyMachine migrates legacy -> it and it -> workspace through the
    whole cycle (backfill, verify, cleanup, reverse sync and back), jobs read alike throughout."""
    machine = MultiStrategyMachine(f"memory://kit-{uuid.uuid4().hex}", ("buckets",))
    try:
        machine.draw_ids(("Acme", "aCME", "w" * 128), ("j", "J", "x" * 127 + "a", "x" * 127 + "b"))
        for n, ws in enumerate(machine.workspaces):
            machine.enqueue(ws, "a", {"n": n}, machine.job_ids[n])
        machine.dequeue()
        for _ in MIGRATION_CYCLE:
            machine.migrate(1)
            machine.every_workspace_reads_as_modelled()
        migrating = {f"{s.source}->{s.target}": s for s in machine.subjects.values()
                     if isinstance(s, Migrating)}
        assert {"legacy->buckets", "buckets->workspace"} <= set(migrating)
        for subject in migrating.values():
            assert subject.reached == set(MIGRATION_CYCLE) and subject.laps == 1, subject.name
    finally:
        machine.teardown()


def test_the_ci_profile_bounds_the_shrinking_and_says_so(unchecked_schemas, monkeypatch):
    from hypothesis.internal.conjecture import engine

    before = engine.MAX_SHRINKING_SECONDS
    monkeypatch.setenv("JOBSTORE_HYPOTHESIS_PROFILE", "ci")
    monkeypatch.setitem(profiles.SHRINK_SECONDS, "ci", 2)
    url = f"memory://kit-{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(Divergence) as failed:  # unbounded, this one shrinks for about 30 s
        run_machine(lambda: MultiStrategyMachine(url, ("truncates",)))
    assert time.monotonic() - started < 25
    assert "the ci profile shrinks a failing run for at most 2 s" in "\n".join(failed.value.__notes__)
    assert engine.MAX_SHRINKING_SECONDS == before  # Hypothesis's own limit, put back
    for name, limit in (("ci", 2), ("dev", None), ("nightly", None)):
        assert profiles.shrink_seconds({"JOBSTORE_HYPOTHESIS_PROFILE": name}) == limit
        assert Phase.explain not in profiles.profile(name).phases and Phase.shrink in profiles.profile(name).phases


def test_the_whole_kit_on_a_third_party_schema_over_real_redis(pytester, redis_url):
    """``--jobstore-url`` points the kit at a real server: the round-trip count runs there too."""
    result = run_kit(pytester, "team", f"--jobstore-url={redis_url}")
    found = outcomes(result)
    assert found and set(found.values()) == {"PASSED"}, result.stdout.str()[-3000:]
    assert found["test_single_job_operations_take_one_round_trip"] == "PASSED"
    assert found["test_machine_every_strategy_reads_alike[sync]"] == "PASSED"
    assert found["test_machine_every_strategy_reads_alike[async]"] == "PASSED"


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
        # A run that overruns Hypothesis's buffer is run again and not counted as an example.
        assert 1 < runs <= examples + examples // 10 and most <= steps, line
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
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("jobstore_")]
    assert hooks, "no hooks found in jobstore.hookspecs"
    for hook in hooks:
        assert f"### Hook: `{hook}`" in docs, f"{hook} has no section in docs/plugins.md"
        assert re.search(rf"^def test_hook_{hook}\b", tests, re.M), f"{hook} has no test_hook_{hook}"
