"""The command line behaves as an operator and a script expect.

Destructive commands ask first (``--yes`` for scripts), exit codes are in ``--help`` and errors
come through click's exception path as one ``Error: ...`` line, a Redis failing in the middle of a
migrate command is exit 3 without a traceback, and what the commands print says what its numbers
mean (progress never past 100%).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import click
import pytest
from tests.support.cli import cli_runner

import jobstore
from jobstore import cli
from jobstore.drivers.sync import SyncDriver
from jobstore.migration import Migration
from tests.conftest import keys, need_redis_server
from jobstore.testing import FakeClock
from tests.support.servers import RedisServer, free_port

pytestmark = pytest.mark.redis


def run(*args, url=None, stdin=None, timeout=120):
    """The CLI as a user runs it: a subprocess (stdin not a terminal unless given one)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTORE_")}
    if url:
        environ["JOBSTORE_REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "jobstore.cli", *args], capture_output=stdin is None,
                          stdin=stdin if stdin is not None else subprocess.DEVNULL, text=True,
                          env=environ, timeout=timeout)


def invoke(*args, **kwargs):
    return cli_runner().invoke(cli.main, list(args), **kwargs)


def migration(url) -> Migration:
    """A migration on ``url`` whose clock runs in the past and jumps when it waits: switches
    made here take no time, and every time they record is over when the CLI runs."""
    clock = FakeClock(tick=0)
    clock.now -= 600
    return Migration(jobstore.open(url, "legacy").client, url=url, clock=clock, wait=clock.wait)


def in_target_only(url, jobs: int = 30) -> Migration:
    """``jobs`` legacy jobs, backfilled, verified, and the migration in target-only."""
    jobstore.open(url, "legacy").enqueue_many([(f"ws{i % 3}", "a") for i in range(jobs)])
    m = migration(url)
    m.set_phase("dual-write")
    m.backfill()
    assert m.verify().clean
    m.set_phase("read-target")
    m.set_phase("target-only")
    return m


def legacy_keys(url) -> list[str]:
    return keys(jobstore.open(url, "legacy").client, "ai:jobs:*")


# -- 1. destructive commands ask first -----------------------------------------------------------


def test_cleanup_without_a_terminal_and_without_yes_changes_nothing_and_exits_5(redis_url):
    in_target_only(redis_url)
    out = run("migrate", "cleanup", url=redis_url)
    assert out.returncode == 5, out.stderr
    assert "--yes" in out.stderr and "Nothing was changed" in out.stderr
    assert out.stderr.startswith("Error: ") and "Traceback" not in out.stderr
    assert len(legacy_keys(redis_url)) == 30


@pytest.mark.parametrize("flag", ["--yes", "-y"])
def test_cleanup_with_yes_deletes(redis_url, flag):
    in_target_only(redis_url)
    out = run("migrate", "cleanup", flag, url=redis_url)
    assert out.returncode == 0, out.stderr
    assert legacy_keys(redis_url) == []


def test_a_dry_run_needs_no_confirmation(redis_url):
    in_target_only(redis_url)
    out = run("migrate", "cleanup", "--dry-run", "--json", url=redis_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"] == {"deleted": 30}
    assert len(legacy_keys(redis_url)) == 30


def test_cleanup_in_the_wrong_phase_is_refused_before_asking(redis_url):
    migration(redis_url).set_phase("dual-write")
    out = run("migrate", "cleanup", url=redis_url)
    assert out.returncode == 4 and "target-only" in out.stderr and "--yes" not in out.stderr


def on_a_terminal(args, url, answer: str):
    """Run the CLI with a pseudo-terminal as stdin, typing ``answer``; (returncode, stderr)."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())
        environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTORE_")}
        proc = subprocess.run([sys.executable, "-m", "jobstore.cli", *args, "--url", url],
                              stdin=slave, capture_output=True, text=True, env=environ,
                              timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    return proc.returncode, proc.stderr, proc.stdout


@pytest.mark.parametrize("answer, code, left", [("n\n", 5, 30), ("\n", 5, 30), ("y\n", 0, 0)])
def test_cleanup_on_a_terminal_asks(redis_url, answer, code, left):
    in_target_only(redis_url)
    returncode, stderr, stdout = on_a_terminal(["migrate", "cleanup", "--json"], redis_url, answer)
    assert returncode == code, stderr
    assert "deletes every legacy record" in stderr and "Go on? [y/N]" in stderr
    assert len(legacy_keys(redis_url)) == left
    if code == 0:
        assert json.loads(stdout)["counts"] == {"deleted": 30}  # the prompt is not in the JSON


def test_forcing_an_unsafe_switch_asks_and_takes_yes(redis_url):
    in_target_only(redis_url)
    out = run("migrate", "phase", "dual-write", "--force", url=redis_url)
    assert out.returncode == 5 and "reverse sync" in out.stderr and "--yes" in out.stderr
    assert migration(redis_url).state().phase.value == "target-only"

    returncode, stderr, _ = on_a_terminal(["migrate", "phase", "read-target", "--force"],
                                          redis_url, "n\n")
    assert returncode == 5 and "refused because" in stderr
    assert migration(redis_url).state().phase.value == "target-only"

    out = run("migrate", "phase", "read-target", "--force", "--yes", "--reason", "drill", url=redis_url)
    assert out.returncode == 0, out.stderr
    assert migration(redis_url).log(1)[0]["forced"] is True


def test_force_on_a_safe_switch_needs_no_confirmation_and_forces_nothing(redis_url):
    out = run("migrate", "phase", "off", "--force", url=redis_url)
    assert out.returncode == 0, out.stderr
    assert migration(redis_url).log(1)[0]["forced"] is False


# -- 2. exit codes in --help; errors through click ------------------------------------------------


def test_top_level_help_lists_every_exit_code():
    out = invoke("--help")
    assert out.exit_code == 0
    epilog = out.output.split("Exit codes:", 1)[1]
    listed = [int(line.split()[0]) for line in epilog.strip().splitlines() if line.split()[0].isdigit()]
    assert listed == [0, 1, 2, 3, 4, 5, 130]
    assert max(len(line) for line in out.output.splitlines()) <= 80
    assert "Redis unavailable" in epilog and "not confirmed" in epilog


@pytest.mark.parametrize("command, codes", [
    (["migrate", "cleanup"], [0, 2, 3, 4, 5, 130]),
    (["migrate", "phase"], [0, 2, 3, 4, 5]),
    (["migrate", "verify"], [0, 1, 2, 3, 130]),
    (["migrate", "backfill"], [0, 2, 3, 4, 130]),
    (["migrate", "status"], [0, 2, 3]),
])
def test_commands_list_their_exit_codes(command, codes):
    out = invoke(*command, "--help")
    epilog = out.output.split("Exit codes:", 1)[1]
    listed = [int(line.split()[0]) for line in epilog.strip().splitlines() if line.split()[0].isdigit()]
    assert listed == codes


@pytest.mark.parametrize("args, code, text", [
    (["migrate", "status", "--url", "redis://127.0.0.1:1/0"], 3, "unavailable"),
    (["migrate", "status"], 2, "no Redis URL"),
    (["migrate", "cleanup", "--url", "memory://conventions", "--yes"], 4, "refused: cleanup runs only"),
])
def test_errors_are_click_exceptions_with_the_exit_code(monkeypatch, args, code, text):
    """Not a hand-written echo and sys.exit: a ClickException, which click prints as
    ``Error: ...`` (standalone) or hands to a caller that embeds the CLI."""
    monkeypatch.delenv("JOBSTORE_REDIS_URL", raising=False)
    with pytest.raises(click.ClickException) as raised:
        cli.main.main(args, standalone_mode=False)
    assert raised.value.exit_code == code and text in raised.value.format_message()
    out = invoke(*args)
    assert out.exit_code == code and out.stderr.startswith("Error: ") and text in out.stderr


# -- 3. Redis failing under a migrate command: exit 3, never a traceback -------------------------

MIGRATE_COMMANDS = [
    ["migrate", "status"], ["migrate", "status", "--json"], ["migrate", "phase", "dual-write"],
    ["migrate", "rollout", "--percent", "50"], ["migrate", "backfill"], ["migrate", "verify"],
    ["migrate", "reverse-sync"], ["migrate", "cleanup", "--yes"], ["dead-letters"],
]


@pytest.mark.parametrize("args", MIGRATE_COMMANDS, ids=" ".join)
def test_nothing_listening_is_exit_3_without_a_traceback(args):
    url = f"redis://127.0.0.1:{free_port()}/0"
    out = run(*args, url=url)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stderr.startswith("Error: ") and "unavailable" in out.stderr


@pytest.fixture
def doomed_server():
    """A private redis-server that a test may kill."""
    need_redis_server()
    server = RedisServer().start()
    yield server
    server.stop()


def kill_before(monkeypatch, server, target, name):
    """Kill ``server`` just before ``target.name`` runs (the command is then mid-way)."""
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        server.kill()
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


def kill_after(monkeypatch, server, target, name):
    """Kill ``server`` just after ``target.name`` returned."""
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        server.kill()
        return result

    monkeypatch.setattr(target, name, wrapper)


def kill_at_send(monkeypatch, server, n):
    """Kill ``server`` just before the driver's ``n``-th round trip (1: the first): status is one
    operation, its reads one round trip each (the server check, the phase, the checkpoints, the
    log), so a kill there lands between two of them."""
    original = SyncDriver._send
    sent = [0]

    def wrapper(self, *args, **kwargs):
        sent[0] += 1
        if sent[0] == n:
            server.kill()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncDriver, "_send", wrapper)


@pytest.mark.parametrize("args, where", [
    # status: the phase is read, then the checkpoints and the log
    (["migrate", "status"], ("send", 3, "after the phase")),
    (["migrate", "status", "--json"], ("send", 4, "before the log")),
    # phase: the state is read, then the switch is written
    (["migrate", "phase", "read-target"], ("before", Migration, "_store_state")),
    # verify: the records are compared, then the clean result is recorded
    (["migrate", "verify"], ("before", Migration, "_store_state")),
    # backfill: the checkpoint written after a batch
    (["migrate", "backfill", "--batch", "5"], ("after", cli.ProgressPrinter, "__call__")),
    # cleanup: after the confirmation, the pass itself
    (["migrate", "cleanup", "--yes"], ("after", Migration, "state")),
], ids=lambda v: " ".join(v) if isinstance(v, list) else f"{v[0]} {v[2]}")
def test_redis_dying_mid_command_is_exit_3_without_a_traceback(doomed_server, monkeypatch, args,
                                                               where):
    url = doomed_server.url
    jobstore.open(url, "legacy").enqueue_many([("ws1", "a")] * 20)
    m = migration(url)
    m.set_phase("dual-write")
    if args[1] in ("verify", "cleanup"):
        m.backfill()
    if args[1] == "cleanup":
        m.verify()
        m.set_phase("read-target")
        m.set_phase("target-only")
    when, target, name = where
    if when == "send":
        kill_at_send(monkeypatch, doomed_server, target)
    else:
        (kill_before if when == "before" else kill_after)(monkeypatch, doomed_server, target, name)
    out = invoke(*args, "--url", url)
    assert not doomed_server.running, "the server was meant to die mid-command"
    assert out.exit_code == 3, (out.output, out.exception)
    assert isinstance(out.exception, SystemExit)  # reported, not an exception escaping
    last = out.stderr.strip().splitlines()[-1]  # after any progress lines
    assert last.startswith("Error: ") and "unavailable" in last
    assert "Traceback" not in out.output


def test_a_dead_redis_under_the_migration_state_reads_is_store_unavailable(doomed_server):
    """In Python too: Migration.status() and log() raise StoreUnavailable, not redis errors."""
    m = migration(doomed_server.url)
    m.set_phase("dual-write")
    doomed_server.kill()
    for call in (m.status, m.log, m.state):
        with pytest.raises(jobstore.StoreUnavailable):
            call()


# -- 5. output an operator can read --------------------------------------------------------------


def test_progress_never_passes_100_percent_when_the_keyspace_grows(capsys):
    """Traffic adds records while a pass runs: 5199 scanned of 5176 counted at the start."""
    plain = cli.ProgressPrinter(terminal=False, every=0)
    plain("backfill", 2500, 5176, {"copied": 2500})
    plain("backfill", 5199, 5176, {"copied": 5199})
    err = capsys.readouterr().err
    assert "2500 of 5176 records scanned (48%); copied 2500" in err
    assert "5199 of 5199 records scanned (100%)" in err and "5176" not in err.splitlines()[-1]


def test_a_total_that_keeps_growing_shows_100_percent_once(capsys):
    """A cleanup whose total grew with every batch printed a '100%' line per batch."""
    plain = cli.ProgressPrinter(terminal=False, every=3600)
    plain("cleanup", 100, 200, {})
    for done in range(200, 300, 10):
        plain("cleanup", done, done, {"deleted": done})
    err = capsys.readouterr().err
    assert err.count("100%") == 1 and len(err.splitlines()) == 2


def test_the_progress_bar_grows_its_total_with_the_keyspace(capsys):
    pytest.importorskip("tqdm")  # the cli extra; without it the plain lines above are shown
    bar = cli.ProgressPrinter(terminal=True)
    bar("backfill", 2500, 5176, {"copied": 2500})
    bar("backfill", 5199, 5176, {"copied": 5199})
    assert bar.bar.n == 5199 and bar.bar.total >= bar.bar.n
    bar.close()
    assert "5199/5176" not in capsys.readouterr().err


def test_verify_progress_says_what_it_counts(capsys):
    printer = cli.ProgressPrinter(terminal=False, every=0)
    printer("verify source", 138, None, {})
    printer("verify target", 40, None, {})
    printer("verify restarted", 0, None, {"rescans": 1})
    err = capsys.readouterr().err
    assert "verify: 138 source records checked so far" in err
    assert "verify: 40 target records checked so far" in err
    assert "{}" not in err and "starting again from the beginning" in err


def test_a_pass_prints_what_each_count_means(redis_url):
    jobstore.open(redis_url, "legacy").enqueue_many([("ws1", "a")] * 12)
    migration(redis_url).set_phase("dual-write")
    out = run("migrate", "backfill", "--batch", "5", url=redis_url)
    assert out.returncode == 0, out.stderr
    assert "backfill of migration legacy:workspace (prefix ai): 12 source records scanned" in out.stdout
    assert "copied 12  source records the target lacked, copied to it" in out.stdout
    assert "{" not in out.stderr  # no bare dicts in the progress lines
    progress = [line for line in out.stderr.splitlines() if line.startswith("backfill:")]
    assert progress and all("%" in line for line in progress)


def test_verify_after_cleanup_says_orphans_are_expected(redis_url):
    """It printed 'orphaned 30' and then 'clean' without saying why that is clean."""
    m = in_target_only(redis_url)
    m.cleanup()
    out = run("migrate", "verify", url=redis_url)
    assert out.returncode == 0, out.stderr
    orphaned = next(line for line in out.stdout.splitlines() if line.strip().startswith("orphaned"))
    assert "orphaned 30" in orphaned and "target records with no source record" in orphaned
    assert "expected in target-only, not a problem" in orphaned
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("clean") and "expected in target-only" in last
    assert "0 legacy (source) and 30 workspace (target) records checked" in out.stdout


def test_verify_names_its_problems(redis_url):
    jobstore.open(redis_url, "legacy").enqueue_many([("ws1", "a")] * 7)
    migration(redis_url).set_phase("dual-write")
    out = run("migrate", "verify", url=redis_url)
    assert out.returncode == 1
    missing = next(line for line in out.stdout.splitlines() if line.strip().startswith("missing"))
    assert "missing 7" in missing and "a problem" in missing
    assert out.stdout.strip().splitlines()[-1] == "not clean: 7 problems"


def test_status_names_the_migration_and_explains_checkpoints(redis_url):
    jobstore.open(redis_url, "legacy").enqueue_many([("ws1", "a")] * 4)
    m = migration(redis_url)
    m.set_phase("dual-write", reason="start")
    m.backfill()
    out = run("migrate", "status", url=redis_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("migration legacy:workspace (prefix ai): phase dual-write")
    assert "backfill: finished; 4 records scanned; copied 4" in out.stdout
    assert "phase read-target -> dual-write (start)" in out.stdout
    assert "{" not in out.stdout


def test_an_unknown_schema_is_named_a_schema(redis_url):
    out = run("migrate", "status", "--source", "nope", url=redis_url)
    assert out.returncode == 2
    assert "unknown schema 'nope'" in out.stderr and "legacy" in out.stderr
    assert "strategy" not in out.stderr.split("Error:", 1)[1].split("(")[0]


def test_quiet_hides_progress(redis_url):
    jobstore.open(redis_url, "legacy").enqueue_many([("ws1", "a")] * 5)
    migration(redis_url).set_phase("dual-write")
    out = run("-q", "migrate", "backfill", url=redis_url)
    assert out.returncode == 0 and out.stderr == "" and "copied 5" in out.stdout

