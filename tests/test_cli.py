"""The command line, run as a user runs it: a subprocess, real Redis, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import jobstore


def run(*args, url=None, env=None):
    environ = {**os.environ, **(env or {})}
    environ.pop("JOBSTORE_REDIS_URL", None)
    if url:
        environ["JOBSTORE_REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "jobstore.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


def test_strategies_lists_name_kind_plugin_and_description():
    out = run("strategies")
    assert out.returncode == 0
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()}
    assert rows["legacy"][1:3] == ["schema", "jobstore.builtins.legacy"]
    assert rows["dual"][1] == "strategy"
    as_json = json.loads(run("strategies", "--json").stdout)
    assert {r["name"] for r in as_json} >= {"legacy", "workspace", "dual"}
    assert all(r["description"] and r["plugin"] for r in as_json)


def test_no_url_is_a_usage_error():
    out = run("migrate", "status")
    assert out.returncode == 2 and "JOBSTORE_REDIS_URL" in out.stderr


def test_unreachable_redis_exits_3_without_the_password():
    out = run("migrate", "status", "--url", "redis://admin:hunter2@127.0.0.1:1/0")
    assert out.returncode == 3 and "hunter2" not in out.stderr + out.stdout and "***" in out.stderr


def test_demo_runs_the_whole_journey_on_an_embedded_store():
    out = run("demo", "--jobs", "300")
    assert out.returncode == 0, out.stderr
    assert "0 lost, 0 deleted jobs revived, 0 legacy records left" in out.stdout


def test_demo_refuses_a_prefix_in_use(redis_url):
    jobstore.open(redis_url, "legacy", prefix="demo").enqueue("ws", "a")
    out = run("demo", "--url", redis_url)
    assert out.returncode == 2 and "--prefix" in out.stderr


def test_a_migration_from_the_command_line(redis_url):
    legacy = jobstore.open(redis_url, "legacy")
    legacy.enqueue_many([("ws1", "a")] * 30)
    status = json.loads(run("migrate", "status", "--json", url=redis_url).stdout)
    assert status["phase"] == "read-target" and status["phase_stored"] is False

    assert run("migrate", "phase", "off", url=redis_url).returncode == 0
    refused = run("migrate", "phase", "read-target", url=redis_url)
    assert refused.returncode == 4 and "skips phases" in refused.stderr
    assert run("migrate", "phase", "dual-write", url=redis_url).returncode == 0

    dry = json.loads(run("migrate", "backfill", "--dry-run", "--json", url=redis_url).stdout)
    assert dry["dry_run"] and dry["counts"] == {"copied": 30}
    assert run("migrate", "verify", url=redis_url).returncode == 1  # 30 missing

    plain = run("migrate", "backfill", "--batch", "10", "--keys-per-call", "200", url=redis_url)
    assert plain.returncode == 0 and "copied 30" in plain.stdout
    assert "backfill:" in plain.stderr  # progress lines when not on a terminal

    verify = run("migrate", "verify", "--json", "--batch", "20", "--keys-per-call", "7",
                 url=redis_url)
    assert verify.returncode == 0 and json.loads(verify.stdout)["clean"] is True

    assert run("migrate", "phase", "read-target", url=redis_url).returncode == 0
    rollout = json.loads(run("migrate", "rollout", "--percent", "40", "--deny", "ws9", "--json",
                             url=redis_url).stdout)
    assert rollout == {"percent": 40.0, "allow": [], "deny": ["ws9"]}
    assert run("migrate", "phase", "target-only", url=redis_url).returncode == 4
    run("migrate", "rollout", "--percent", "100", "--deny", "", url=redis_url)
    assert run("migrate", "phase", "target-only", url=redis_url).returncode == 0
    unconfirmed = run("migrate", "cleanup", "--json", url=redis_url)  # no terminal, no --yes
    assert unconfirmed.returncode == 5 and "--yes" in unconfirmed.stderr
    cleanup = json.loads(run("migrate", "cleanup", "--json", "--yes", url=redis_url).stdout)
    assert cleanup["counts"] == {"deleted": 30}
    forced = run("migrate", "phase", "read-target", "--force", "--yes", "--reason", "drill",
                 url=redis_url)
    assert forced.returncode == 0 and "WARNING" in forced.stderr and "FORCED" in forced.stderr
    log = json.loads(run("migrate", "status", "--json", url=redis_url).stdout)["log"]
    assert log[0]["forced"] is True and log[0]["reason"] == "drill"


@pytest.mark.parametrize("command", ["backfill", "cleanup", "reverse-sync", "verify", "status", "phase", "rollout"])
def test_every_migrate_command_takes_the_common_options(command):
    out = run("migrate", command, "--help")
    assert out.returncode == 0
    for option in ("--url", "--prefix", "--source", "--target"):
        assert option in out.stdout


@pytest.mark.parametrize("args", [
    ["migrate", "verify", "--sample", "-5"], ["migrate", "verify", "--sample", "0"],
    ["migrate", "backfill", "--batch", "0"], ["migrate", "backfill", "--rate", "0"],
    ["migrate", "rollout", "--percent", "101"], ["migrate", "verify", "--examples", "-1"],
    ["migrate", "backfill", "--keys-per-call", "0"], ["migrate", "verify", "--keys-per-call", "1001"],
    ["migrate", "cleanup", "--keys-per-call", "x"], ["migrate", "reverse-sync", "--keys-per-call", "-1"],
    ["migrate", "verify", "--batch", "0"],
])
def test_numeric_options_out_of_range_are_usage_errors(args):
    """``verify --sample -5`` checked nothing, printed 'clean' and exited 0."""
    out = run(*args, "--url", "redis://127.0.0.1:1/0")
    assert out.returncode == 2 and "Invalid value" in out.stderr, out.stderr


def test_the_cli_reads_the_services_environment(redis_url):
    """JOBSTORE_KEY_PREFIX=svc jobstore migrate ... acted on the 'ai' migration."""
    env = {"JOBSTORE_KEY_PREFIX": "svc", "JOBSTORE_DUAL_TARGET": "hashtag"}
    out = run("migrate", "phase", "dual-write", url=redis_url, env=env)
    assert out.returncode == 0, out.stderr
    assert "legacy:hashtag (prefix svc)" in out.stdout
    import redis
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hget("svc:migration:{legacy:hashtag}", "phase") == "dual-write"
    assert not client.exists("ai:migration:{legacy:workspace}")
    store = jobstore.JobStore.from_env({"JOBSTORE_REDIS_URL": redis_url, "JOBSTORE_STRATEGY": "dual",
                                        **env})
    assert (store.prefix, store.strategy.target.name) == ("svc", "hashtag")
