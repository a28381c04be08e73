"""Prometheus metrics: what a migration shows in the exposition, bounded
labels, shared and separate registries, prefixes, serving, and the alert rules and dashboard."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import prometheus_client
import pytest
from tests.support.cli import cli_runner
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import jobstore
from jobstore import ConfigError, metrics
from jobstore.cli import main
from jobstore.metrics import PrometheusEvents, metric_prefix, serve
from jobstore.migration import Migration
from tests.support.servers import free_port
from jobstore.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
MIGRATION = "legacy:workspace"


def exposition(registry) -> str:
    return generate_latest(registry).decode()


def families(registry) -> dict:
    """``{family name: family}`` parsed back from the exposition text."""
    return {f.name: f for f in text_string_to_metric_families(exposition(registry))}


def samples(registry) -> dict:
    """``{(sample name, sorted label items): value}`` from the exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(exposition(registry)) for s in f.samples}


def value(found: dict, name: str, **labels):
    return found.get((name, tuple(sorted(labels.items()))))


def label_values(found: dict, label: str) -> set:
    return {dict(labels)[label] for (_, labels) in found if label in dict(labels)}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def url(request):
    """A fresh embedded fakeredis, or the suite's real redis-server (flushed)."""
    if request.param == "memory":
        return f"memory://metrics-{uuid.uuid4().hex}"
    return request.getfixturevalue("redis_url")


def run_journey(url: str, registry) -> dict:
    """Legacy jobs, dual-write with shadow reads (one tampered target), read-target with
    fallbacks, two backfills and a verify: every store and the migration share one
    PrometheusEvents. Returns what happened, for the assertions."""
    events = PrometheusEvents("ai", registry=registry)
    legacy = jobstore.open(url, "legacy", events=events)
    legacy_jobs = [legacy.enqueue(f"ws{i % 2}", "legacy-job", {"i": i}) for i in range(6)]
    clock = FakeClock(tick=0)
    migration = Migration(legacy.client, clock=clock, wait=clock.wait, events=events)

    migration.set_phase("dual-write")
    dual = jobstore.JobStore(legacy.client, "dual", events=events)  # a new store: reads the phase now
    dual_jobs = [dual.enqueue("ws0", "dual-job") for _ in range(4)]
    for job in legacy_jobs[:2]:  # ws0, ws1: not backfilled, no target copy
        assert dual.get(job.job_id, workspace_id=job.workspace_id) is not None
    for job in dual_jobs[1:3]:
        assert dual.get(job.job_id, workspace_id="ws0") is not None
    tampered = dual_jobs[0]
    legacy.client.hset(f"ai:job:ws0:{tampered.job_id}", "action", "tampered")
    assert dual.get(tampered.job_id, workspace_id="ws0").action == "dual-job"  # the source's answer

    migration.set_phase("read-target")
    reader = jobstore.JobStore(legacy.client, "dual", events=events)
    ws1_jobs = [job for job in legacy_jobs if job.workspace_id == "ws1"]
    for job in ws1_jobs:  # only in the source: each read falls back
        assert reader.get(job.job_id, workspace_id="ws1") is not None
    assert reader.get(dual_jobs[3].job_id, workspace_id="ws0") is not None  # in the target

    first = migration.backfill(batch=2)
    events.pass_result(migration.name, first)
    for job in ws1_jobs:  # backfilled now: no more fallbacks
        assert reader.get(job.job_id, workspace_id="ws1") is not None
    second = migration.backfill(batch=3)  # the checkpoint is finished: a new pass over everything
    events.pass_result(migration.name, second)
    report = migration.verify()
    events.verify_result(migration.name, report)
    return {"events": events, "first": first, "second": second, "verify": report,
            "tampered": tampered, "stores": (legacy, dual, reader)}


def test_a_migration_shows_in_the_exposition(url):
    registry = CollectorRegistry()
    happened = run_journey(url, registry)
    text = exposition(registry)
    found = samples(registry)

    # The migrated system's names, exactly.
    assert 'ai_jobs_total{workspace_id="ws0"} 7.0' in text  # 3 legacy + 4 dual enqueues
    assert 'ai_jobs_total{workspace_id="ws1"} 3.0' in text
    assert 'ai_jobs_dual_write_total{result="succeeded",workspace_id="ws0"} 4.0' in text
    assert 'ai_jobs_dual_write_total{result="failed",workspace_id="ws0"} 0.0' in text
    assert label_values({k: v for k, v in found.items() if k[0] == "ai_jobs_dual_write_total"},
                        "workspace_id") == {"ws0"}  # legacy enqueues write one schema
    latency = "ai_job_latency_seconds_count"
    assert value(found, latency, workspace_id="ws0", operation="enqueue", strategy="legacy") == 3
    assert value(found, latency, workspace_id="ws0", operation="enqueue", strategy="dual") == 4
    assert value(found, latency, workspace_id="ws1", operation="get", strategy="dual") == 1 + 6
    assert value(found, "ai_job_latency_seconds_bucket", workspace_id="ws0", operation="enqueue",
                 strategy="dual", le="+Inf") == 4

    ops = "ai_jobs_operations_total"
    assert value(found, ops, operation="enqueue", strategy="legacy", outcome="ok") == 6
    assert value(found, ops, operation="get", strategy="dual", outcome="ok") == 5 + 4 + 3

    # Shadow reads in dual-write: 2 not backfilled, 2 equal, 1 tampered.
    shadow = "ai_jobs_shadow_reads_total"
    assert value(found, shadow, result="missing") == 2
    assert value(found, shadow, result="match") == 2
    assert value(found, shadow, result="mismatch") == 1
    mismatch = happened["events"].mismatches[-1]
    assert (mismatch.job_id, mismatch.fields) == (happened["tampered"].job_id, ("action",))

    # Read fallbacks in read-target: the 3 ws1 jobs before backfill, none after.
    assert value(found, "ai_jobs_read_fallback_total", workspace_id="ws1") == 3
    assert value(found, "ai_jobs_read_fallback_total", workspace_id="ws0") is None

    # Backfill: 10 source records; the 6 legacy ones copied, the 4 dual-written ones there.
    first, second = happened["first"], happened["second"]
    assert first.counts == {"copied": 6, "exists": 4} and second.counts == {"exists": 10}
    records = "ai_jobs_migration_records_total"
    assert value(found, records, migration=MIGRATION, step="backfill", outcome="copied") == 6
    assert value(found, records, migration=MIGRATION, step="backfill", outcome="exists") == 4 + 10
    step = {"migration": MIGRATION, "step": "backfill"}
    assert value(found, "ai_jobs_migration_scanned_records", **step) == 10
    assert value(found, "ai_jobs_migration_expected_records", **step) == 10
    assert value(found, "ai_jobs_migration_remaining_records", **step) == 0
    assert value(found, "ai_jobs_migration_progress_ratio", **step) == 1
    assert value(found, "ai_jobs_migration_pass_finished", **step) == 1
    assert value(found, "ai_jobs_migration_rate_records_per_second", **step) > 0
    assert value(found, "ai_jobs_migration_eta_seconds", **step) == 0
    assert abs(value(found, "ai_jobs_migration_last_progress_timestamp_seconds", **step) - time.time()) < 60

    # Phase: the current one is 1, the others 0.
    phases = {p: value(found, "ai_jobs_migration_phase", migration=MIGRATION, phase=p)
              for p in ("off", "dual-write", "read-target", "target-only")}
    assert phases == {"off": 0, "dual-write": 0, "read-target": 1, "target-only": 0}

    # Verify: the tampered record differs; nothing else.
    report = happened["verify"]
    assert (report.differing, report.problems) == (1, 1)
    problems = {kind: value(found, "ai_jobs_verify_problems", migration=MIGRATION, kind=kind)
                for kind in ("missing", "differing", "orphaned", "target_newer", "unroutable")}
    assert problems == {"missing": 0, "differing": 1, "orphaned": 0, "target_newer": 0, "unroutable": 0}
    assert value(found, "ai_jobs_verify_clean", migration=MIGRATION) == 0
    assert value(found, "ai_jobs_verify_checked_records", migration=MIGRATION, side="source") == 10
    assert value(found, "ai_jobs_verify_checked_records", migration=MIGRATION, side="target") == 10
    assert value(found, "ai_jobs_verify_repaired_records", migration=MIGRATION) == 0
    assert value(found, "ai_jobs_verify_last_run_timestamp_seconds", migration=MIGRATION) > 0


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """``{name: (type, label names)}`` from the tables of docs/metrics.md."""
    rows = re.findall(r"^\| `(ai_\w+)` \| (counter|gauge|histogram) \| ([^|]*) \|",
                      (ROOT / "docs" / "metrics.md").read_text(), re.M)
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def test_every_documented_metric_is_exposed_with_its_type_and_labels():
    registry = CollectorRegistry()
    run_journey(f"memory://metrics-{uuid.uuid4().hex}", registry)
    exposed = families(registry)
    documented = documented_metrics()
    assert len(documented) == 24
    for name, (kind, labels) in documented.items():
        family = exposed[name[: -len("_total")] if kind == "counter" else name]
        assert family.type == kind, name
        sample = {"counter": name, "gauge": name, "histogram": name + "_bucket"}[kind]
        label_sets = {frozenset(s.labels) - {"le"} for s in family.samples if s.name == sample}
        assert label_sets == {frozenset(labels)}, name
    # ... and nothing undocumented.
    documented_families = {n[: -len("_total")] if k == "counter" else n for n, (k, _) in documented.items()}
    # (the text format shows prometheus-client's _created series as families of their own)
    assert {n for n in exposed if not n.endswith("_created")} == documented_families


# -- cardinality ---------------------------------------------------------------------------------


def test_workspaces_beyond_max_workspaces_are_counted_as_other():
    registry = CollectorRegistry()
    store = jobstore.open("memory://", "dual", events=PrometheusEvents(registry=registry, max_workspaces=3))
    for i in range(8):
        job = store.enqueue(f"ws{i}", "a")
        store.get(job.job_id, workspace_id=f"ws{i}")
    store.enqueue_many([("ws7", "a")])
    store.dequeue()
    found = samples(registry)
    assert label_values(found, "workspace_id") == {"ws0", "ws1", "ws2", "__other__", "__none__"}
    assert value(found, "ai_jobs_total", workspace_id="__other__") == 5 + 1
    assert value(found, "ai_jobs_dual_write_total", workspace_id="__other__", result="succeeded") == 5 + 1
    assert value(found, "ai_job_latency_seconds_count", workspace_id="__other__", operation="get",
                 strategy="dual") == 5
    assert value(found, "ai_job_latency_seconds_count", workspace_id="__none__", operation="dequeue",
                 strategy="dual") == 1
    # A workspace admitted once keeps its label.
    store.enqueue("ws1", "a")
    assert value(samples(registry), "ai_jobs_total", workspace_id="ws1") == 2


def test_jobs_total_counts_every_job_enqueue_many_created():
    registry = CollectorRegistry()
    store = jobstore.open("memory://", "legacy", events=PrometheusEvents(registry=registry))
    store.enqueue("a", "x", job_id="j1")
    store.enqueue_many([("a", "x"), ("b", "x"), ("b", "x")])
    with pytest.raises(jobstore.JobExists) as raised:
        store.enqueue_many([("a", "x", None, "j1"), ("c", "x")])
    assert len(raised.value.created) == 1
    with pytest.raises(jobstore.JobExists):
        store.enqueue("a", "x", job_id="j1")
    found = samples(registry)
    assert {ws: value(found, "ai_jobs_total", workspace_id=ws) for ws in "abc"} == {"a": 2, "b": 2, "c": 1}


def test_workspace_label_false_keeps_the_label_name_with_one_value():
    registry = CollectorRegistry()
    store = jobstore.open("memory://", "dual", events=PrometheusEvents(registry=registry, workspace_label=False))
    for i in range(5):
        store.enqueue(f"ws{i}", "a")
    store.dequeue()
    found = samples(registry)
    assert label_values(found, "workspace_id") == {"__all__"}
    assert value(found, "ai_jobs_total", workspace_id="__all__") == 5
    assert value(found, "ai_jobs_dual_write_total", workspace_id="__all__", result="succeeded") == 5
    for family in families(registry).values():
        for sample in family.samples:
            if family.name in ("ai_jobs", "ai_jobs_dual_write", "ai_job_latency_seconds",
                               "ai_jobs_read_fallback"):
                assert "workspace_id" in sample.labels


def test_max_workspaces_is_shared_by_the_stores_of_one_registry():
    registry = CollectorRegistry()
    a = jobstore.open("memory://", "legacy", events=PrometheusEvents(registry=registry, max_workspaces=2))
    b = jobstore.open("memory://", "legacy", events=PrometheusEvents(registry=registry, max_workspaces=2))
    a.enqueue("wsA", "x")
    b.enqueue("wsB", "x")
    a.enqueue("wsC", "x")
    b.enqueue("wsA", "x")
    found = samples(registry)
    assert label_values(found, "workspace_id") == {"wsA", "wsB", "__other__"}
    assert value(found, "ai_jobs_total", workspace_id="wsA") == 2


# -- registries and prefixes ---------------------------------------------------------------------


def test_two_stores_share_one_registry_without_duplicated_timeseries():
    registry = CollectorRegistry()
    url = f"memory://metrics-{uuid.uuid4().hex}"
    first = jobstore.open(url, "dual", events=PrometheusEvents("ai", registry=registry))
    second = jobstore.open(url, "dual", events=PrometheusEvents("ai", registry=registry))
    first.enqueue("ws", "a")
    second.enqueue("ws", "a")
    second.migration().events.migration_progress(MIGRATION, "backfill", 1, 2, {"copied": 1})
    found = samples(registry)
    assert value(found, "ai_jobs_total", workspace_id="ws") == 2
    assert value(found, "ai_jobs_dual_write_total", workspace_id="ws", result="succeeded") == 2
    text = exposition(registry)
    assert text.count("# TYPE ai_jobs_total counter") == 1


def test_two_registries_are_independent():
    one, two = CollectorRegistry(), CollectorRegistry()
    url = f"memory://metrics-{uuid.uuid4().hex}"
    a = jobstore.open(url, "legacy", events=PrometheusEvents(registry=one))
    b = jobstore.open(url, "legacy", events=PrometheusEvents(registry=two))
    a.enqueue("ws", "a")
    a.enqueue("ws", "a")
    b.enqueue("ws", "a")
    assert value(samples(one), "ai_jobs_total", workspace_id="ws") == 2
    assert value(samples(two), "ai_jobs_total", workspace_id="ws") == 1


def test_the_default_registry_is_prometheus_clients(monkeypatch):
    fresh = CollectorRegistry()
    monkeypatch.setattr(prometheus_client, "REGISTRY", fresh)
    events = PrometheusEvents()
    assert events.registry is fresh
    jobstore.open("memory://", "legacy", events=events).enqueue("ws", "a")
    assert value(samples(fresh), "ai_jobs_total", workspace_id="ws") == 1


@pytest.mark.parametrize("key_prefix, expected", [
    ("ai", "ai"), ("svc:jobs", "svc_jobs"), ("my-app.v2", "my_app_v2"), ("9x", "_9x"),
    ("a:b-c.d_e", "a_b_c_d_e"),
])
def test_key_prefixes_become_valid_metric_prefixes(key_prefix, expected):
    assert metric_prefix(key_prefix) == expected
    registry = CollectorRegistry()
    store = jobstore.open("memory://", "dual", prefix=key_prefix,
                          events=PrometheusEvents(key_prefix, registry=registry))
    store.enqueue("ws", "a")
    names = {s.name for f in families(registry).values() for s in f.samples}
    assert f"{expected}_jobs_total" in names and f"{expected}_job_latency_seconds_count" in names
    assert all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", n) for n in names)


def test_an_incompatible_metric_already_registered_is_a_config_error():
    registry = CollectorRegistry()
    Counter("ai_jobs_total", "the application's own", ["queue"], registry=registry)
    with pytest.raises(ConfigError, match="ai_jobs_total.*already registered"):
        PrometheusEvents(registry=registry)


def test_a_compatible_metric_already_registered_is_shared():
    registry = CollectorRegistry()
    own = Counter("ai_jobs_dual_write_total", "the migrated system's", ["workspace_id", "result"],
                  registry=registry)
    own.labels("ws", "succeeded").inc()
    store = jobstore.open("memory://", "dual", events=PrometheusEvents(registry=registry))
    store.enqueue("ws", "a")
    assert value(samples(registry), "ai_jobs_dual_write_total", workspace_id="ws", result="succeeded") == 2


def test_other_buckets_on_the_same_registry_and_prefix_are_refused():
    registry = CollectorRegistry()
    PrometheusEvents(registry=registry)
    with pytest.raises(ConfigError, match="buckets"):
        PrometheusEvents(registry=registry, buckets=(0.1, 1.0))
    PrometheusEvents("other", registry=registry, buckets=(0.1, 1.0))


# -- migration progress, unit by unit ------------------------------------------------------------


def test_pass_counts_continue_after_a_resume_and_restart_with_a_new_pass():
    registry = CollectorRegistry()
    events = PrometheusEvents(registry=registry)

    def copied():
        return value(samples(registry), "ai_jobs_migration_records_total", migration="m",
                     step="backfill", outcome="copied")

    events.migration_progress("m", "backfill", 10, 30, {"copied": 10})
    events.migration_progress("m", "backfill", 20, 30, {"copied": 20})
    # Interrupted; resumed from the checkpoint in this process: counts go on from 20.
    events.migration_progress("m", "backfill", 25, 30, {"copied": 25})
    assert copied() == 25
    events.migration_progress("m", "backfill", 30, 30, {"copied": 30})
    # A new pass (--restart) starts from zero: counted in full.
    events.migration_progress("m", "backfill", 10, 30, {"exists": 10})
    events.migration_progress("m", "backfill", 30, 30, {"exists": 30})
    found = samples(registry)
    assert copied() == 30
    assert value(found, "ai_jobs_migration_records_total", migration="m", step="backfill",
                 outcome="exists") == 30


def test_events_never_raise(caplog):
    events = PrometheusEvents(registry=CollectorRegistry())
    events.verify_result("m", None)
    events.pass_result("m", object())
    events.migration_progress("m", "backfill", "x", None, None)
    events.operation("get", "dual", "ws", "ok", "not a number")
    assert "metrics may be incomplete" in caplog.text


# -- serving -------------------------------------------------------------------------------------


def fetch(port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as reply:
        return reply.read().decode()


def test_serve_exposes_the_registry_over_http():
    registry = CollectorRegistry()
    jobstore.open("memory://", "legacy", events=PrometheusEvents(registry=registry)).enqueue("ws", "a")
    server, thread = serve(0, registry=registry)
    try:
        assert 'ai_jobs_total{workspace_id="ws"} 1.0' in fetch(server.server_port)
    finally:
        server.shutdown()
        server.server_close()


def test_serve_on_a_port_in_use_is_a_config_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            serve(taken.getsockname()[1], registry=CollectorRegistry())


@pytest.mark.parametrize("given, expected", [
    ("9108", ("127.0.0.1", 9108)), ("0.0.0.0:9108", ("0.0.0.0", 9108)), ("[::1]:80", ("::1", 80)),
])
def test_listen_addresses(given, expected):
    assert metrics.listen_address(given) == expected


@pytest.fixture
def cli_exporters(monkeypatch):
    """The CLI's exporters in this process, on a fresh default registry; shut down afterwards."""
    monkeypatch.setattr(prometheus_client, "REGISTRY", CollectorRegistry())
    started = []

    def recording_serve(*args, **kwargs):
        server, thread = metrics_serve(*args, **kwargs)
        started.append(server)
        return server, thread

    metrics_serve = metrics.serve
    monkeypatch.setattr(metrics, "serve", recording_serve)
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_verify_metrics_port_serves_the_report(cli_exporters):
    url = f"memory://metrics-cli-{uuid.uuid4().hex}"
    store = jobstore.open(url, "dual")
    for i in range(3):
        store.enqueue("ws", "a", job_id=f"j{i}")
    port = free_port()
    out = cli_runner().invoke(main, ["migrate", "verify", "--url", url, "--json", "--metrics-port", str(port)])
    assert out.exit_code == 0, out.output
    text = fetch(port)
    assert f'ai_jobs_verify_clean{{migration="{MIGRATION}"}} 1.0' in text
    assert f'ai_jobs_verify_checked_records{{migration="{MIGRATION}",side="source"}} 3.0' in text
    assert len(cli_exporters) == 1


def test_metrics_port_in_use_or_malformed_exits_2(cli_exporters):
    url = f"memory://metrics-cli-{uuid.uuid4().hex}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = cli_runner().invoke(main, ["migrate", "verify", "--url", url, "--metrics-port",
                                        str(taken.getsockname()[1])])
    assert out.exit_code == 2 and "cannot serve metrics" in out.stderr
    out = cli_runner().invoke(main, ["migrate", "backfill", "--url", url, "--metrics-port", "nine"])
    assert out.exit_code == 2 and "PORT" in out.stderr


@pytest.mark.redis
def test_backfill_metrics_port_serves_while_the_pass_runs(redis_url):
    legacy = jobstore.open(redis_url, "legacy")
    legacy.enqueue_many([(f"ws{i % 3}", "a") for i in range(120)])
    jobstore.open(redis_url, "dual").migration().set_phase("dual-write")
    port = free_port()
    command = [sys.executable, "-m", "jobstore.cli", "migrate", "backfill", "--url", redis_url,
               "--batch", "10", "--rate", "60", "--json", "--metrics-port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    seen = None
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                text = fetch(port, timeout=1)
            except OSError:
                time.sleep(0.05)
                continue
            if 'ai_jobs_migration_records_total{migration="legacy:workspace",outcome="copied",step="backfill"}' in text:
                seen = text
                break
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert seen is not None, "the exporter never showed the running backfill"
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(seen) for s in f.samples}
    assert value(found, "ai_jobs_migration_expected_records", migration=MIGRATION, step="backfill") == 120
    assert value(found, "ai_jobs_migration_pass_finished", migration=MIGRATION, step="backfill") == 0
    assert "process_cpu_seconds_total" in seen or "python_info" in seen  # the default registry
    assert json.loads(stdout)["counts"] == {"copied": 120}


# -- alert rules and dashboard -------------------------------------------------------------------

# A metric name of ours, not part of a recording rule's name (those have colons).
METRIC_NAME = re.compile(r"(?<![\w:$])ai_\w+(?![\w:])")


def rule_expressions(text: str) -> list[tuple[str, str]]:
    """``(rule name, expr)`` of every rule of a Prometheus rules file (without a YAML parser:
    ``expr:`` on one line or as a ``|`` block)."""
    lines = text.splitlines()
    rules, name = [], None
    for i, line in enumerate(lines):
        m = re.match(r"\s*-\s*(alert|record):\s*(\S+)", line)
        if m:
            name = m.group(2)
            continue
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest in ("|", ">", "|-", ">-"):
            block = []
            for follow in lines[i + 1:]:
                if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                    break
                block.append(follow.strip())
            rest = " ".join(part for part in block if part)
        rules.append((name, rest))
    return rules


def exposed_names(registry) -> set[str]:
    return {s.name for f in families(registry).values() for s in f.samples} | set(families(registry))


def test_alert_rules_reference_only_exposed_metrics():
    text = (ROOT / "docs" / "alerts" / "jobstore-canary.rules.yml").read_text()
    assert "\t" not in text and text.startswith("#") and "\ngroups:\n" in text
    rules = rule_expressions(text)
    alerts = {name for name, _ in rules if not name.startswith("jobstore:")}
    assert alerts == {"JobstoreDualWriteFailed", "JobstoreLatencyP99AboveBaseline",
                      "JobstoreShadowReadMismatch", "JobstoreMigrationPassStalled"}
    assert len(re.findall(r"^\s*-\s*alert:", text, re.M)) == len(alerts)
    registry = CollectorRegistry()
    run_journey(f"memory://metrics-{uuid.uuid4().hex}", registry)
    exposed = exposed_names(registry)
    recorded = {name for name, _ in rules if name.startswith("jobstore:")}
    for name, expr in rules:
        assert expr and expr.count("(") == expr.count(")"), name
        used = set(METRIC_NAME.findall(expr))
        assert used <= exposed, (name, used - exposed)
        assert set(re.findall(r"jobstore:[\w:]+", expr)) <= recorded, name
    referenced = {n for _, e in rules for n in METRIC_NAME.findall(e)}
    assert {"ai_jobs_dual_write_total", "ai_job_latency_seconds_bucket", "ai_jobs_shadow_reads_total",
            "ai_jobs_migration_last_progress_timestamp_seconds"} <= referenced


def test_grafana_dashboard_references_only_exposed_metrics():
    dashboard = json.loads((ROOT / "docs" / "grafana" / "jobstore-migration.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    queries = []

    def walk(node):
        if isinstance(node, dict):
            for key, item in node.items():
                if key in ("expr", "definition") and isinstance(item, str):
                    queries.append(item)
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    assert len(queries) > 20
    registry = CollectorRegistry()
    run_journey(f"memory://metrics-{uuid.uuid4().hex}", registry)
    exposed = exposed_names(registry)
    used = set()
    for query in queries:
        resolved = query.replace("${prefix}", "ai")
        assert resolved.count("(") == resolved.count(")"), query
        used |= set(METRIC_NAME.findall(resolved))
    assert used and used <= exposed, used - exposed
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
