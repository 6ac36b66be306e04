"""The routing decision itself, in this process: the router's ``Decider`` (embed + policy), no HTTP.

    .venv/bin/python -m bench.decider_speed [--threads 1,2] [--backend openvino] [--requests 2000]

What the router's ``triage_decision_seconds`` histogram measures for each request: from handing the query to
the decider to having its decision (queueing, the hop to the worker thread, embedding, the policy), with the
real embedder on the bench's MiniLM artifact (``var/bench/artifacts/minilm``) and RouterDC test queries of at
most 32 tokens (``bench.routing_latency``'s "short" pool, each used once per phase, the embedding cache off).
One decision at a time, then 8, 32 and 128 concurrent callers on one event loop. Compare with
``bench.routing_latency`` (the same queries over HTTP) to see what HTTP, validation and the response add.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.load import load_queries
from bench.harness.stack import ensure_artifact
from bench.routing_latency import CONFIGS, SHORT_TOKENS, short_queries


async def measure(backend: str, threads: int, artifact: Path, queries: list[str], requests: int) -> list[str]:
    from threadpoolctl import threadpool_limits

    from router.artifact import Artifact
    from router.decider import Decider
    from router.embedding import load_encoder
    from router.policy import Policy
    from router.settings import EmbedderSettings

    settings = EmbedderSettings.model_validate({**CONFIGS[backend][0], "threads": threads, "cache_size": 0})
    encoder = load_encoder(settings)
    threadpool_limits(settings.blas_threads)  # as the router's app does: the policy's BLAS apart from the model
    policy = Policy(Artifact.load(artifact, embedder_name=encoder.name, embedder_dim=encoder.dim))
    decider = Decider(encoder, settings)
    await decider.start()
    texts = iter(queries * (1 + (requests * 5) // len(queries)))
    label = f"{backend}, {threads} thread{'s' if threads > 1 else ''}"
    lines = []
    try:
        for _ in range(50):  # warm-up
            await decider.decide(next(texts), policy, 1.0)
        times = []
        for _ in range(300):
            started = time.perf_counter()
            await decider.decide(next(texts), policy, 1.0)
            times.append(time.perf_counter() - started)
        lines.append(f"{label:<22}{'1':>8}{len(times):>7}{statistics.median(times) * 1e3:>9.2f}"
                     f"{np.quantile(times, 0.99) * 1e3:>9.2f}{len(times) / sum(times):>10.0f}")
        lines += await parts(encoder, policy, queries[:300], label)
        async def client(count: int, latencies: list[float]) -> None:
            for _ in range(count):
                started = time.perf_counter()
                await decider.decide(next(texts), policy, 1.0)
                latencies.append(time.perf_counter() - started)

        for clients in (8, 32, 128):
            latencies: list[float] = []
            started = time.perf_counter()
            await asyncio.gather(*(client(max(requests, 4 * clients) // clients, latencies) for _ in range(clients)))
            wall = time.perf_counter() - started
            lines.append(f"{label:<22}{clients:>8}{len(latencies):>7}{statistics.median(latencies) * 1e3:>9.2f}"
                         f"{np.quantile(latencies, 0.99) * 1e3:>9.2f}{len(latencies) / wall:>10.0f}")
    finally:
        await decider.stop()
    return lines


async def parts(encoder: Any, policy: Any, queries: list[str], label: str) -> list[str]:
    """One decision's parts, each timed alone on the same queries: the embedding, the whole policy, the kNN
    over the artifact's reference vectors inside it (its one matrix-vector product reads every reference
    vector), and the round trip to a worker thread that the Decider makes per batch."""
    from router.ood import knn

    a = policy.artifact
    vectors = encoder.encode(queries)

    def median_ms(call: Callable[[int], object]) -> float:
        times = []
        for i in range(len(queries)):
            started = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e3

    async def hop_ms() -> float:
        # The Decider's own kind of hop: a one-thread executor of its own, not asyncio's default pool.
        loop = asyncio.get_running_loop()
        times = []
        with ThreadPoolExecutor(max_workers=1) as thread:
            for _ in range(len(queries)):
                started = time.perf_counter()
                await loop.run_in_executor(thread, lambda: None)
                times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e3

    ref = a.reference
    rows = [("embedding (encoder.encode, one query)", median_ms(lambda i: encoder.encode([queries[i]]))),
            ("policy (Policy.decide, one vector)", median_ms(lambda i: policy.decide(vectors[i:i + 1], 1.0))),
            (f"  of which the kNN over {ref.shape[0]:,} x {ref.shape[1]} references ({ref.nbytes / 2**20:.1f} MiB)",
             median_ms(lambda i: knn(vectors[i:i + 1], ref, max(a.ood_k, a.knn_k)))),
            ("hop to a one-thread executor and back (as the Decider)", await hop_ms())]
    return [f"{label:<22}  part: {name:<64}{ms:>7.3f} ms p50" for name, ms in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decider_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="openvino", choices=("torch", "onnx", "openvino"))
    parser.add_argument("--threads", default="1,2", help="model threads to compare, comma-separated")
    parser.add_argument("--requests", type=int, default=2000, help="decisions per concurrency level")
    parser.add_argument("--artifact", default="var/bench/artifacts/minilm")
    args = parser.parse_args(argv)
    artifact = ensure_artifact(Path(args.artifact))
    short = short_queries(load_queries(20_000, seed=3))
    print(f"{len(short)} short RouterDC test queries (≤ {SHORT_TOKENS} tokens), the router's Decider in process")
    print(f"{'embedder':<22}{'callers':>8}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'dec/s':>10}", flush=True)
    for threads in (int(t) for t in args.threads.split(",")):
        for line in asyncio.run(measure(args.backend, threads, artifact, short, args.requests)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
