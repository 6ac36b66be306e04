"""How long Triage takes to decide: ``POST /v1/route`` over HTTP, and the in-process decision path alone.

    .venv/bin/python -m bench.routing_latency [--sequential 200] [--per-level 256]

Over HTTP (``triage serve`` in its own process, the default embedder, every prompt new so the embedding
cache never answers): p50/p99 of one request at a time, then at 1, 8, 32 and 128 concurrent clients with
decisions/s; the router's RSS. In process (same model, same artifact, no HTTP): embed + policy for one
query at a time, the policy alone, and embed + policy for a batch of 64 (what the micro-batcher does
under load).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from threadpoolctl import threadpool_limits

from bench.load import load_queries
from bench.outcomes import percentile
from bench.stack import BenchStack, ensure_artifact

LEVELS = (1, 8, 32, 128)


async def over_http(url: str, prompts: Iterator[str], concurrency: int, requests: int) -> tuple[list[float], float]:
    """Latencies (s) of ``requests`` decisions sent by ``concurrency`` clients, and the wall time."""
    latencies: list[float] = []
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one_client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                body = {"model": "triage", "messages": [{"role": "user", "content": next(prompts)}]}
                started = time.perf_counter()
                response = await client.post("/v1/route", json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def line(label: str, latencies: list[float], wall: float | None = None) -> str:
    rate = f"{len(latencies) / wall:10.0f}" if wall else f"{'':>10}"
    return (f"{label:<40}{len(latencies):>6}{percentile(latencies, 0.5) * 1000:>10.2f}"
            f"{percentile(latencies, 0.99) * 1000:>10.2f}{rate}")


def in_process(artifact: Path, prompts: Iterator[str], n: int) -> list[str]:
    from router.artifact import Artifact
    from router.embedder import Embedder
    from router.policy import Policy

    embedder = Embedder()  # the router's defaults: one torch thread
    artifact_obj = Artifact.load(artifact, embedder_name=embedder.name, embedder_dim=embedder.dim)
    policy = Policy(artifact_obj)
    for _ in range(10):  # warm up the model
        policy.decide(embedder.encode([next(prompts)]), 0.5)
    whole, policy_only = [], []
    for _ in range(n):
        started = time.perf_counter()
        vector = embedder.encode([next(prompts)])
        embedded = time.perf_counter()
        policy.decide(vector, 0.5)
        done = time.perf_counter()
        whole.append(done - started)
        policy_only.append(done - embedded)
    batch = [next(prompts) for _ in range(64 * 8)]
    started = time.perf_counter()
    for i in range(0, len(batch), 64):
        policy.decide(embedder.encode(batch[i:i + 64]), np.full(64, 0.5))
    wall = time.perf_counter() - started
    per_decision = [wall / len(batch)] * len(batch)
    # The same policy with one BLAS thread: OpenBLAS's default pool contends on a busy two-core machine.
    with threadpool_limits(1):
        one_thread = []
        for _ in range(n):
            vector = embedder.encode([next(prompts)])
            started = time.perf_counter()
            policy.decide(vector, 0.5)
            one_thread.append(time.perf_counter() - started)
    return [line("in process: embed + policy, one query", whole),
            line("in process: policy alone, one query", policy_only),
            line("in process: policy alone, 1 BLAS thread", one_thread),
            line("in process: embed + policy, batches of 64", per_decision, wall)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--per-level", type=int, default=256, help="decisions per concurrency level")
    parser.add_argument("--artifact", default="var/bench/artifact")
    parser.add_argument("--workdir", default="var/bench/routing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    artifact = ensure_artifact(Path(args.artifact))
    prompts = iter(load_queries(20_000, seed=3))  # each prompt is used once: no embedding-cache hits
    header = f"{'path':<40}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'dec/s':>10}"
    lines = [header]
    with BenchStack(artifact, Path(args.workdir), health={"probe_interval_s": 0}) as stack:
        url = stack.triage.url
        asyncio.run(over_http(url, prompts, 1, 20))  # warm-up
        latencies, _ = asyncio.run(over_http(url, prompts, 1, args.sequential))
        lines.append(line("HTTP /v1/route, sequential", latencies))
        for level in LEVELS:
            requests = max(args.per_level, 4 * level)
            latencies, wall = asyncio.run(over_http(url, prompts, level, requests))
            lines.append(line(f"HTTP /v1/route, {level} concurrent clients", latencies, wall))
        rss = stack.triage.rss_mib()
    lines += in_process(artifact, prompts, args.sequential)
    lines.append(f"router RSS after the HTTP runs: {rss:.0f} MiB")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
