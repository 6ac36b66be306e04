"""The embedder side by side: sentence-transformers on torch vs its ONNX export on onnxruntime.

    .venv/bin/python -m bench.embedder [--single 300] [--batch-rounds 3] [--onnx-dir var/cache/onnx/minilm]

Each configuration (torch 1 thread, onnxruntime 1 thread, onnxruntime 2 threads) runs in its own spawned
process, so thread settings do not leak between them and each RSS is its own. The parent sends the same
work to every process in turn, query by query and round by round, so all rows see the same machine noise.
Queries are routerdc test queries (``bench.load.load_queries``), each timed once per configuration:
single-query p50/p99 for all of them and for the short ones (<= 80 characters), then sentences/s in batches
of 64. RSS is the process's after the run. The ONNX model is exported first if it is not there (cached).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.load import load_queries
from bench.outcomes import percentile


@dataclass(frozen=True)
class Config:
    label: str
    backend: str  # "torch" | "onnx"
    threads: int


CONFIGS = (Config("torch fp32, 1 thread", "torch", 1), Config("onnxruntime fp32, 1 thread", "onnx", 1),
           Config("onnxruntime fp32, 2 threads", "onnx", 2))
SHORT_CHARS = 80


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker(config: Config, onnx_dir: str, conn: Connection) -> None:
    """Builds one encoder, then times what the parent sends: ("one", text), ("batch", texts), ("rss",), ("stop",)."""
    from router.settings import EmbedderSettings

    settings = EmbedderSettings(threads=config.threads)
    encoder: Any
    if config.backend == "onnx":
        from router.onnx_embedder import OnnxEmbedder

        encoder = OnnxEmbedder(onnx_dir, settings)
    else:
        from router.embedder import Embedder

        encoder = Embedder(settings)
    encoder.encode(["warm up the model", "and its allocator with a batch"] * 8)
    conn.send("ready")
    while True:
        command = conn.recv()
        if command[0] == "stop":
            return
        if command[0] == "rss":
            conn.send(_rss_mib())
            continue
        texts = [command[1]] if command[0] == "one" else command[1]
        started = time.perf_counter()
        encoder.encode(texts, batch_size=64)
        conn.send(time.perf_counter() - started)


class Workers:
    def __init__(self, configs: tuple[Config, ...], onnx_dir: Path) -> None:
        context = mp.get_context("spawn")  # a fresh interpreter each: the ONNX process never imports torch
        self.conns: list[Connection] = []
        self.processes = []
        for config in configs:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(config, str(onnx_dir), child), daemon=True)
            process.start()
            self.conns.append(parent)
            self.processes.append(process)
        for conn in self.conns:
            if conn.recv() != "ready":
                raise RuntimeError("a benchmark worker failed to start")

    def each(self, command: tuple[Any, ...], rotate: int) -> list[float]:
        """Sends ``command`` to every worker, one after another (starting with a rotating one), and collects."""
        results = [0.0] * len(self.conns)
        for step in range(len(self.conns)):
            i = (rotate + step) % len(self.conns)
            self.conns[i].send(command)
            results[i] = self.conns[i].recv()
        return results

    def close(self) -> None:
        for conn, process in zip(self.conns, self.processes, strict=True):
            conn.send(("stop",))
            process.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=300, help="single queries per configuration (and short ones)")
    parser.add_argument("--batch-rounds", type=int, default=3, help="rounds of 256 queries in batches of 64")
    parser.add_argument("--onnx-dir", default="var/cache/onnx/minilm")
    args = parser.parse_args(argv)

    from router.onnx_export import export

    onnx_dir = export(args.onnx_dir)
    queries = load_queries(20_000, seed=11)
    short = [q for q in queries if len(q) <= SHORT_CHARS][: args.single]
    taken = set(short)
    rest = [q for q in queries if q not in taken]
    single = rest[: args.single]
    batches = [rest[args.single + 256 * r: args.single + 256 * (r + 1)] for r in range(args.batch_rounds)]

    workers = Workers(CONFIGS, onnx_dir)
    try:
        # (all, short) latencies per config
        one: tuple[list[list[float]], list[list[float]]] = [[] for _ in CONFIGS], [[] for _ in CONFIGS]
        for kind, texts in enumerate((single, short)):
            for i, text in enumerate(texts):
                for c, seconds in enumerate(workers.each(("one", text), i)):
                    one[kind][c].append(seconds)
        batch_time = [0.0] * len(CONFIGS)
        for r, texts in enumerate(batches):
            for c, seconds in enumerate(workers.each(("batch", texts), r)):
                batch_time[c] += seconds
        rss = workers.each(("rss",), 0)
    finally:
        workers.close()

    sentences = sum(len(b) for b in batches)
    print(f"{len(single)} routerdc test queries (median {statistics.median(map(len, single)):.0f} chars), "
          f"{len(short)} short ones (<= {SHORT_CHARS} chars, median {statistics.median(map(len, short)):.0f}), "
          f"{sentences} in batches of 64 (median {statistics.median(len(q) for b in batches for q in b):.0f} chars)")
    header = (f"{'configuration':<30}{'p50 ms':>9}{'p99 ms':>9}{'short p50':>11}{'short p99':>11}"
              f"{'batch sent/s':>14}{'RSS MiB':>9}")
    print(header)
    for c, config in enumerate(CONFIGS):
        print(f"{config.label:<30}{percentile(one[0][c], 0.5) * 1000:>9.2f}{percentile(one[0][c], 0.99) * 1000:>9.2f}"
              f"{percentile(one[1][c], 0.5) * 1000:>11.2f}{percentile(one[1][c], 0.99) * 1000:>11.2f}"
              f"{sentences / batch_time[c]:>14.0f}{rss[c]:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
