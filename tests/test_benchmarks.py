"""The benchmarks of docs/performance.md still run (tiny sizes): a refactor that breaks one
of their variants, or the numbers they print, fails here instead of in the next performance
session. They measure nothing here; speed is never asserted in tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import need_redis_server

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *options: str) -> subprocess.CompletedProcess[str]:
    need_redis_server()
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *options],
                          capture_output=True, text=True, timeout=240)
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
                      "backfill per record vs SCAN + Lua copy per 1,000"}, proc.stdout
    for line in lines:
        if line.startswith("|---"):
            continue
        wall, redis_cpu, client_cpu, waiting = (
            float(x) for x in re.findall(r"\| ([0-9.]+) ", line + " ")[-4:])
        assert wall > 0 and redis_cpu > 0 and client_cpu > 0 and waiting >= 0, line
        # The parts never add up to more than the wall time they split (waiting is the rest).
        assert redis_cpu + client_cpu <= wall * 1.5 + 5, line
