"""The benchmarks of docs/performance.md still run (tiny sizes): a refactor that breaks one
of their variants, or the numbers they print, fails here instead of in the next performance
session. They measure nothing here; speed is never asserted in tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need_redis_server

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script: str, *options: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    need_redis_server()
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *options],
                          capture_output=True, text=True, timeout=240,
                          env=None if env is None else {**os.environ, **env})
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{proc.stderr[-3000:]}"
    return proc


def test_bench_rows_give_a_ratio_each():
    rows = ["enqueue", "get", "enqueue-many", "backfill"]
    proc = run("bench.py", "--quick", "--repeats", "1", "--jobs", "100", "--pass-jobs", "500",
               "--no-hiredis", "--rows", ",".join(rows), "--json")
    report = json.loads(proc.stdout)
    by_row = {entry["row"]: entry for entry in report["rows"]}
    assert set(by_row) == set(rows), sorted(by_row)
    for row, entry in by_row.items():
        assert not entry["errors"] and not entry["skipped"], (row, entry)
        assert entry["ratios"] and all(r > 0 for r in entry["ratios"]), (row, entry)
        assert entry["met"] in ("yes", "median", "no"), (row, entry)


def test_breakdown_splits_every_variant():
    proc = run("breakdown.py", "--jobs", "100", "--repeats", "1", "--no-hiredis")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    labels = {line.split(" | ")[0].lstrip("| ") for line in lines if not line.startswith("|---")}
    assert labels >= {"PING (the round-trip floor)", "legacy enqueue vs MULTI HSET+LPUSH",
                      "legacy get vs HGETALL", "enqueue_many per job vs pipelined",
                      "worker: finish vs dequeue + update_status, per job",
                      "backfill per record vs SCAN + Lua copy per 1,000"}, proc.stdout
    for line in lines:
        if line.startswith("|---"):
            continue
        wall, redis_cpu, client_cpu, waiting = (
            float(x) for x in re.findall(r"\| ([0-9.]+) ", line + " ")[-4:])
        assert wall > 0 and redis_cpu > 0 and client_cpu > 0 and waiting >= 0, line
        # The parts never add up to more than the wall time they split (waiting is the rest).
        assert redis_cpu + client_cpu <= wall * 1.5 + 5, line


def test_peers_runs_jobstore_and_skips_a_missing_peer(tmp_path):
    # rq made unimportable (a package of that name that refuses to import, ahead of the real
    # one): the benchmark must skip it with the reason, not fail, and still run jobstore.
    (tmp_path / "rq").mkdir()
    (tmp_path / "rq" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    n = 30
    proc = run("peers.py", "--n", str(n), "--repeats", "1",
               "--peers", "jobstore,jobstore-finish,jobstore-aio,raw,rq", "--json",
               env={"PYTHONPATH": str(tmp_path)})
    report = json.loads(proc.stdout)
    rows = {(row["peer"], row["phase"]): row for row in report["rows"]}
    phases = ["enqueue", "enqueue-concurrent", "worker-1", "worker-8"]
    for phase in phases:
        row = rows[("jobstore", phase)]
        assert row["jobs_per_s"] > 0 and row["ratio_to_jobstore"] == 1.0, row
        assert row["redis_cpu_us_per_job"] > 0, row
        assert [s["done"] for s in row["samples"]] == [n], row
    assert rows[("raw", "enqueue")]["jobs_per_s"] > 0
    # Every jobstore enqueue is one script call, and the floor's one MULTI.
    assert rows[("jobstore", "enqueue")]["commands_per_job"]["evalsha"] == 1.0
    assert rows[("raw", "enqueue")]["commands_per_job"]["multi"] == 1.0
    # A worker's take + finish: at least one script call per job, and the server's time.
    assert rows[("jobstore", "worker-1")]["commands_per_job"]["evalsha"] >= 1.0
    skipped = {(s["peer"], s["phase"]): s["reason"] for s in report["skipped"]}
    assert {phase: skipped.get(("rq", phase)) for phase in phases} == {
        phase: "rq is not installed (pip install rq)" for phase in phases}
    # finish() and jobstore.aio run when this jobstore has them, and are skipped otherwise.
    for peer in ("jobstore-finish", "jobstore-aio"):
        ran = {phase for (p, phase) in rows if p == peer}
        assert ran | {phase for (p, phase) in skipped if p == peer} >= {"worker-1", "worker-8"}
    assert not report["errors"], report["errors"]
    assert float(report["cost_ratios"]["jobstore enqueue / raw MULTI HSET+LPUSH"].rstrip("×")) > 0
    assert "| jobstore (sync) | " in proc.stderr and "skipped RQ" in proc.stderr


def test_retention_memory_compares_the_formula_with_a_run():
    proc = run("retention_memory.py", "--rate", "100", "--ttl", "1", "--seconds", "3",
               "--tolerance", "100", "--json")
    report = json.loads(proc.stdout)
    assert report["bytes_finished"] > 0 and report["bytes_index"] > 0, report
    assert report["predicted"] > 0 and report["measured"] > 0, report


def _cost_rows(stdout: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in stdout.splitlines() if line.startswith("| ")
            and not line.startswith(("| part", "|---"))
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def test_script_cost_reports_each_part_and_its_commands():
    proc = run("script_cost.py", "--n", "20", "--rounds", "1")
    rows = _cost_rows(proc.stdout)
    assert set(rows) == {"jobstore enqueue", "raw MULTI HSET+LPUSH",
                         "jobstore dequeue + update_status", "jobstore finish",
                         "jobstore.aio enqueue"}, proc.stdout
    for part, cells in rows.items():
        assert all(float(c.replace(",", "")) > 0 for c in cells[:2]), (part, cells)
    # One script call per enqueue and per finish; the floor's time is its EXEC's.
    assert "- jobstore enqueue: " in proc.stdout and "evalsha 1.00" in proc.stdout
    assert "exec 1.00" in proc.stdout


def test_script_cost_runs_the_bare_scripts_of_jobstores_commands():
    """The floor of any script: the commands jobstore's ENQUEUE and FINISH run, alone; each
    processes every job (the bare finish claims the next until the queue is empty)."""
    proc = run("script_cost.py", "--n", "20", "--rounds", "1", "--parts",
               "bare-enqueue,bare-finish")
    rows = _cost_rows(proc.stdout)
    assert set(rows) == {"the commands alone: enqueue", "the commands alone: finish"}, proc.stdout
    assert "- the commands alone: enqueue: " in proc.stdout
    enqueue, finish = (line for line in proc.stdout.splitlines()
                       if line.startswith("- the commands alone"))
    for command in ("exists 1.00", "hset 1.00", "zadd 1.00", "lpush 1.00", "evalsha 1.00"):
        assert command in enqueue, enqueue
    # (the last call finds the queue empty: a little under one claim per job)
    per_job = {name: float(x) for name, x in re.findall(r"(\w+) (\d+\.\d+) \(", finish)}
    assert per_job["evalsha"] == 1.0, finish
    for command, times in {"hgetall": 2, "hset": 2, "rpop": 1, "zadd": 1, "set": 1}.items():
        assert times - 0.1 <= per_job[command] <= times, finish


def test_script_cost_counts_the_servers_instructions_under_callgrind():
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        pytest.skip("valgrind is not installed")
    proc = run("script_cost.py", "--n", "5", "--rounds", "1", "--parts", "enqueue",
               "--instructions")
    (cells,) = _cost_rows(proc.stdout).values()
    assert int(cells[-1].replace(",", "")) > 1000, proc.stdout
