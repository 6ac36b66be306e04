"""Decision latency (policy only, no embedding) against the number of clusters and the number of backends.

    .venv/bin/python -m bench.scaling [--queries 300]

Synthetic artifacts (bench/harness/synthetic.py: the routing core's own table builder and writer) with k clusters
(8 to 1024, 7 models) and m backends (2 to 64, k = 64), 5,000 reference rows each. For each: p50/p99 of one
decision at a time (what one request costs the router after embedding) and the per-decision time in
batches of 64 (what the micro-batcher's batches cost).

First, one row pair at k = 64, m = 7 with OpenBLAS's default thread pool and with one thread: on a shared
two-core machine the default pool's threads wait on each other and on their neighbours, and a (1 x 384) by
(384 x 5000) product that takes well under a millisecond can take tens. The grid runs with one BLAS thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench.harness.outcomes import percentile
from bench.harness.synthetic import EMBEDDER_DIM, unit_rows, write_synthetic_artifact
from router.policy import Policy

CLUSTERS = (8, 32, 128, 256, 512, 1024)
BACKENDS = (2, 4, 8, 16, 32, 64)


def measure(k: int, m: int, queries: int, workdir: Path) -> str:
    models = [f"model-{j:02d}" for j in range(m)]
    artifact = write_synthetic_artifact(workdir / f"k{k}-m{m}", k=k, models=models, n_reference=5000)
    policy = Policy(artifact)
    rng = np.random.default_rng(1)
    x = unit_rows(rng, queries, EMBEDDER_DIM)
    for i in range(10):  # warm caches and BLAS
        policy.decide(x[i:i + 1], 0.5)
    single = []
    for i in range(queries):
        started = time.perf_counter()
        policy.decide(x[i:i + 1], 0.5)
        single.append(time.perf_counter() - started)
    batches = [x[i:i + 64] for i in range(0, queries - 63, 64)]
    started = time.perf_counter()
    for batch in batches:
        policy.decide(batch, 0.5)
    per_decision = (time.perf_counter() - started) / (64 * len(batches))
    return (f"{k:>6}{m:>6}{percentile(single, 0.5) * 1000:>10.3f}{percentile(single, 0.99) * 1000:>10.3f}"
            f"{per_decision * 1000:>12.3f}{1 / per_decision:>12.0f}")


def grid(queries: int, tmp: Path, header: str) -> None:
    print("\nclusters (m = 7)\n" + header, flush=True)
    for k in CLUSTERS:
        print(measure(k, 7, queries, tmp), flush=True)
    print("\nbackends (k = 64)\n" + header, flush=True)
    for m in BACKENDS:
        print(measure(64, m, queries, tmp), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    header = f"{'k':>6}{'m':>6}{'p50 ms':>10}{'p99 ms':>10}{'batch ms/q':>12}{'batch q/s':>12}"
    with tempfile.TemporaryDirectory(prefix="triage-scaling-") as tmp:
        print("BLAS threads: library default, then 1 (k = 64, m = 7)\n" + header, flush=True)
        print(measure(64, 7, args.queries, Path(tmp)), flush=True)
        with threadpool_limits(1):
            print(measure(64, 7, args.queries, Path(tmp)), flush=True)
            grid(args.queries, Path(tmp), header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
