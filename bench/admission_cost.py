"""What deciding with load costs per request: ``Admission.place`` on a seven-model pool, two replicas each.

    python -m bench.admission_cost [--calls 20000] [--rounds 7]

Two cases, each timed over ``--calls`` calls and reported as the median of ``--rounds`` rounds (microseconds per
call): an idle pool (the policy's choice stands) and a pool whose first two choices are busy past the budget
(the request spills to the third). The decisions are the policy's, for real queries' vectors on a synthetic
artifact with the RouterDC model names; no request is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client import CollectorRegistry

from bench.harness.synthetic import write_synthetic_artifact
from router.backends import BackendPool
from router.metrics import Metrics
from router.policy import Decision, Policy
from router.settings import BackendSettings, HealthSettings, PoolSettings

MODELS = ["meta-llama/Meta-Llama-3-8B", "mistralai/Mistral-7B-v0.1", "meta-math/MetaMath-Mistral-7B",
          "itpossible/Chinese-Mistral-7B-v0.1", "HuggingFaceH4/zephyr-7b-beta",
          "cognitivecomputations/dolphin-2.6-mistral-7b", "cognitivecomputations/dolphin-2.9-llama3-8b"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


async def timed(pool: BackendPool, decisions: list[Decision], chains: list[list[str]], calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        j = i % len(decisions)
        await pool.admission.place(decisions[j], chains[j], budget_ms=500)
    return (time.perf_counter() - started) / calls * 1e6


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        artifact = write_synthetic_artifact(Path(tmp) / "a", k=16, models=MODELS, n_reference=2000)
    policy = Policy(artifact)
    rng = np.random.default_rng(0)
    x = artifact.centroids[rng.integers(0, artifact.k, 256)] + 0.02 * rng.standard_normal((256, artifact.embedder_dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    decisions = [d for d in policy.decide(x, 0.5) if not d.is_ood and len(d.fallbacks()) >= 3]
    chains = [[d.model, d.fallbacks()[0], artifact.generalist] for d in decisions]
    backends = [BackendSettings(name=m, replicas=[f"http://{i}-a.test/v1", f"http://{i}-b.test/v1"],  # type: ignore[call-arg]
                                model=m, max_concurrency=4) for i, m in enumerate(MODELS)]
    pool = BackendPool(backends, HealthSettings(probe_interval_s=0), Metrics(CollectorRegistry()),
                       lambda _: httpx.MockTransport(lambda r: httpx.Response(500)),
                       pool=PoolSettings(scrape_interval_s=0, service_s=1.0))
    results: dict[str, list[float]] = {"idle pool": [], "first two busy (spill)": []}
    for _ in range(args.rounds):
        for replica in (r for b in pool.backends.values() for r in b.replicas):
            replica.in_flight = 0
        results["idle pool"].append(await timed(pool, decisions, chains, args.calls))
        # Every replica of each decision's first two choices holds 8 on 4 slots: a 1.25 s wait, over budget.
        busy = {m for d in decisions[:1] for m in (d.model, d.fallbacks()[0])}
        for name in busy:
            for replica in pool[name].replicas:
                replica.in_flight = 8
        results["first two busy (spill)"].append(await timed(pool, decisions[:1], chains[:1], args.calls))
    await pool.aclose()
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}; {args.calls} calls x {args.rounds} rounds")
    for case, values in results.items():
        print(f"{case:<26} median {statistics.median(values):7.1f} us per decision "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.admission_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7)
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
