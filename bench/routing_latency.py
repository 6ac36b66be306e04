"""How long Triage takes to decide: ``POST /v1/route`` over HTTP for each embedder, side by side in one run.

    .venv/bin/python -m bench.routing_latency [--sequential 300] [--per-level 2000] [--embedders onnx,openvino,static]

For each embedder configuration, ``triage serve`` runs in its own process (fake backends: nothing is generated)
with its own artifact calibrated from RouterDC's train rows:

- ``onnx``: all-MiniLM-L6-v2 exported to ONNX (the vectors of the torch backend), artifact fitted on it;
- ``openvino``: that export on OpenVINO, bfloat16 on this CPU (the shipped configs' backend), same artifact;
- ``int8``: that export quantised to int8 (its own vectors), artifact fitted on it;
- ``static``: the model2vec table distilled from it, artifact fitted on it, OOD by the static vectors alone;
- ``tiered``: static for clusters, table and most OOD calls, the ONNX MiniLM re-scoring the close ones
  (``--refine-ood``); ``torch`` is available too.

Queries are RouterDC test queries, each used once (no embedding-cache hits): "short" ones (at most 32
MiniLM tokens: 100 characters of Chinese are ~100 tokens, of English ~25; the pool reused in order, the
router's embedding cache off) and all of them (median ~200 characters,
up to 2,000). Printed per configuration: p50/p99 of one
request at a time, then p50/p99 and decisions/s at 1, 8, 32 and 128 concurrent keep-alive clients (the lean
client in bench/harness/rawhttp.py: httpx would saturate its own core first), and the router's RSS afterwards.
The share of decisions the refine tier re-scored is the router's own ``triage_ood_refined_total``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.harness.fleet import metric_values
from bench.harness.load import load_queries
from bench.harness.outcomes import percentile
from bench.harness.rawhttp import run
from bench.harness.stack import CALIBRATE_FLAGS, BenchStack, ensure_artifact

LEVELS = (1, 8, 32, 128)
MODELS = Path(__file__).resolve().parents[1] / "models"  # written by scripts/setup-router.sh
SHORT_TOKENS = 32  # MiniLM WordPiece tokens, [CLS] and [SEP] included
# The router's embedder settings per configuration, and the artifact (bench.stack.CALIBRATE_FLAGS) each needs.
CONFIGS: dict[str, tuple[dict[str, object], str]] = {
    "torch": ({"backend": "torch"}, "minilm"),
    "onnx": ({"backend": "onnx", "onnx_path": str(MODELS / "minilm-onnx")}, "minilm"),
    "openvino": ({"backend": "openvino", "onnx_path": str(MODELS / "minilm-onnx")}, "minilm"),
    "int8": ({"backend": "onnx", "onnx_path": str(MODELS / "minilm-onnx-int8"), "name": "all-MiniLM-L6-v2-int8"},
             "int8"),
    "static": ({"backend": "static", "static_path": str(MODELS / "minilm-static")}, "static"),
    "tiered": ({"backend": "static", "static_path": str(MODELS / "minilm-static"), "refine_backend": "onnx",
                "onnx_path": str(MODELS / "minilm-onnx")}, "tiered"),
}


def short_queries(queries: list[str]) -> list[str]:
    """Those of at most ``SHORT_TOKENS`` MiniLM tokens (the export's tokenizer, as the router counts them)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MODELS / "minilm-onnx" / "tokenizer.json"))
    tokenizer.no_padding()
    return [q for q in queries if len(tokenizer.encode(q).ids) <= SHORT_TOKENS]


def bodies(queries: list[str]) -> Iterator[dict[str, object]]:
    for query in queries:
        yield {"model": "triage", "messages": [{"role": "user", "content": query}]}


def line(label: str, latencies: list[float], wall: float | None = None) -> str:
    rate = f"{len(latencies) / wall:10.0f}" if wall else f"{'':>10}"
    return (f"{label:<44}{len(latencies):>6}{percentile(latencies, 0.5) * 1000:>10.2f}"
            f"{percentile(latencies, 0.99) * 1000:>10.2f}{rate}")


def refined(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics").text
    return (sum(metric_values(text, "triage_ood_refined_total").values()),
            sum(metric_values(text, "triage_decision_seconds_count").values()))


def measure(name: str, artifact: Path, workdir: Path, short: Iterator[dict[str, object]],
            long: Iterator[dict[str, object]], sequential: int, per_level: int, threads: int = 1) -> list[str]:
    # No embedding cache: the short pool is reused, and a cache hit would measure a dictionary lookup.
    settings = {**CONFIGS[name][0], "cache_size": 0, "threads": threads}
    label = name if threads == 1 else f"{name} ({threads} threads)"
    lines = []
    with BenchStack(artifact, workdir / f"{name}-{threads}", health={"probe_interval_s": 0},
                    embedder=settings) as stack:
        url = stack.triage.url
        run(url, "/v1/route", short, 1, 50)  # warm-up
        for kind, source in (("short", short), ("all", long)):
            latencies, _ = run(url, "/v1/route", source, 1, sequential)
            lines.append(line(f"{label}: {kind} queries, one at a time", latencies))
        for level in LEVELS:
            latencies, wall = run(url, "/v1/route", short, level, max(per_level, 4 * level))
            lines.append(line(f"{label}: short, {level} concurrent clients", latencies, wall))
        latencies, wall = run(url, "/v1/route", long, 32, min(per_level, 500))
        lines.append(line(f"{label}: all, 32 concurrent clients", latencies, wall))
        done, decisions = refined(url)
        if done:
            lines.append(f"{label}: the refine tier re-scored {done:.0f} of {decisions:.0f} decisions "
                         f"({100 * done / decisions:.0f} %)")
        lines.append(f"{label}: router RSS after the runs: {stack.triage.rss_mib():.0f} MiB")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--per-level", type=int, default=2000, help="decisions per concurrency level")
    parser.add_argument("--embedders", default="onnx,openvino,int8,static,tiered")
    parser.add_argument("--artifacts", default="var/bench/artifacts", help="one calibrated artifact per embedder")
    parser.add_argument("--workdir", default="var/bench/routing")
    parser.add_argument("--threads", default="1", help="model threads to compare, comma-separated (e.g. 1,2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.embedders.split(",")
    unknown = set(names) - set(CONFIGS)
    if unknown:
        print(f"unknown embedders: {', '.join(sorted(unknown))} (choose from {', '.join(CONFIGS)})", file=sys.stderr)
        return 2
    # Artifacts: MiniLM's serves torch and onnx alike (same vectors).
    artifacts = {n: ensure_artifact(Path(args.artifacts) / CONFIGS[n][1], flags=CALIBRATE_FLAGS[CONFIGS[n][1]])
                 for n in names}
    everything = load_queries(20_000, seed=3)
    short_pool = short_queries(everything)
    lines = [f"{'path':<44}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'dec/s':>10}"]
    for name in names:
        for threads in (int(t) for t in args.threads.split(",")):
            # Every configuration gets the same queries in the same order: a side-by-side comparison.
            lines += measure(name, artifacts[name], Path(args.workdir), bodies(short_pool * 20),
                             bodies(everything), args.sequential, args.per_level, threads)
            print("\n".join(lines[-9:]), flush=True)
    print(f"\nshort queries: {len(short_pool)} distinct RouterDC test queries of at most {SHORT_TOKENS} tokens "
          "(reused in order; the router's embedding cache is off)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
