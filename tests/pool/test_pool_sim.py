"""The pool simulator's queueing, on hand-made arrivals: what it reports must be what a FIFO pool does."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from bench.pool_sim import simulate
from router.plan import Budget, ReplicaSpec, for_qps


def options(**changes: float) -> argparse.Namespace:
    base = {"slots": 1, "service_s": 1.0, "prefill_s": 0.0, "max_queue_s": 0.5, "queue_size": 1,
            "queue_timeout_s": 0.25}
    return argparse.Namespace(**{**base, **changes})


def score(query: int, model: str) -> float:
    return 1.0 if model == "a" else 0.0


def test_quality_only_queues_without_bound_on_an_overloaded_replica() -> None:
    arrivals = [0.5 * i for i in range(8)]  # twice what one slot of 1 s serves
    out = simulate("quality", {"a": 1, "b": 1}, arrivals, [1.0] * 8, lambda i: ["a", "b"], score, options())
    assert out.ttft == pytest.approx([0.5 * i for i in range(8)])  # each waits half a second more
    assert out.scores == [1.0] * 8 and out.refused == 0
    assert out.utilisation["a#0"] == pytest.approx(1.0) and out.utilisation["b#1"] == 0  # busy until the end


def test_load_aware_spills_to_the_next_candidate_and_refuses_when_both_are_full() -> None:
    arrivals = [0.0, 0.1, 0.2, 0.3]
    out = simulate("load-aware", {"a": 1, "b": 1}, arrivals, [1.0] * 4, lambda i: ["a", "b"], score, options())
    # 0 -> a; 1 -> b (a's wait would be 1 s, over 0.5); 2 waits at the router, times out at 0.45; 3 finds the
    # router's queue (size 1) full.
    assert out.scores == [1.0, 0.0] and out.spilled == 1 and out.refused == 2
    assert max(out.ttft) <= 0.5


def test_round_robin_ignores_the_candidates() -> None:
    out = simulate("round-robin", {"a": 1, "b": 1}, [0.0, 2.0, 4.0, 6.0], [1.0] * 4, lambda i: ["a"], score,
                   options())
    assert out.scores == [1.0, 0.0, 1.0, 0.0]


def test_triage_plan_sized_for_the_budget_meets_it_where_the_utilisation_cap_does_not() -> None:
    rng = np.random.default_rng(0)
    rate, n = 2.34, 4000  # one 8-slot replica of 2.5 s (3.2 req/s) would be 73 % busy: under an 80 % cap
    arrivals = list(np.cumsum(rng.exponential(1 / rate, size=n)))
    service = list(rng.lognormal(math.log(2.5) - 0.125, 0.5, size=n))  # as bench.pool_sim draws them
    spec, budget = {"b": ReplicaSpec(3.2)}, Budget(1.95, slots=8)
    capped = for_qps({"b": 1.0}, spec, rate, 0.8)[0].replicas
    sized = for_qps({"b": 1.0}, spec, rate, 0.8, budget)[0].replicas
    args = options(slots=8, service_s=2.5)

    def p99(replicas: int) -> float:
        out = simulate("quality", {"b": replicas}, arrivals, service, lambda i: ["b"], score, args)
        return float(np.percentile(out.ttft, 99))

    assert (capped, sized) == (1, 2)
    assert p99(capped) > 1.95 and p99(sized) <= 1.95
