"""How long Triage takes to decide: ``POST /v1/route`` over HTTP for each embedder, side by side in one run.

    .venv/bin/python -m bench.routing_latency [--sequential 300] [--per-level 2000] [--embedders onnx,openvino,static]
    .venv/bin/python -m bench.routing_latency --embedders openvino --workers 1,2 --threads 1,2 --mix-only
    .venv/bin/python -m bench.routing_latency --embedders remote-fake,openvino --mix-only

For each embedder configuration, ``triage serve`` runs in its own process (fake backends: nothing is generated)
with its own artifact calibrated from RouterDC's train rows:

- ``onnx``: all-MiniLM-L6-v2 exported to ONNX (the vectors of the torch backend), artifact fitted on it;
- ``openvino``: that export on OpenVINO, bfloat16 on this CPU (the shipped configs' backend), same artifact;
- ``int8``: that export quantised to int8 (its own vectors), artifact fitted on it;
- ``static``: the model2vec table distilled from it, artifact fitted on it, OOD by the static vectors alone;
- ``tiered``: static for clusters, table and most OOD calls, the ONNX MiniLM re-scoring the close ones
  (``--refine-ood``); ``torch`` is available too;
- ``remote-fake``: the remote embedder (``backend: remote``, no fallback) on bench/harness/fake_embeddings.py, a
  service that answers at once with a hash-chosen unit vector. It measures the router process itself (HTTP,
  policy, the embedding call's JSON) when embedding costs nothing; the vectors carry MiniLM's name, so the
  MiniLM artifact loads, and the decisions are meaningless while their cost is real.

``--workers 1,2`` runs each configuration with that many ``triage serve`` worker processes on one port (every
``--threads`` value with every ``--workers`` value; more than one worker shares its state through a
redis-server started here, as ``serve`` requires). For the real query mix at 32 clients it reads the CPU time
the router's processes used (/proc) and prints the cores they kept busy and the decisions per CPU-second: the
throughput one core buys. The load generator and the fakes share the machine's cores with the router.
``--mix-only`` measures only the real query mix (one at a time and at 32 clients); the 32-client run of the mix
sends ``--per-level`` decisions.

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
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.harness.fake_embeddings import FakeEmbeddingsProcess
from bench.harness.fleet import metric_values
from bench.harness.load import load_queries
from bench.harness.outcomes import percentile
from bench.harness.rawhttp import run
from bench.harness.redis_server import RedisServer
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
    # The service's url is the fake's, filled in when it starts.
    "remote-fake": ({"backend": "remote", "model": "all-MiniLM-L6-v2", "remote_fallback": "none"}, "minilm"),
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


def line(label: str, latencies: list[float], wall: float | None = None, cpu: float | None = None) -> str:
    rate = f"{len(latencies) / wall:10.0f}" if wall else f"{'':>10}"
    per_core = f"{cpu / wall:8.2f}{len(latencies) / cpu:12.0f}" if wall and cpu else ""
    return (f"{label:<52}{len(latencies):>6}{percentile(latencies, 0.5) * 1000:>10.2f}"
            f"{percentile(latencies, 0.99) * 1000:>10.2f}{rate}{per_core}")


def refined(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics").text
    return (sum(metric_values(text, "triage_ood_refined_total").values()),
            sum(metric_values(text, "triage_decision_seconds_count").values()))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``triage serve``'s supervisor, its workers and their helpers), from /proc."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                todo += [int(child) for child in (task / "children").read_text().split()]
    return tree


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User plus system CPU time of each process so far (its threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for row in Path(f"/proc/{pid}/status").read_text().splitlines():
                if row.startswith("VmRSS:"):
                    total += int(row.split()[1])
    return total / 1024


def measure(name: str, artifact: Path, workdir: Path, short: Iterator[dict[str, object]],
            long: Iterator[dict[str, object]], sequential: int, per_level: int, threads: int = 1,
            workers: int = 1, mix_only: bool = False, window: int | None = None) -> list[str]:
    # No embedding cache: the short pool is reused, and a cache hit would measure a dictionary lookup.
    settings: dict[str, object] = {**CONFIGS[name][0], "cache_size": 0, "threads": threads,
                                   **({} if window is None else {"window": window})}
    label = name if (workers, threads) == (1, 1) else f"{name} {workers}w x {threads}t"
    label += "" if window is None else f" w{window}"
    run_dir = workdir / f"{name}-{threads}-{workers}-w{window}"
    lines = []
    with contextlib.ExitStack() as started:
        service = None
        if name == "remote-fake":
            service = FakeEmbeddingsProcess().start()
            started.callback(service.kill)
            settings["url"] = service.base_url
        extra: dict[str, Any] = {}
        redis = None
        if workers > 1:  # triage serve refuses several workers without shared state
            redis = started.enter_context(RedisServer(run_dir / "redis"))
            extra = {"state": {"redis_url": redis.url}, "server": {"workers": workers}}
        stack = started.enter_context(BenchStack(artifact, run_dir, health={"probe_interval_s": 0},
                                                 embedder=settings, **extra))
        url = stack.triage.url
        assert stack.triage.proc is not None
        run(url, "/v1/route", short, 1, 50)  # warm-up
        run(url, "/v1/route", short, 32, 200)  # and of every worker: 32 connections spread over them
        kinds = (("all", long),) if mix_only else (("short", short), ("all", long))
        for kind, source in kinds:
            latencies, _ = run(url, "/v1/route", source, 1, sequential)
            lines.append(line(f"{label}: {kind} queries, one at a time", latencies))
        for level in () if mix_only else LEVELS:
            latencies, wall = run(url, "/v1/route", short, level, max(per_level, 4 * level))
            lines.append(line(f"{label}: short, {level} concurrent clients", latencies, wall))
        router = process_tree(stack.triage.proc.pid)
        before, fake_before = cpu_seconds(router), cpu_seconds([service.proc.pid] if service and service.proc else [])
        commands = redis.commands() if redis else 0
        latencies, wall = run(url, "/v1/route", long, 32, per_level)
        after, fake_after = cpu_seconds(router), cpu_seconds(list(fake_before))
        used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
        lines.append(line(f"{label}: all, 32 concurrent clients", latencies, wall, sum(used.values())))
        busy = [f"{used[pid] / wall:.2f}" for pid in router if pid in used and used[pid] >= 0.01 * wall]
        lines.append(f"{label}: cores busy per router process in that run: {' + '.join(busy)}")
        if service is not None:
            fake = sum(fake_after.values()) - sum(fake_before.values())
            stats = httpx.get(service.root_url + "/fake/stats").json()
            per_call = stats["texts"] / max(1, sum(stats["paths"].values()))
            lines.append(f"{label}: the fake embedding service kept {fake / wall:.2f} cores busy (not counted "
                         f"above); {per_call:.1f} texts per embedding call over all the runs")
        if redis:
            lines.append(f"{label}: Redis commands per decision in that run: "
                         f"{(redis.commands() - commands) / len(latencies):.2f}")
        if workers == 1:  # /metrics is one worker's when there are several
            done, decisions = refined(url)
            if done:
                lines.append(f"{label}: the refine tier re-scored {done:.0f} of {decisions:.0f} decisions "
                             f"({100 * done / decisions:.0f} %)")
        lines.append(f"{label}: router RSS after the runs: {rss_mib(process_tree(stack.triage.proc.pid)):.0f} MiB"
                     + (f" (all {workers} workers and their supervisor)" if workers > 1 else ""))
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--per-level", type=int, default=2000, help="decisions per concurrency level")
    parser.add_argument("--embedders", default="onnx,openvino,int8,static,tiered")
    parser.add_argument("--artifacts", default="var/bench/artifacts", help="one calibrated artifact per embedder")
    parser.add_argument("--workdir", default="var/bench/routing")
    parser.add_argument("--threads", default="1", help="model threads to compare, comma-separated (e.g. 1,2)")
    parser.add_argument("--workers", default="1", help="router worker processes to compare, comma-separated "
                        "(e.g. 1,2); each with every --threads value")
    parser.add_argument("--windows", default="default", help="routing windows to compare, comma-separated tokens "
                        "(e.g. 256,64), each with its own artifact calibrated with --window; 'default': the "
                        "router's default window")
    parser.add_argument("--mix-only", action="store_true",
                        help="only the real query mix: one at a time and at 32 clients (no short-query rows)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.embedders.split(",")
    unknown = set(names) - set(CONFIGS)
    if unknown:
        print(f"unknown embedders: {', '.join(sorted(unknown))} (choose from {', '.join(CONFIGS)})", file=sys.stderr)
        return 2
    windows = [None if w == "default" else int(w) for w in args.windows.split(",")]
    # Artifacts: MiniLM's serves torch and onnx alike (same vectors); one per routing window.
    artifacts = {(n, w): ensure_artifact(Path(args.artifacts) / (CONFIGS[n][1] + ("" if w is None else f"-w{w}")),
                                         flags=CALIBRATE_FLAGS[CONFIGS[n][1]] + (() if w is None
                                                                                 else ("--window", str(w))))
                 for n in names for w in windows}
    load_before = os.getloadavg()
    everything = load_queries(20_000, seed=3)
    short_pool = short_queries(everything)
    header = (f"{'path':<52}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'dec/s':>10}{'cores':>8}{'dec/core-s':>12}")
    lines = [header]
    for name, window in artifacts:
        for threads in (int(t) for t in args.threads.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                # Every configuration gets the same queries in the same order: a side-by-side comparison.
                measured = measure(name, artifacts[name, window], Path(args.workdir), bodies(short_pool * 20),
                                   bodies(everything), args.sequential, args.per_level, threads, workers,
                                   args.mix_only, window)
                lines += measured
                print("\n".join([header, *measured]), flush=True)
    if not args.mix_only:
        print(f"\nshort queries: {len(short_pool)} distinct RouterDC test queries of at most {SHORT_TOKENS} tokens "
              "(reused in order; the router's embedding cache is off)")
    print("Nw x Mt: N router worker processes of M model threads each. "
          f"cores: CPU-seconds of the router's processes / wall seconds in the all-queries 32-client run; "
          f"dec/core-s: its decisions per router CPU-second. {os.cpu_count()} CPUs; load average before: "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
