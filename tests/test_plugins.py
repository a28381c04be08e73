"""pluggy: built-ins and third parties registered through the same hooks."""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import types

import pytest

import jobstore
from jobstore import KeySchema, PluginError, hookimpl, hookspecs, plugins


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
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / page).read_text()
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
