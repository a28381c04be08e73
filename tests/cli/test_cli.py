"""The command line, run as a user runs it: a subprocess, real Redis, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

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


def test_demo_reads_none_of_the_service_s_variables(redis_url):
    # Its prefix is its own ('demo', in use here: refused) whatever the shell names.
    jobstore.open(redis_url, "legacy", prefix="demo").enqueue("ws", "a")
    out = run("demo", "--url", redis_url, env={"JOBSTORE_KEY_PREFIX": "fresh",
                                               "JOBSTORE_DUAL_SOURCE": "no-such-schema"})
    assert out.returncode == 2 and "--prefix" in out.stderr and "no-such-schema" not in out.stderr


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


# -- gates, verify's report, output an operator can script -----------------------------------------------


def typed(value, where="$"):
    """Every leaf of a --json document that is a str must not be JSON, a number or a boolean
    spelled as text (status returned "counts": "{\\"copied\\": 30}" and "finished": "1")."""
    if isinstance(value, dict):
        for key, item in value.items():
            typed(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            typed(item, f"{where}[{n}]")
    elif isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return
        assert isinstance(parsed, str), f"{where} is {value!r}: JSON inside a string"


def test_status_json_is_typed(redis_url):
    legacy = jobstore.open(redis_url, "legacy")
    legacy.enqueue_many([("ws1", "a")] * 12)
    assert run("migrate", "phase", "off", url=redis_url).returncode == 0
    assert run("migrate", "phase", "dual-write", url=redis_url).returncode == 0
    assert run("migrate", "backfill", "--batch", "5", url=redis_url).returncode == 0
    assert run("migrate", "verify", url=redis_url).returncode == 0
    status = json.loads(run("migrate", "status", "--json", url=redis_url).stdout)
    typed(status)
    backfill = status["checkpoints"]["backfill"]
    assert backfill["finished"] is True and backfill["counts"] == {"copied": 12}
    assert backfill["scanned"] == 12 and isinstance(backfill["cursors"], dict)
    assert isinstance(status["verified_clean_at"], float) and status["verified"] is True
    assert status["unplaceable"] == 0 and status["next"]["read-target"] == "allowed"


def test_the_newest_verify_decides_through_the_cli(redis_url):
    """As an operator saw it: verify said 'not clean' (exit 1), then read-target
    and target-only were accepted."""
    legacy = jobstore.open(redis_url, "legacy")
    jobs = legacy.enqueue_many([("ws1", "a")] * 12)
    for step in (["phase", "off"], ["phase", "dual-write"], ["backfill"], ["verify"]):
        assert run("migrate", *step, url=redis_url).returncode == 0
    legacy.client.hset(f"ai:job:ws1:{jobs[0].job_id}", "action", "edited")
    failed = run("migrate", "verify", url=redis_url)
    assert failed.returncode == 1 and "not clean: 1 problem\n" in failed.stdout
    refused = run("migrate", "phase", "read-target", url=redis_url)
    assert refused.returncode == 4 and "newest verify" in refused.stderr
    assert "1 problem (differing 1)" in refused.stderr
    status = run("migrate", "status", url=redis_url).stdout
    assert "last verify that was not clean: finished" in status
    assert "does not count: a verify that was not clean finished after it started" in status
    assert run("migrate", "verify", "--repair", url=redis_url).returncode == 1
    assert run("migrate", "phase", "read-target", url=redis_url).returncode == 4
    assert run("migrate", "verify", url=redis_url).returncode == 0
    assert run("migrate", "phase", "read-target", url=redis_url).returncode == 0


def test_verify_names_unroutable_records_and_set_aside_makes_it_clean(redis_url):
    legacy = jobstore.open(redis_url, "legacy")
    legacy.enqueue_many([("ws1", "a")] * 5)
    legacy.client.hset("ai:jobs:no-ws", mapping={"job_id": "no-ws", "status": "pending"})
    for step in (["phase", "off"], ["phase", "dual-write"], ["backfill"]):
        assert run("migrate", *step, url=redis_url).returncode == 0
    text = run("migrate", "verify", url=redis_url)
    assert text.returncode == 1 and "unroutable: ai:jobs:no-ws (workspace_id)" in text.stdout
    assert "not clean: 1 problem\n" in text.stdout and "set-aside" in text.stdout
    report = json.loads(run("migrate", "verify", "--json", url=redis_url).stdout)
    assert report["problems"] == 1 and report["unroutable"] == 1
    assert [e["key"] for e in report["examples"]["unroutable"]] == ["ai:jobs:no-ws"]
    moved = run("migrate", "set-aside", "--json", url=redis_url)
    assert moved.returncode == 0, moved.stderr
    moved = json.loads(moved.stdout)
    typed(moved)
    assert moved["counts"] == {"set-aside": 1} and moved["moved"][0]["key"] == "ai:jobs:no-ws"
    listed = json.loads(run("migrate", "set-aside", "--list", "--json", url=redis_url).stdout)
    assert [r["record_key"] for r in listed["records"]] == ["ai:jobs:no-ws"]
    assert run("migrate", "verify", url=redis_url).returncode == 0
    aside = moved["moved"][0]["to"]
    assert legacy.client.hgetall(aside) == {"job_id": "no-ws", "status": "pending"}
    bad = run("migrate", "set-aside", "--restore", "ai:jobs:no-ws", url=redis_url)
    assert bad.returncode == 2 and "is not a key set aside" in bad.stderr
    back = run("migrate", "set-aside", "--restore", aside, url=redis_url)
    assert back.returncode == 0 and "put back at ai:jobs:no-ws" in back.stdout
    assert legacy.client.exists("ai:jobs:no-ws")


def test_a_pass_stopped_by_sigterm_prints_its_json_report_and_resumes(redis_url):
    """An interrupted --json pass printed no JSON at all."""
    legacy = jobstore.open(redis_url, "legacy")
    legacy.enqueue_many([("ws1", "a")] * 200)
    assert run("migrate", "phase", "dual-write", url=redis_url).returncode == 0
    environ = {**os.environ, "JOBSTORE_REDIS_URL": redis_url}
    command = [sys.executable, "-m", "jobstore.cli", "migrate", "backfill", "--json",
               "--rate", "40", "--batch", "10"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environ)
    checkpoint = "ai:migration:{legacy:workspace}:backfill"
    try:
        deadline = time.monotonic() + 60
        while not legacy.client.hget(checkpoint, "scanned") and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    report = json.loads(out)
    typed(report)
    assert report["interrupted"] is True and report["finished"] is False
    assert 0 < report["counts"]["copied"] < 200 and "interrupted" in err
    rest = json.loads(run("migrate", "backfill", "--json", url=redis_url).stdout)
    assert rest["resumed"] and rest["finished"] and rest["interrupted"] is False
    assert len(legacy.client.keys("ai:job:*")) == 200


@pytest.mark.parametrize("command", [["backfill"], ["verify"], ["set-aside"]])
def test_ctrl_c_prints_a_json_report_saying_interrupted(command, monkeypatch):
    from tests.support.cli import cli_runner

    from jobstore import cli

    url = f"memory://cli-{uuid.uuid4().hex}"
    legacy = jobstore.open(url, "legacy")
    legacy.enqueue_many([("ws1", "a")] * 30)
    runner = cli_runner()
    assert runner.invoke(cli.main, ["migrate", "phase", "dual-write", "--url", url]).exit_code == 0

    def ctrl_c(self, step, done, total, counts):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.ProgressPrinter, "__call__", ctrl_c)
    result = runner.invoke(cli.main, ["migrate", *command, "--json", "--batch", "5", "--url", url])
    assert result.exit_code == 130, result.output
    report = json.loads(result.stdout)
    typed(report)
    assert report["interrupted"] is True
    if command == ["verify"]:
        assert report["clean"] is False and 0 < report["checked_source"] < 30


def test_status_says_who_reads_what_in_each_phase(redis_url):
    unstored = run("migrate", "status", url=redis_url).stdout
    assert "no phase stored yet; dual stores behave as read-target" in unstored
    assert run("migrate", "phase", "off", url=redis_url).returncode == 0
    off = run("migrate", "status", url=redis_url).stdout
    assert "every workspace reads the source (phase off)" in off
    assert "read the target first" not in off
    assert run("migrate", "rollout", "--percent", "30", url=redis_url).returncode == 0
    assert "read rollout for read-target: 30% of workspaces" in run(
        "migrate", "status", url=redis_url).stdout
