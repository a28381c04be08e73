"""pluggy: built-ins and third parties registered through the same hooks."""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import types

import pytest

import jobstore
from jobstore import KeySchema, PluginError, Routing, hookimpl, hookspecs, plugins
from jobstore.events import Events
from jobstore.phases import MigrationState, Phase
from jobstore.steps import Command


@pytest.fixture
def extra_plugin():
    """Register an in-process plugin object, and forget it afterwards."""
    registered = []

    def register(obj, name):
        plugins.reset()
        plugins.get_plugin_manager().register(obj, name=name)
        registered.append(name)

    yield register
    plugins.reset()


def make_plugin(*schemas):
    @hookimpl
    def jobstore_register_schemas(register):
        for schema in schemas:
            register(schema)

    return types.SimpleNamespace(jobstore_register_schemas=jobstore_register_schemas)


class TeamSchema(KeySchema):
    name = "team"
    description = "jobs under teams"
    key_format = "${prefix}:team:${workspace_id}:job:${job_id}"


def test_builtins_are_registered_as_plugins_through_the_hooks():
    pm = plugins.get_plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(plugins.DEFAULT_PLUGINS) <= names
    rows = {r.name: r for r in jobstore.strategies()}
    assert rows["legacy"].plugin == "jobstore.builtins.legacy" and rows["legacy"].kind == "schema"
    assert rows["workspace"].kind == "schema"
    assert rows["dual"].kind == "strategy" and rows["dual"].description


def test_hook_jobstore_register_schemas(extra_plugin):
    """A plugin schema is a strategy of its own and a dual source or target."""
    extra_plugin(make_plugin(TeamSchema), "team-plugin")
    assert {r.name: r.plugin for r in jobstore.strategies()}["team"] == "team-plugin"
    store = jobstore.open("memory://", "team")
    store.enqueue("ws1", "a", job_id="j1")
    assert store.client.exists("ai:team:ws1:job:j1")
    dual = jobstore.JobStore(store.client, "dual", source="team", target="workspace")
    assert dual.get("j1", workspace_id="ws1").action == "a"


def test_a_name_registered_twice_names_both_plugins(extra_plugin):
    class Clash(TeamSchema):
        name = "legacy"

    extra_plugin(make_plugin(Clash), "clashing-plugin")
    with pytest.raises(PluginError) as info:
        jobstore.strategies()
    assert "jobstore.builtins.legacy" in str(info.value) and "clashing-plugin" in str(info.value)


def test_registering_something_that_is_not_a_schema(extra_plugin):
    extra_plugin(make_plugin(object), "odd-plugin")
    with pytest.raises(PluginError, match="odd-plugin"):
        jobstore.strategies()


@pytest.mark.parametrize(
    "key_format, problem",
    [
        ("${prefix}:x:${workspace_id}", "job_id"),
        ("${prefix}:x:${job_id}:${job_id}", "job_id"),
        ("other:${job_id}", "prefix"),
        ("${prefix}:x*:${job_id}", "glob"),
        ("${prefix}:queue:${job_id}", "reserved"),
        ("${prefix}:index:${workspace_id}:${job_id}", "reserved"),
        ("${prefix}:x:${workspace_id}${job_id}", "separated"),
        ("${prefix}:x:${workspace_id}_${job_id}", "separated"),
        ("${prefix}:x:${nope}", "bad key_format"),
    ],
)
def test_unusable_key_formats_are_refused(key_format, problem):
    schema = type("Bad", (KeySchema,), {"name": "bad", "key_format": key_format})
    with pytest.raises(PluginError, match=problem):
        schema("ai")


def test_schema_keys_scan_patterns_and_parsing():
    team = TeamSchema("svc")
    assert team.job_key("w", "j") == "svc:team:w:job:j"
    assert team.scan_pattern() == "svc:team:*:job:*"
    assert team.parse_key("svc:team:w:job:j") == ("w", "j")
    assert team.parse_key("svc:team:w:job:j:extra") is None
    legacy = plugins.get_registry().schema("legacy", "ai")
    assert legacy.parse_key("ai:jobs:j1") == (None, "j1") and not legacy.scoped


def test_load_plugins_env_restricts_entry_points(monkeypatch):
    monkeypatch.setenv("JOBSTORE_LOAD_PLUGINS", "")
    plugins.reset()
    try:
        assert {r.name for r in jobstore.strategies()} == {"legacy", "workspace", "dual"}
        monkeypatch.setenv("JOBSTORE_LOAD_PLUGINS", "no-such-plugin")
        plugins.reset()
        with pytest.raises(PluginError, match="no-such-plugin"):
            jobstore.strategies()
    finally:
        plugins.reset()


def test_third_party_entry_point_plugin_is_found():
    """The worked example in plugins/ is registered by its entry point alone."""
    try:
        import jobstore_hashtag  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("plugins/jobstore-hashtag must be installed in CI")
        pytest.skip("plugins/jobstore-hashtag is not installed")
    rows = {r.name: r for r in jobstore.strategies()}
    assert rows["hashtag"].plugin == "jobstore-hashtag"


def test_every_hook_is_documented_to_the_template():
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("jobstore_"):
            doc = inspect.getdoc(func) or ""
            assert ":param register:" in doc and ":returns:" in doc, name


def docs_block(page: str, starts_with: str) -> str:
    """The Python code block of a docs page that starts with ``starts_with``."""
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if b.startswith(starts_with)]
    return block


def test_hook_jobstore_register_strategies(extra_plugin):
    """The ``split`` strategy of docs/plugins.md, registered as its plugin, works as shown there."""
    module = types.ModuleType("jobstore_split")
    exec(compile(docs_block("plugins.md", '"""The ``split`` strategy'), "jobstore_split.py", "exec"),
         module.__dict__)
    extra_plugin(module, "jobstore-split")
    row = {r.name: r for r in jobstore.strategies()}["split"]
    assert (row.kind, row.plugin) == ("strategy", "jobstore-split")
    exec(compile(docs_block("plugins.md", "import jobstore\n\nstore = jobstore.open(\"memory://\", \"split\""),
                 "plugins.md", "exec"), {})
    with pytest.raises(jobstore.ConfigError, match="split"):
        jobstore.open("memory://", "split", moves="acme")


class FollowingStrategy(jobstore.Strategy):
    """A third party's strategy that follows the stored phase of a migration between two
    schemas: the old one alone until the phase is ``target-only``, then the new one alone. It
    keeps its schemas under names of its own (not ``source``/``target``): only
    ``migration_schemas`` tells jobstore which migration it follows."""

    name = "following"
    description = "the old schema until the migration's phase is target-only, then the new one"

    def __init__(self, old, new):
        self.old, self.new = old, new
        both = (old, new)
        self._before = Routing((old,), (old,), both)
        self._after = Routing((new,), (new,), both)
        self.phase = None

    @classmethod
    def create(cls, resolve, *, old="legacy", new="workspace"):
        return cls(resolve(old), resolve(new))

    def migration_schemas(self):
        return self.old, self.new

    def use_keys(self, keys):
        self.state_key = keys.migration(self.old.name, self.new.name)

    def state_request(self, now, force=False):
        return Command(("HGETALL", self.state_key)), True  # read before every operation

    def apply_state(self, reply, now):
        self.phase = MigrationState.from_hash(reply or {}).phase

    def routing(self, workspace_id):
        return self._after if self.phase is Phase.TARGET_ONLY else self._before

    def describe(self):
        return {"strategy": self.name, "phase": self.phase.value if self.phase else None}


class PhasesSeen(Events):
    def __init__(self):
        self.seen = []

    def phase(self, migration, phase):
        self.seen.append((migration, phase))


def test_a_third_party_strategy_that_follows_a_migration_gets_its_migration(extra_plugin):
    @hookimpl
    def jobstore_register_strategies(register):
        register(FollowingStrategy)

    extra_plugin(types.SimpleNamespace(jobstore_register_strategies=jobstore_register_strategies),
                 "following-plugin")
    events = PhasesSeen()
    store = jobstore.open("memory://", "following", events=events)
    migration = store.migration()
    assert (migration.source.name, migration.target.name) == ("legacy", "workspace")
    assert migration.name == "legacy:workspace"

    store.enqueue("acme", "a", job_id="j1")
    migration.set_phase("target-only", force=True, reason="a test", wait=False)
    store.enqueue("acme", "b", job_id="j2")
    assert store.client.exists("ai:jobs:j1", "ai:job:acme:j2") == 2
    assert not store.client.exists("ai:jobs:j2")
    # The phase the strategy read is reported under the migration's name, not the strategy's.
    assert ("legacy:workspace", "target-only") in events.seen
    assert {name for name, _ in events.seen} == {"legacy:workspace"}


def test_a_strategy_that_follows_no_migration_has_none():
    store = jobstore.open("memory://", "workspace")
    assert store.strategy.migration_schemas() is None
    with pytest.raises(jobstore.ConfigError, match="strategy 'workspace' has no migration"):
        store.migration()
