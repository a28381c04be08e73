"""A user's code type-checks against the installed package under ``mypy --strict``.

The package is built and installed as a user gets it (``pip install``, into a fresh environment
beside this one's dependencies), and mypy checks, from a directory outside the checkout, a small
script that uses the public API the way a service does: it finds jobstore only as an installed
package, through its ``py.typed``. A second script with mistakes in it must fail, so that a
package mypy reads as ``Any`` cannot pass unnoticed.

mypy is in the ``testing`` extra. Without it these tests skip, except under ``CI=true``, where
they fail: CI must run them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

USER_SCRIPT = '''
from __future__ import annotations

import jobstore
from jobstore import (Job, JobStatus, JobStore, JobStoreError, KeySchema, LeaseLost, Migration,
                      StoreUnavailable)


class TenantSchema(KeySchema):
    """A schema of the service's own (registered from a plugin)."""

    name = "tenant"
    description = "records under <prefix>:tenant:<workspace_id>:<job_id>"
    key_format = "${prefix}:tenant:${workspace_id}:${job_id}"


def produce(store: JobStore) -> Job:
    job = store.enqueue("acme", "summarise", {"doc": 42})
    found: Job | None = store.get(job.job_id, workspace_id="acme")
    assert found is not None and found.status is JobStatus.PENDING
    try:
        store.enqueue_many([("acme", "summarise"), ("acme", "translate", {"to": "fr"}, "j2")])
    except StoreUnavailable as exc:
        retry = [(j.workspace_id, j.action, j.params, j.job_id) for j in exc.attempted]
        store.enqueue_many(retry)
    return job


def work(store: JobStore) -> int:
    claimed = store.dequeue(timeout=5, lease=60)
    if claimed is None:
        return 0
    store.extend(claimed, 30.0)
    try:
        done = store.update_status(claimed.job_id, "completed", workspace_id=claimed.workspace_id,
                                   result={"words": 120}, claim=claimed.claim)
    except LeaseLost as lost:
        print(f"{lost.job_id}: taken over by attempt {lost.holder_attempt}")
        return 0
    reasons = [letter.reason for letter in store.dead_letters(10)]
    recent: list[Job] = store.list("acme", status=JobStatus.COMPLETED, limit=10)
    return done.attempts + len(reasons) + len(recent)


def migrate(store: JobStore) -> bool:
    migration: Migration = store.migration()
    state = migration.set_phase("dual-write", reason="the schema move")
    backfilled = migration.backfill(batch=500, rate=1000.0, progress=None)
    report = migration.verify(sample=100)
    problems: int = report.problems
    return backfilled.finished and report.clean and not problems and state.phase.writes_both


def main() -> None:
    schema = TenantSchema("svc")
    key: str = schema.job_key("acme", "j1")
    parsed: tuple[str | None, str] | None = schema.parse_key(key)
    print(parsed, schema.scan_pattern())
    try:
        with jobstore.open("redis://localhost:6379/0", strategy="dual", prefix="svc") as store:
            produce(store)
            print(work(store), migrate(store))
    except JobStoreError as exc:
        print(f"jobstore: {exc}")
    other = jobstore.open_migration("redis://localhost:6379/0", source="legacy",
                                    target="workspace")
    print(other.status()["phase"], [entry["event"] for entry in other.log(5)])


if __name__ == "__main__":
    main()
'''

# Each line with a mistake a type checker must find in it, and the error code it must give.
MISTAKES = '''
import jobstore

store = jobstore.open("memory://")
job = store.get("j1", workspace_id="acme")
attempts: int = job.attempts  # MISTAKE union-attr: job may be None
store.update_status("j1", "completed")  # MISTAKE call-arg: workspace_id is required
count: str = len(store.dead_letters())  # MISTAKE assignment: an int
store.extend("j1")  # MISTAKE arg-type: a Job, not its id
'''


def need_mypy() -> None:
    if importlib.util.find_spec("mypy") is None:
        message = ("mypy is not installed (it comes with the testing extra: "
                   "pip install -e '.[testing]')")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the type checks may not skip)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python whose site-packages holds jobstore as ``pip install`` puts it there, and (through
    a .pth file) this environment's site-packages for its dependencies' types. Nothing of the
    checkout is on its path."""
    need_mypy()
    tmp = tmp_path_factory.mktemp("typing")
    source = tmp / "source"  # pip builds in the source tree: a copy keeps the checkout clean
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "_jobstore_pytestplugin.py"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "jobstore", source / "jobstore",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = python_says(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                           purelib, str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (Path(purelib) / "jobstore" / "py.typed").is_file(), "the wheel must ship py.typed"
    ours = json.loads(python_says(Path(sys.executable),
                                  "import json, site; print(json.dumps(site.getsitepackages()))"))
    (Path(purelib) / "_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


def python_says(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def mypy_strict(python: Path, script: str, where: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on ``script``, run from ``where`` with ``python``'s packages."""
    (where / "mypy.ini").write_text("[mypy]\n")  # no configuration of the checkout's
    (where / "user.py").write_text(textwrap.dedent(script))
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini",
         "--cache-dir", str(where / ".mypy_cache"), "--python-executable", str(python), "user.py"],
        capture_output=True, text=True, timeout=600, cwd=where, env=env)


def test_a_users_script_passes_mypy_strict_against_the_installed_package(installed, tmp_path):
    done = mypy_strict(installed, USER_SCRIPT, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout


def test_mypy_finds_a_users_mistakes_in_jobstore_calls(installed, tmp_path):
    done = mypy_strict(installed, MISTAKES, tmp_path)
    lines = textwrap.dedent(MISTAKES).splitlines()
    wanted = {(n, line.split("# MISTAKE ")[1].split(":")[0])
              for n, line in enumerate(lines, start=1) if "# MISTAKE " in line}
    errors = [line for line in done.stdout.splitlines()
              if line.startswith("user.py:") and ": error:" in line]
    found = {(int(line.split(":")[1]), line.rsplit("[", 1)[1].rstrip("]")) for line in errors}
    assert done.returncode == 1, done.stdout + done.stderr
    assert found == wanted, done.stdout
