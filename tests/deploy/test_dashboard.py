"""The Grafana dashboard: loads, every panel queries Prometheus, and only with metrics the router exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "triage.json"
CONTRACTS = REPO / "docs" / "contracts.md"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
CONTRACT_LABELS = {"le", "backend", "kind", "cluster", "reason", "outcome"}


def contract_metrics() -> dict[str, str]:
    """metric name -> type, from the table in docs/contracts.md."""
    rows = re.findall(r"^\| `(triage_[a-z_]+)` \| (\w+)", CONTRACTS.read_text(), flags=re.MULTILINE)
    assert rows, "no metric table found in docs/contracts.md"
    return dict(rows)


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_dashboard_loads_with_its_title() -> None:
    dashboard = json.loads(DASHBOARD.read_text())

    assert dashboard["title"] == "Triage — cost & accuracy"
    assert dashboard["uid"]


def test_every_panel_has_a_promql_target() -> None:
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert all(t.get("expr", "").strip() for t in panel["targets"]), panel["title"]


def test_exprs_use_only_contract_metrics() -> None:
    metrics = contract_metrics()
    used = set()
    for expr in exprs():
        for name in re.findall(r"\btriage_[a-z_]+", expr):
            base = name
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in metrics:
                    base = name[: -len(suffix)]
                    assert metrics[base] == "histogram", f"{name}: {base} is not a histogram"
            assert base in metrics, f"{name} in {expr!r} is not in docs/contracts.md"
            used.add(base)
    # What the dashboard is for: spend, savings, expected vs observed accuracy, traffic, OOD and fallbacks,
    # latency, backend health.
    assert {"triage_cost_usd_total", "triage_counterfactual_cost_usd_total", "triage_expected_accuracy",
            "triage_feedback_score", "triage_requests_total", "triage_fallbacks_total",
            "triage_decision_seconds", "triage_request_seconds", "triage_backend_up",
            "triage_circuit_state"} <= used


def test_labels_are_the_contracts_small_fixed_sets() -> None:
    for expr in exprs():
        for labels in re.findall(r"by \(([^)]*)\)", expr):
            assert {label.strip() for label in labels.split(",")} <= CONTRACT_LABELS, expr


def test_exprs_parse_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rules = tmp_path / "rules.yml"
    # Grafana's variables are not PromQL; give them concrete ranges.
    concrete = [e.replace("$__rate_interval", "5m").replace("$__range", "1h") for e in exprs()]
    body = "\n".join(f"      - record: triage:check_{i}\n        expr: {json.dumps(e)}"
                     for i, e in enumerate(concrete))
    rules.write_text(f"groups:\n  - name: dashboard\n    rules:\n{body}\n")

    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
