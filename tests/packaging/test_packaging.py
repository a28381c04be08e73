"""What `pip install jobstore` brings, and what it says when an extra is missing.

A web worker gets redis-py, pluggy, prometheus-client and click (the ``jobstore`` command's
parser), nothing else: the embedded store behind ``memory://`` (fakeredis with lupa, a compiled
Lua) is the ``embedded`` extra, the CLI's progress bar (tqdm) the ``cli`` extra, the kit's
Hypothesis and pytest the ``testing`` extra (with both others: the suite tests them). Opening
``memory://`` without the embedded store is a one-line ConfigError naming the extra, from Python
and from the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import jobstore
from jobstore import scripts

tomllib = pytest.importorskip("tomllib", reason="tomllib (Python 3.11+) reads pyproject.toml")

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
INSTALL_EMBEDDED = "pip install 'jobstore[embedded]'"


def names(requirements: list[str]) -> set[str]:
    """Distribution names (with their extras) of requirement strings."""
    return {re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", r).group(0).lower() for r in requirements}


def test_a_service_installs_only_what_it_runs():
    assert names(PROJECT["dependencies"]) == {"redis", "pluggy", "prometheus-client", "click"}
    extras = PROJECT["optional-dependencies"]
    assert names(extras["embedded"]) == {"fakeredis[lua]"}
    assert names(extras["cli"]) == {"tqdm"}
    assert names(extras["testing"]) >= {"jobstore[embedded,cli]", "hypothesis", "pytest"}


def test_the_readme_installs_what_each_command_needs():
    readme = (ROOT / "README.md").read_text()
    demo = re.search(r"^python3 -m venv \.venv .*jobstore demo$", readme, re.M)
    assert demo and "'.[embedded]'" in demo.group(0), "the demo command must install the embedded extra"
    test_command = readme.split("<!-- test-command", 1)[1].splitlines()[2]
    assert "'.[testing]'" in test_command or "'.[testing" in test_command
    for extra in ("embedded", "cli", "testing"):
        assert f"jobstore[{extra}]" in readme, f"README.md does not say what jobstore[{extra}] is for"


def test_project_urls_point_at_the_repository():
    urls = PROJECT["urls"]
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    base = urls["Homepage"].rstrip("/")
    for label, url in urls.items():
        assert url.startswith(base), f"{label}: {url} is not under {base}"
        path = re.match(rf"{re.escape(base)}/(?:tree|blob)/main/(.+)$", url)
        if path:
            assert (ROOT / path.group(1)).exists(), f"{label}: {path.group(1)} is not in the repository"


# -- a missing extra -----------------------------------------------------------------------------

BLOCKER = """
import sys

class Missing:
    \"\"\"Makes the named top-level packages uninstalled, as in an environment without them.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Missing())
"""


def run_without(blocked: set[str], code: str) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JOBSTORE_REDIS_URL": ""})


@pytest.mark.parametrize("blocked", [{"fakeredis", "lupa"}, {"lupa"}], ids=["no-fakeredis", "no-lupa"])
def test_memory_without_the_embedded_extra_names_the_extra(blocked):
    done = run_without(blocked, """
        import jobstore
        try:
            jobstore.open("memory://", "legacy")
        except jobstore.ConfigError as exc:
            print(exc)
        """)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "\n" not in message and message.endswith(INSTALL_EMBEDDED), message
    assert sorted(blocked)[0] in message  # says which package is missing


def test_the_cli_without_the_embedded_extra_says_one_line():
    done = run_without({"fakeredis", "lupa"}, """
        import sys
        from jobstore.cli import main
        sys.argv = ["jobstore", "demo"]
        main()
        """)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.lower().startswith("error: ") and done.stderr.strip().endswith(INSTALL_EMBEDDED)


def test_importing_jobstore_imports_no_extra():
    done = run_without(set(), """
        import sys
        import jobstore, jobstore.cli
        print(sorted({m.split(".")[0] for m in sys.modules} & {"fakeredis", "lupa", "tqdm", "hypothesis"}))
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_fresh_venv_with_the_core_dependencies_only(tmp_path):
    """A wheel built from the source (``pip wheel --no-deps .``), installed with the core
    dependencies: the real thing, no simulation."""
    source = tmp_path / "source"  # pip builds in the source tree: a copy keeps the checkout clean
    for name in ("pyproject.toml", "README.md", "LICENSE", "_jobstore_pytestplugin.py"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "jobstore", source / "jobstore",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    built = subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("jobstore-*.whl")
    # The Lua scripts are package data: the wheel holds every file of jobstore/lua.
    lua_files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "jobstore" / "lua").rglob("*.lua"))
    assert lua_files
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(n for n in archive.namelist() if n.endswith(".lua")) == lua_files
    pip = [python, "-m", "pip", "install", "-q"]
    for args in (["--no-deps", str(wheel)], PROJECT["dependencies"]):
        done = subprocess.run(pip + args, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    # ...and the installed (non-editable) copy loads them, rendered as this checkout renders them.
    done = subprocess.run([python, "-c", textwrap.dedent("""
        import json, jobstore.scripts as s
        print(s.__file__)
        print(json.dumps({lua.name: lua.source for lua in s.ALL}))
        """)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, loaded = done.stdout.splitlines()
    assert where.startswith(str(venv)), where
    assert json.loads(loaded) == {lua.name: lua.source for lua in scripts.ALL}
    done = subprocess.run([python, "-c", textwrap.dedent("""
        import importlib.util, jobstore
        print([m for m in ("fakeredis", "lupa", "tqdm", "hypothesis") if importlib.util.find_spec(m)])
        try:
            jobstore.open("memory://")
        except jobstore.ConfigError as exc:
            print(exc)
        """)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[]", f"memory:// needs jobstore's embedded store, an extra (fakeredis is not installed): "
              f"{INSTALL_EMBEDDED}"]
    demo = subprocess.run([str(venv / "bin" / "jobstore"), "demo"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "JOBSTORE_REDIS_URL": ""})
    assert demo.returncode == 2 and demo.stderr.strip().endswith(INSTALL_EMBEDDED), demo.stderr
    assert jobstore.__version__ in subprocess.run(
        [str(venv / "bin" / "jobstore"), "--version"], capture_output=True, text=True, timeout=60,
    ).stdout
