"""The embedders alone, in this process: one short query at a time and batches of 32, side by side.

    .venv/bin/python -m bench.embedder_speed [--threads 1] [--backends onnx,openvino,...]

No HTTP and no router: what each backend's ``encode`` costs on RouterDC test queries of at most 32 MiniLM
tokens (``bench.routing_latency``'s "short" pool), each backend warmed on the same 100 queries first, then
timed on the same 300 one at a time and 1,024 in batches of 32. Also printed: the cosine of each backend's
vectors to sentence-transformers' (torch) on those queries, and for OpenVINO two more runs: without the model
compiled for one 32-token query (``openvino-dynamic``: every shape on the dynamic model), and with each batch
padded only to its longest text (``openvino-unpadded``, ``pad_multiple = 1``) instead of to a multiple of 32
tokens, which is what the padding buys (OpenVINO re-plans a compiled model whenever the input shape changes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from bench.harness.load import load_queries
from bench.routing_latency import MODELS, SHORT_TOKENS, short_queries


def encoders(threads: int) -> dict[str, Callable[[], object]]:
    from router.embedder import Embedder
    from router.onnx_embedder import OnnxEmbedder
    from router.openvino_embedder import OpenVinoEmbedder
    from router.settings import EmbedderSettings
    from router.static_embedder import StaticEmbedder

    settings = EmbedderSettings(threads=threads)

    class Unpadded(OpenVinoEmbedder):
        pad_multiple = 1

    class DynamicOnly(OpenVinoEmbedder):
        single_shape = False

    return {
        "torch": lambda: Embedder(settings),
        "onnx": lambda: OnnxEmbedder(MODELS / "minilm-onnx", settings),
        "openvino": lambda: OpenVinoEmbedder(MODELS / "minilm-onnx", settings),
        "openvino-dynamic": lambda: DynamicOnly(MODELS / "minilm-onnx", settings),
        "openvino-unpadded": lambda: Unpadded(MODELS / "minilm-onnx", settings),
        "openvino-f32": lambda: OpenVinoEmbedder(MODELS / "minilm-onnx",
                                                 settings.model_copy(update={"precision": "f32"})),
        "int8": lambda: OnnxEmbedder(MODELS / "minilm-onnx-int8",
                                     settings.model_copy(update={"name": "all-MiniLM-L6-v2-int8"})),
        "static": lambda: StaticEmbedder(MODELS / "minilm-static", settings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedder_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="model threads (the shipped configs use 1)")
    parser.add_argument("--backends",
                        default="torch,onnx,openvino,openvino-dynamic,openvino-unpadded,openvino-f32,int8,static")
    args = parser.parse_args(argv)
    short = short_queries(load_queries(20_000, seed=3))
    warm, single, batched = short[:100], short[100:400], (short * 2)[:1024]
    makers = encoders(args.threads)
    reference = None
    print(f"{len(short)} short RouterDC test queries (≤ {SHORT_TOKENS} tokens); {args.threads} model thread(s)")
    print(f"{'backend':<20}{'single p50 ms':>14}{'p99 ms':>10}{'batch 32 /s':>13}{'min cos to torch':>18}")
    for name in args.backends.split(","):
        encoder = makers[name]()
        for query in warm:
            encoder.encode([query])  # type: ignore[attr-defined]
        times = []
        for query in single:
            started = time.perf_counter()
            encoder.encode([query])  # type: ignore[attr-defined]
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(0, len(batched), 32):
            encoder.encode(batched[i:i + 32], batch_size=32)  # type: ignore[attr-defined]
        rate = len(batched) / (time.perf_counter() - started)
        vectors = np.asarray(encoder.encode(single), dtype=np.float32)  # type: ignore[attr-defined]
        if name == "torch":
            reference = vectors
        cosine = "" if reference is None or vectors.shape != reference.shape else \
            f"{float((vectors * reference).sum(axis=1).min()):.5f}"
        print(f"{name:<20}{statistics.median(times) * 1000:>14.2f}{np.quantile(times, 0.99) * 1000:>10.2f}"
              f"{rate:>13.0f}{cosine:>18}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
