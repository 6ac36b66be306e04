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


def contract_metrics() -> dict[str, str]:
    """metric name -> type, from the table in docs/contracts.md."""
    rows = re.findall(r"^\| `(triage_[a-z_]+)` \| (\w+)", CONTRACTS.read_text(), flags=re.MULTILINE)
    assert rows, "no metric table found in docs/contracts.md"
    return dict(rows)


def contract_labels() -> set[str]:
    """Every label the metric table in docs/contracts.md names (its third column, values in parentheses aside),
    and histograms' ``le``."""
    cells = re.findall(r"^\| `triage_[a-z_]+` \| \w+ \| ([^|]*)\|", CONTRACTS.read_text(), flags=re.MULTILINE)
    labels = {"le"}
    for cell in cells:
        labels |= set(re.findall(r"\b[a-z_]+\b", re.sub(r"\([^)]*\)", "", cell)))
    assert {"backend", "cluster", "reason", "outcome", "kind"} <= labels, "no label column in docs/contracts.md"
    return labels


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


def test_every_panel_shows_its_unit() -> None:
    # Grafana's "short" (its default) and "none" print bare numbers: a panel says what its numbers count, either with
    # a unit Grafana prints beside them, or, for states, with value mappings that name every state.
    for panel in panels():
        defaults = panel["fieldConfig"]["defaults"]
        unit = defaults.get("unit", "short")
        assert unit != "short", f"{panel['title']}: no unit"
        if unit == "none":
            names = [option["text"] for mapping in defaults.get("mappings", [])
                     for option in mapping.get("options", {}).values()]
            assert names or defaults.get("custom", {}).get("axisLabel"), f"{panel['title']}: bare numbers"
        if panel["type"] == "timeseries":
            assert defaults.get("custom", {}).get("axisLabel"), f"{panel['title']}: its axis names no unit"


def test_the_snapshot_writes_every_panels_unit_on_its_axis() -> None:
    from bench.dashboard_snapshot import DASHBOARD as SNAPSHOT_DASHBOARD
    from bench.dashboard_snapshot import axis_label, panel_units

    units = panel_units(SNAPSHOT_DASHBOARD)

    assert set(units) == {p["title"] for p in panels()}
    assert all(axis_label(unit) for unit in units.values())
    assert axis_label(units["Spend per hour by backend"]) == "spend per hour (USD)"
    assert axis_label(units["Share of traffic per backend"]) == "share of requests (%)"
    assert axis_label(units["Tokens per second by backend and kind"]) == "throughput (tok/s)"
    assert axis_label(units["Backend up"]) == "state"


def test_state_panels_name_every_state() -> None:
    states = {"triage_backend_up": {"0": "down", "1": "up"},
              "triage_circuit_state": {"0": "closed", "1": "half-open", "2": "open"}}
    for panel in panels():
        for metric, expected in states.items():
            if any(metric in t["expr"] for t in panel["targets"]):
                mappings = panel["fieldConfig"]["defaults"]["mappings"]
                named = {value: option["text"] for m in mappings for value, option in m["options"].items()}
                assert named == expected, panel["title"]


def savings_exprs() -> dict[str, str]:
    wanted = {"Saved over the range (USD)", "Saved share over the range"}
    return {p["title"]: p["targets"][0]["expr"].replace("$__range", "10m") for p in panels() if p["title"] in wanted}


@pytest.mark.parametrize(("case", "spend", "counterfactual", "saved", "share"), [
    # one price for the whole fleet (RouterDC's seven 7-8B models): nothing saved, and the panels say 0, not -1.8
    ("equal prices", "0+3x10", "0+3x10", 0.0, 0.0),
    ("cheaper than the reference", "0+1x10", "0+4x10", 30.0, 0.75),
    ("dearer than the reference", "0+2x10", "0+1x10", -10.0, -1.0),
    # nothing priced against the reference (it is not in the pool): no data rather than -Inf
    ("no counterfactual", "0+2x10", "0+0x10", -20.0, None),
])
def test_savings_panels_on_prometheus(case: str, spend: str, counterfactual: str, saved: float, share: float | None,
                                      tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    exprs = savings_exprs()
    expected = {"Saved over the range (USD)": saved, "Saved share over the range": share}
    tests = [{"expr": expr, "eval_time": "10m",
              "exp_samples": [] if expected[title] is None else [{"labels": "{}", "value": expected[title]}]}
             for title, expr in exprs.items()]
    spec = {"tests": [{"interval": "1m", "input_series": [
        {"series": 'triage_cost_usd_total{backend="a"}', "values": spend},
        {"series": "triage_counterfactual_cost_usd_total", "values": counterfactual}],
        "promql_expr_test": tests}]}
    path = tmp_path / "savings_test.yml"
    path.write_text(json.dumps(spec))  # JSON is YAML

    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)

    assert len(exprs) == 2
    assert result.returncode == 0, case + "\n" + result.stdout + result.stderr


def test_labels_are_the_contracts_small_fixed_sets() -> None:
    known = contract_labels()
    for expr in exprs():
        for labels in re.findall(r"by \(([^)]*)\)", expr):
            assert {label.strip() for label in labels.split(",")} <= known, expr


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
