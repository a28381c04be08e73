"""A plugin that fails is named: hooks that raise, modules that do not import, hooks pluggy
refuses and hooks that return instead of calling ``register`` all give a PluginError naming
the plugin (its distribution and entry point when it came from one); the CLI exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

import jobstore
from jobstore import PluginError, plugins


@pytest.fixture(autouse=True)
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def register_in_process(name: str, **hooks) -> None:
    plugins.get_plugin_manager().register(types.SimpleNamespace(**hooks), name=name)


class ReturnedSchema(jobstore.KeySchema):
    name = "returned"
    key_format = "${prefix}:returned:${workspace_id}:${job_id}"


def test_a_hook_that_raises_is_named():
    @jobstore.hookimpl
    def jobstore_register_schemas(register):
        raise KeyError("boom")

    register_in_process("team-plugin", jobstore_register_schemas=jobstore_register_schemas)
    with pytest.raises(PluginError, match="team-plugin.*jobstore_register_schemas.*KeyError"):
        jobstore.strategies()


def test_a_hook_that_returns_its_classes_is_taken_at_its_word():
    @jobstore.hookimpl
    def jobstore_register_schemas(register):
        return [ReturnedSchema]

    register_in_process("returning", jobstore_register_schemas=jobstore_register_schemas)
    rows = {row.name: row for row in jobstore.strategies()}
    assert rows["returned"].plugin == "returning"
    assert jobstore.open("memory://", "returned").enqueue("ws", "a").job_id


def test_a_hook_that_returns_something_else_is_refused():
    @jobstore.hookimpl
    def jobstore_register_schemas(register):
        return "returned"

    register_in_process("odd", jobstore_register_schemas=jobstore_register_schemas)
    with pytest.raises(PluginError, match="odd.*returned 'returned'.*call register"):
        jobstore.strategies()


def installed_distribution(tmp_path, module_source: str | None) -> str:
    """A distribution ``brokenplug`` with a ``jobstore`` entry point, found on ``tmp_path``."""
    info = tmp_path / "brokenplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[jobstore]\nbroken = brokenplug_module\n")
    if module_source is not None:
        (tmp_path / "brokenplug_module.py").write_text(module_source)
    return str(tmp_path)


@pytest.mark.parametrize("module_source, what", [
    (None, "failed to import: ModuleNotFoundError"),
    ("raise RuntimeError('half-installed')\n", "failed to import: RuntimeError: half-installed"),
    ("import jobstore\n@jobstore.hookimpl\ndef jobstore_register_schemaz(register):\n    pass\n",
     "is invalid"),
])
def test_an_entry_point_that_fails_names_its_distribution(tmp_path, monkeypatch, module_source, what):
    monkeypatch.syspath_prepend(installed_distribution(tmp_path, module_source))
    sys.modules.pop("brokenplug_module", None)
    with pytest.raises(PluginError) as caught:
        jobstore.strategies()
    message = str(caught.value)
    assert "'brokenplug'" in message and "entry point 'broken'" in message and what in message
    # The way around it, as the docs say: leave it out.
    monkeypatch.setenv("JOBSTORE_LOAD_PLUGINS", "")
    plugins.reset()
    assert "legacy" in {row.name for row in jobstore.strategies()}


def test_the_cli_exits_2_naming_the_plugin(tmp_path):
    path = installed_distribution(tmp_path, "raise RuntimeError('half-installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([path, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "jobstore.cli", "strategies"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "brokenplug" in out.stderr and "Traceback" not in out.stderr
