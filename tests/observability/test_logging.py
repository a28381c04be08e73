"""stdlib logging under ``jobstore.*``: what the library logs at which level, that it
configures nothing itself, and the CLI's ``-v``/``-q``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from tests.support.cli import cli_runner

import jobstore
from jobstore import cli, plugins
from jobstore.migration import Migration
from jobstore.testing import FakeClock


class Crash(BaseException):
    """The operator's process dying in the middle of a pass."""


def fresh_migration(jobs: int = 12):
    """A legacy store with ``jobs`` jobs on an embedded Redis, and its Migration (fake clock)."""
    store = jobstore.open(f"memory://logging-{uuid.uuid4().hex}", "legacy")
    store.enqueue_many([("ws1", "a")] * jobs)
    clock = FakeClock(tick=0)
    return Migration(store.client, clock=clock, wait=clock.wait)


def messages(caplog, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def test_phase_switches_log_at_info_and_forced_ones_at_warning(caplog):
    migration = fresh_migration()
    with caplog.at_level(logging.DEBUG, logger="jobstore"):
        migration.set_phase("dual-write", reason="go")
        migration.set_phase("dual-write")  # no change: nothing to say
        migration.set_phase("target-only", force=True, reason="drill")
    info = messages(caplog, "jobstore.migration", logging.INFO)
    assert "migration legacy:workspace (prefix ai): phase read-target -> dual-write (reason: go)" in info
    assert not [m for m in info if "dual-write -> dual-write" in m]
    (warning,) = messages(caplog, "jobstore.migration", logging.WARNING)
    assert "dual-write -> target-only FORCED although" in warning and "skips phases" in warning
    assert "(reason: drill)" in warning


def test_passes_log_start_resume_and_finish(caplog):
    migration = fresh_migration(30)
    migration.set_phase("dual-write")

    def crash_after_first_batch(step, done, total, counts):
        if done:
            raise Crash()

    with caplog.at_level(logging.INFO, logger="jobstore"):
        with pytest.raises(Crash):
            migration.backfill(batch=5, progress=crash_after_first_batch)
        migration.backfill(batch=5)
    info = messages(caplog, "jobstore.migration", logging.INFO)
    prefix = "migration legacy:workspace (prefix ai): backfill"
    assert f"{prefix} started: 30 legacy records to scan" in info
    resumed = [m for m in info if m.startswith(f"{prefix} resumed from its checkpoint at ")]
    assert resumed and "30 legacy records there now" in resumed[0]
    finished = [m for m in info if m.startswith(f"{prefix} finished: ")]
    assert len(finished) == 1 and "copied" in finished[0]


def test_repairs_log_at_info_and_each_record_at_debug(caplog):
    migration = fresh_migration(4)
    migration.set_phase("dual-write")
    with caplog.at_level(logging.DEBUG, logger="jobstore"):
        report = migration.verify(repair=True)
    assert report.repaired == 4
    info = messages(caplog, "jobstore.migration", logging.INFO)
    assert any("verify repaired 4 of 4 source records" in m and "copied 4" in m for m in info)
    assert any(m.startswith("migration legacy:workspace (prefix ai): verify started") for m in info)
    assert any("verify finished" in m and "repaired 4" in m for m in info)
    debug = messages(caplog, "jobstore.migration", logging.DEBUG)
    assert len([m for m in debug if "repair of ws1 / " in m]) == 4


def test_plugin_loading_logs_at_debug(caplog):
    plugins.reset()
    try:
        with caplog.at_level(logging.DEBUG, logger="jobstore"):
            plugins.strategies()
    finally:
        plugins.reset()
    debug = messages(caplog, "jobstore.plugins", logging.DEBUG)
    assert "built-in plugin jobstore.builtins.legacy loaded" in debug
    assert "jobstore.builtins.legacy registered schema 'legacy'" in debug
    assert "jobstore.builtins.dual registered strategy 'dual'" in debug
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "jobstore.plugins")


def test_the_library_configures_no_logging():
    """Importing and using jobstore adds no handler anywhere (NullHandler included) and sets no
    level: what a service logs is the service's choice."""
    script = textwrap.dedent("""
        import logging, pkgutil, importlib
        import jobstore
        for info in pkgutil.walk_packages(jobstore.__path__, "jobstore."):
            if ".testing" not in info.name:
                importlib.import_module(info.name)
        from jobstore.migration import Migration
        store = jobstore.open("memory://x", "legacy")
        store.enqueue("ws", "a")
        Migration(store.client).status()
        jobstore.strategies()
        loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                   if n == "jobstore" or n.startswith("jobstore.")]
        assert loggers, "jobstore logs nothing?"
        bad = [(l.name, l.handlers, l.level) for l in loggers
               if isinstance(l, logging.Logger) and (l.handlers or l.level)]
        assert not bad, bad
        assert logging.root.handlers == [] and logging.root.level == logging.WARNING
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# -- the CLI -------------------------------------------------------------------------------------


def run(*args, url=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTORE_")}
    if url:
        environ["JOBSTORE_REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "jobstore.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_logs_warnings_by_default_info_with_v_debug_with_vv(redis_url):
    quiet = run("migrate", "phase", "dual-write", url=redis_url)
    assert quiet.returncode == 0 and quiet.stderr == ""

    verbose = run("-v", "migrate", "phase", "off", url=redis_url)
    assert verbose.returncode == 0, verbose.stderr
    assert ("INFO jobstore.migration: migration legacy:workspace (prefix ai): phase dual-write "
            "-> off") in verbose.stderr
    assert "DEBUG" not in verbose.stderr

    debug = run("-vv", "strategies", url=redis_url)
    assert "DEBUG jobstore.plugins: built-in plugin jobstore.builtins.legacy loaded" in debug.stderr


def test_cli_shows_forced_switches_unless_quiet(redis_url):
    run("migrate", "phase", "off", url=redis_url)
    forced = run("migrate", "phase", "read-target", "--force", "--yes", url=redis_url)
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr.startswith("WARNING: migration legacy:workspace (prefix ai): phase off "
                                    "-> read-target FORCED although")
    silenced = run("-q", "migrate", "phase", "off", "--force", "--yes", url=redis_url)
    assert silenced.returncode == 0 and silenced.stderr == ""


def test_cli_logs_a_pass_with_v(redis_url):
    jobstore.open(redis_url, "legacy").enqueue_many([("ws1", "a")] * 3)
    run("migrate", "phase", "dual-write", url=redis_url)
    out = run("-v", "migrate", "backfill", "--json", url=redis_url)
    assert out.returncode == 0, out.stderr
    assert "backfill started: 3 legacy records to scan" in out.stderr
    assert "backfill finished: 3 records scanned" in out.stderr


def test_cli_undoes_its_logging_setup_when_the_command_ends():
    logger = logging.getLogger("jobstore")
    before = (list(logger.handlers), logger.level)
    result = cli_runner().invoke(cli.main, ["-vv", "strategies"])
    assert result.exit_code == 0
    assert (list(logger.handlers), logger.level) == before
