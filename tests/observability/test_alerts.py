"""The alert rules and the Grafana dashboard pass Prometheus's own checker.

- ``promtool check rules`` on docs/alerts/jobstore-canary.rules.yml;
- ``promtool test rules`` on docs/alerts/tests/<alert>.test.yml, one unit test file per alert,
  each with a time the alert fires (labels and annotations as expected) and one it does not;
- every query of docs/grafana/jobstore-migration.json, its template variables filled in as
  Grafana would, parses under ``promtool check rules``, uses only variables the dashboard
  defines and only recording rules the rules file records. (That the metrics it names exist is
  tests/observability/test_metrics.py's test_grafana_dashboard_references_only_exposed_metrics.)

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it). Without it these
tests skip, except under ``CI=true``, where they fail: CI must run the checker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "alerts" / "jobstore-canary.rules.yml"
UNIT_TESTS = ROOT / "docs" / "alerts" / "tests"
DASHBOARD = ROOT / "docs" / "grafana" / "jobstore-migration.json"

# Grafana's own variables, as a query sees them when the panel runs.
GRAFANA_GLOBALS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    if path is None:
        message = ("promtool is not installed; the alert rule checks need it "
                   "(Debian: apt-get install prometheus)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the checks may not skip)")
        pytest.skip(message)
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=300)


def alert_names() -> list[str]:
    return re.findall(r"^\s*-\s*alert:\s*(\S+)", RULES.read_text(), re.M)


def recorded_names() -> set[str]:
    return set(re.findall(r"^\s*-\s*record:\s*(\S+)", RULES.read_text(), re.M))


def test_promtool_checks_the_rules():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names()) + len(recorded_names())} rules found" in done.stdout


def test_every_alert_has_a_unit_test_file_that_fires_it_and_keeps_it_quiet():
    alerts = alert_names()
    assert alerts
    files = {path.name.removesuffix(".test.yml") for path in UNIT_TESTS.glob("*.test.yml")}
    assert files == set(alerts), f"one docs/alerts/tests/<alert>.test.yml per alert: {sorted(files)}"
    for alert in alerts:
        text = (UNIT_TESTS / f"{alert}.test.yml").read_text()
        assert "- ../jobstore-canary.rules.yml" in text, alert
        tested = set(re.findall(r"^\s*alertname:\s*(\S+)", text, re.M))
        assert tested == {alert}, f"{alert}.test.yml tests {sorted(tested)}"
        assert re.search(r"exp_alerts:\s*\[\]", text), f"{alert}: no time at which it must stay quiet"
        assert re.search(r"exp_alerts:\s*\n\s*- exp_labels:", text), f"{alert}: never fires"
        assert "exp_annotations:" in text, f"{alert}: its message is not checked"


@pytest.mark.parametrize("alert", alert_names())
def test_promtool_runs_the_unit_tests_of(alert):
    done = promtool("test", "rules", str(UNIT_TESTS / f"{alert}.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def dashboard_queries() -> list[tuple[str, str]]:
    """``(where, query)`` of every PromQL query in the dashboard, wherever it sits (panels,
    rows, annotations, template variables; a variable's ``label_values(metric, label)`` as the
    PromQL Grafana sends for it)."""
    found = []

    def walk(node, where: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where)
            return
        if not isinstance(node, dict):
            return
        where = f"{where} > {node.get('title') or node.get('name') or node.get('refId') or '?'}"
        if isinstance(node.get("expr"), str):
            found.append((where, node["expr"]))
        if isinstance(node.get("definition"), str):
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", node["definition"])
            assert match, f"{where}: {node['definition']!r} is not label_values(metric, label)"
            found.append((where, f"group by ({match.group(2)}) ({match.group(1)})"))
        for value in node.values():
            walk(value, where)

    walk(json.loads(DASHBOARD.read_text()), DASHBOARD.name)
    return found


def filled_in(query: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"{query!r} uses ${name}, which the dashboard does not define"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, query)


def test_dashboard_queries_parse_and_use_only_what_exists(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    variables = dict(GRAFANA_GLOBALS)
    for variable in dashboard["templating"]["list"]:
        # A text box holds its value; a multi-value query variable becomes a regex.
        variables[variable["name"]] = variable["query"] if variable["type"] == "textbox" else ".*"
    queries = dashboard_queries()
    assert len(queries) > 20
    recorded = recorded_names()
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for n, (where, query) in enumerate(queries):
        promql = filled_in(query, variables)
        used = set(re.findall(r"jobstore:[\w:]+", promql))
        assert used <= recorded, f"{where}: {sorted(used - recorded)} is not recorded by {RULES.name}"
        lines += [f"      - record: dashboard:query_{n}", f"        expr: {json.dumps(promql)}"]
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    done = promtool("check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr
