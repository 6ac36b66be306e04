"""The router's own cost per decision, embedding aside: ``POST /v1/route`` with an embedder that costs nothing.

    .venv/bin/python -m bench.decision_path [--requests 4000] [--loop uvloop --http httptools]

The real app (``create_app``: settings, artifact, policy, metrics, decision path, error handling) under
uvicorn in a child process, with one thing swapped: the encoder returns a pseudo-random unit vector derived
from a hash of the text (microseconds), so what is left is HTTP parsing, validation, the decider's batching
and thread hop, the policy (kNN over the artifact's reference rows) and the response. Load from
``bench/harness/rawhttp.py``: one client, then 32. Compare with ``bench.routing_latency`` to see what the embedder
adds. The artifact is the bench one (``var/bench/artifacts/minilm``, calibrated on first use).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.harness.fleet import free_port
from bench.harness.outcomes import percentile
from bench.harness.rawhttp import run
from bench.harness.stack import artifact_models, ensure_artifact


class HashEncoder:
    """all-MiniLM-L6-v2's name and dimension, a hash's vectors: decisions are made, just not meaningful ones."""

    name, dim, max_tokens = "all-MiniLM-L6-v2", 384, 256

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = vector / np.linalg.norm(vector)
        return out


def serve(artifact: str, port: int, loop: str, http: str) -> None:
    import uvicorn
    from prometheus_client import CollectorRegistry

    from bench.harness.fleet import fleet_config
    from router.app import create_app
    from router.settings import Settings

    models, generalist = artifact_models(Path(artifact))
    urls = [f"http://127.0.0.1:9/{i}/v1" for i in range(len(models))]  # never called: /v1/route generates nothing
    config = fleet_config(artifact, models, generalist, urls, models, health={"probe_interval_s": 0})
    app = create_app(Settings.model_validate(config), registry=CollectorRegistry(), encoder=HashEncoder())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop=loop, http=http)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decision_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="at 32 clients (300 one at a time)")
    parser.add_argument("--artifact", default="var/bench/artifacts/minilm")
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    parser.add_argument("--http", default="httptools", choices=("httptools", "h11"))
    args = parser.parse_args(argv)
    artifact = str(ensure_artifact(Path(args.artifact)).resolve())
    port = free_port()
    child = multiprocessing.get_context("spawn").Process(target=serve, args=(artifact, port, args.loop, args.http))
    child.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not child.is_alive():
                print("the router did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
        bodies = ({"model": "triage", "messages": [{"role": "user", "content": f"question {i} about algebra"}]}
                  for i in range(10**9))
        run(url, "/v1/route", bodies, 1, 100)  # warm-up
        print(f"{'clients':<10}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'dec/s':>10}   ({args.loop}, {args.http})")
        for clients, requests in ((1, 300), (32, args.requests)):
            latencies, wall = run(url, "/v1/route", bodies, clients, requests)
            print(f"{clients:<10}{len(latencies):>6}{percentile(latencies, 0.5) * 1000:>10.2f}"
                  f"{percentile(latencies, 0.99) * 1000:>10.2f}{len(latencies) / wall:>10.0f}")
    finally:
        child.terminate()
        child.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
