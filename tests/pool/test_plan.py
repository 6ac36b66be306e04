"""``triage plan``: replicas per model from routed shares, for a load or for a pool of N replicas."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from bench.harness.synthetic import write_synthetic_artifact
from router.cli import main as triage
from router.plan import Budget, PlanError, ReplicaSpec, erlang_c, for_gpus, for_qps, read_specs, shares

SPECS = {"a": ReplicaSpec(2.0, 3.0), "b": ReplicaSpec(2.0, 3.0), "c": ReplicaSpec(1.0, 1.0)}


def test_replicas_for_a_load_keep_every_replica_below_the_utilisation_cap() -> None:
    share = {"a": 0.6, "b": 0.1, "c": 0.3}
    rows = {r.model: r for r in for_qps(share, SPECS, qps=10, max_utilisation=0.8)}
    # a: 6 req/s over 2 req/s at 80 % -> 3.75 -> 4; b: 1 / 1.6 -> 1; c: 3 / 0.8 -> 4
    assert {m: r.replicas for m, r in rows.items()} == {"a": 4, "b": 1, "c": 4}
    assert all(10 * r.share / r.capacity() <= 0.8 for r in rows.values())
    assert for_qps({"a": 1.0, "b": 0.0, "c": 0.0}, SPECS, 1, 0.8)[1].replicas == 1  # never none


def test_a_pool_of_n_goes_to_the_bottleneck_and_holds_the_most_load() -> None:
    share = {"a": 0.6, "b": 0.1, "c": 0.3}
    rows = for_gpus(share, SPECS, gpus=10)
    replicas = {r.model: r.replicas for r in rows}
    assert sum(replicas.values()) == 10 and min(replicas.values()) >= 1
    held = min(r.load_held() for r in rows)
    # No other split of 10 with at least one each holds more.
    best = max(min(x * 2 / 0.6, y * 2 / 0.1, (10 - x - y) * 1 / 0.3)
               for x in range(1, 9) for y in range(1, 10 - x))
    assert held == pytest.approx(best)
    with pytest.raises(PlanError):
        for_gpus(share, SPECS, gpus=2)


def test_throughput_from_a_number_or_a_file(tmp_path: Path) -> None:
    assert read_specs("2.5", ["a", "b"], 4.0) == {"a": ReplicaSpec(2.5, 4.0), "b": ReplicaSpec(2.5, 4.0)}
    path = tmp_path / "t.yaml"
    path.write_text("default: 1.5\nb: {qps: 3, usd_per_hour: 2.2}\n")
    assert read_specs(str(path), ["a", "b"], 1.0) == {"a": ReplicaSpec(1.5, 1.0), "b": ReplicaSpec(3.0, 2.2)}
    path.write_text(json.dumps({"a": 1.0, "zz": 2.0}))
    with pytest.raises(PlanError, match="zz"):
        read_specs(str(path), ["a"], 0.0)
    with pytest.raises(PlanError, match="positive"):
        read_specs("0", ["a"], 0.0)


def test_the_command_plans_from_the_shares_triage_route_gives(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    models = ["general", "math", "code"]
    artifact = write_synthetic_artifact(tmp_path / "artifact", k=4, models=models, n_reference=300)
    queries = [f"question {i}: what is {i} times {i + 3}?" for i in range(20)] + \
              ["Write a Python function that reverses a list.", "Who wrote Hamlet?"] * 5
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("".join(json.dumps({"id": str(i), "query": q, "split": "test"}) + "\n"
                               for i, q in enumerate(queries)))
    assert triage(["route", "--artifact", str(artifact.path), "--input", str(traffic), "--knob", "0.5",
                   "--output", str(tmp_path / "d.jsonl")]) == 0
    routed = Counter(json.loads(line)["model"] for line in (tmp_path / "d.jsonl").read_text().splitlines())
    expected = shares(models, list(routed.elements()))
    capsys.readouterr()
    assert triage(["plan", "--artifact", str(artifact.path), "--traffic", str(traffic), "--qps", "12",
                   "--replica-throughput", "2", "--usd-per-replica-hour", "2.5", "--split", "test"]) == 0
    out = capsys.readouterr().out
    planned = {r.model: r for r in for_qps(expected, dict.fromkeys(models, ReplicaSpec(2, 2.5)), 12, 0.8)}
    for model, row in planned.items():
        line = next(line for line in out.splitlines() if line.startswith(model + " "))
        assert f"{row.share:.1%}" in line and line.split()[4] == str(row.replicas)
    total = sum(r.replicas for r in planned.values())
    assert f" {total * 2.5:.2f}" in next(line for line in out.splitlines() if line.startswith("pool "))
    assert triage(["plan", "--artifact", str(artifact.path), "--traffic", str(traffic), "--gpus", "2",
                   "--replica-throughput", "2"]) == 2  # fewer replicas than models
    assert "fewer than the 3 models" in capsys.readouterr().err


def test_erlang_c_and_the_tail_wait_match_the_closed_forms() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: an arrival waits with probability rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # M/M/1: P(wait > t) = rho * exp(-(mu - lambda) t), so the 99th percentile is ln(rho / 0.01) / (mu - lambda)
    budget = Budget(1.0, slots=1)
    assert budget.wait(1, ReplicaSpec(2.0), 1.5) == pytest.approx(math.log(0.75 / 0.01) / 0.5)
    assert budget.wait(1, ReplicaSpec(2.0), 2.0) == math.inf and budget.wait(1, ReplicaSpec(2.0), 0.01) == 0.0
    held = budget.held(1, ReplicaSpec(2.0))
    assert budget.wait(1, ReplicaSpec(2.0), held) == pytest.approx(1.0, abs=1e-6)  # the budget's edge
    with pytest.raises(PlanError):
        Budget(1.0, slots=0)


def test_a_budget_asks_for_more_replicas_than_the_mean_utilisation_cap() -> None:
    share = {"a": 0.45, "b": 0.13, "c": 0.42}
    specs = dict.fromkeys(share, ReplicaSpec(3.2))  # 8 slots of 2.5 s
    budget = Budget(1.95, slots=8)
    rows = for_qps(share, specs, 18.0, 0.8, budget)
    for r in rows:  # the fewest replicas that keep the 99th-percentile wait within the budget
        assert budget.wait(r.replicas, r.spec, 18.0 * r.share) <= 1.95
        assert r.replicas == 1 or budget.wait(r.replicas - 1, r.spec, 18.0 * r.share) > 1.95
        assert r.load_held() >= 18.0
    capped = {r.model: r.replicas for r in for_qps(share, specs, 18.0, 0.8)}
    # b: 2.3 req/s on one 8-slot replica is 73 % busy, under the cap, but 1 % of its requests wait over 4 s
    assert capped["b"] == 1 and budget.wait(1, specs["b"], 18.0 * 0.13) > 4
    assert {r.model: r.replicas for r in rows} == capped | {"b": 2}


def test_a_pool_of_n_split_for_a_budget_holds_the_most_load_within_it() -> None:
    share = {"a": 0.6, "b": 0.1, "c": 0.3}
    budget = Budget(1.0, slots=4)
    rows = for_gpus(share, SPECS, gpus=9, budget=budget)
    assert sum(r.replicas for r in rows) == 9
    held = min(r.load_held() for r in rows)
    best = max(min(budget.held(x, SPECS["a"]) / 0.6, budget.held(y, SPECS["b"]) / 0.1,
                   budget.held(9 - x - y, SPECS["c"]) / 0.3) for x in range(1, 8) for y in range(1, 9 - x))
    assert held == pytest.approx(best)
    assert held < min(r.saturation() for r in rows)  # within a budget, less than at saturation


def test_the_command_refuses_a_budget_without_slots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert triage(["plan", "--artifact", str(tmp_path), "--traffic", str(tmp_path / "t.jsonl"), "--gpus", "3",
                   "--replica-throughput", "2", "--first-token-budget-s", "2"]) == 2
    assert "needs --slots" in capsys.readouterr().err
