"""A small version of bench/load.py as a test: 500 requests at 32 concurrency, a backend SIGKILLed mid-run.

Asserts the invariants, never the speed: every request ends complete or as a clear error, none is lost or
hangs, the router causes no 5xx, and the victim's circuit opens and closes again.
"""

from __future__ import annotations

import pytest

from bench.harness.load import LoadPlan, load_queries, report, run_load
from tests.reliability.rig import RigFactory


@pytest.mark.slow
async def test_500_requests_with_a_backend_killed_mid_run(rig: RigFactory) -> None:
    plan = LoadPlan(requests=500, concurrency=32, kill_after=0.2, restart_after=0.6, min_down_s=2.0,
                    timeout_s=30.0, close_wait_s=30.0)
    health = {"probe_interval_s": 0.3, "failure_threshold": 3, "open_seconds": 1.0, "retries": 1}
    with rig(health=health) as r:
        for fake in r.fakes.values():
            fake.configure(latency_ms=5, tokens_per_s=1000)
        result = await run_load(r.url, plan, load_queries(100, plan.seed), r.fakes, r.artifact.generalist)
    print(report(result))
    assert result.chaos.victim is not None
    assert result.problems() == []
    assert result.tally.outcomes["ok"] >= 0.9 * plan.requests
