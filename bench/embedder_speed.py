"""The embedders alone, in this process: one short query at a time and batches of 32, side by side.

    .venv/bin/python -m bench.embedder_speed [--threads 1] [--backends onnx,openvino,...]

No HTTP and no router: what each backend's ``encode`` costs on RouterDC test queries of at most 32 MiniLM
tokens (``bench.routing_latency``'s "short" pool), each backend warmed on the same 100 queries first, then
timed on the same 300 one at a time and 1,024 in batches of 32. Also printed: the cosine of each backend's
vectors to sentence-transformers' (torch) on those queries, and for OpenVINO two more runs: without the model
compiled for one 32-token query (``openvino-dynamic``: every shape on the dynamic model), and with each batch
padded only to its longest text (``openvino-unpadded``, ``pad_multiple = 1``) instead of to a multiple of 32
tokens, which is what the padding buys (OpenVINO re-plans a compiled model whenever the input shape changes).

``--mix``: the real query mix instead (all RouterDC test queries, median ~200 characters), in batches of 32 as
32 clients hand them to the decider, for the backends named (default ``openvino-rows,openvino``), in
interleaved rounds so that a busy machine slows each alike. ``openvino-rows`` batches as the embedder did
before length-aware batching: sorted by length, cut only by row count and attention size, so a batch pads
to its longest member.
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
    from router.embedding import clip, load_encoder
    from router.embedding.batching import MAX_ATTENTION_CELLS
    from router.embedding.openvino import OpenVinoEmbedder
    from router.settings import EmbedderSettings

    settings = EmbedderSettings(threads=threads, onnx_path=str(MODELS / "minilm-onnx"),
                                static_path=str(MODELS / "minilm-static"))

    class Unpadded(OpenVinoEmbedder):
        pad_multiple = 1

    class DynamicOnly(OpenVinoEmbedder):
        single_shape = False

    class ByRows(OpenVinoEmbedder):
        def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            ids = [self._tokenizer.encode(clip(text, self.max_tokens)).ids for text in texts]
            chunk: list[int] = []
            for i in sorted(range(len(texts)), key=lambda i: len(ids[i])):
                if chunk and (len(chunk) == batch_size or (len(chunk) + 1) * len(ids[i]) ** 2 > MAX_ATTENTION_CELLS):
                    out[chunk] = self._run([ids[j] for j in chunk])
                    chunk = []
                chunk.append(i)
            if chunk:
                out[chunk] = self._run([ids[j] for j in chunk])
            return out

    return {
        "torch": lambda: load_encoder(settings, "torch"),
        "onnx": lambda: load_encoder(settings, "onnx"),
        "openvino": lambda: load_encoder(settings, "openvino"),
        "openvino-dynamic": lambda: DynamicOnly(settings.model_copy(update={"backend": "openvino"})),
        "openvino-unpadded": lambda: Unpadded(settings.model_copy(update={"backend": "openvino"})),
        "openvino-rows": lambda: ByRows(settings.model_copy(update={"backend": "openvino"})),
        "openvino-f32": lambda: load_encoder(settings.model_copy(update={"precision": "f32"}), "openvino"),
        "int8": lambda: load_encoder(settings.model_copy(update={
            "name": "all-MiniLM-L6-v2-int8", "onnx_path": str(MODELS / "minilm-onnx-int8")}), "onnx"),
        "static": lambda: load_encoder(settings, "static"),
    }


DEFAULT = "torch,onnx,openvino,openvino-dynamic,openvino-unpadded,openvino-f32,int8,static"


def mix(threads: int, names: list[str], rounds: int) -> int:
    queries = load_queries(20_000, seed=3)
    makers = encoders(threads)
    built = {name: makers[name]() for name in names}
    for encoder in built.values():
        encoder.encode(queries[:64])  # type: ignore[attr-defined]
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        batch = queries[64 + 256 * r:64 + 256 * (r + 1)]  # each round new queries, the same for every backend
        for name, encoder in built.items():
            started = time.perf_counter()
            for i in range(0, len(batch), 32):
                encoder.encode(batch[i:i + 32])  # type: ignore[attr-defined]
            rates[name].append(len(batch) / (time.perf_counter() - started))
    print(f"real RouterDC query mix, batches of 32, {rounds} interleaved rounds of 256; {threads} model thread(s)")
    print(f"{'backend':<20}{'queries/s (median)':>20}   rounds")
    for name, values in rates.items():
        print(f"{name:<20}{statistics.median(values):>20.1f}   {' '.join(f'{v:.1f}' for v in values)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedder_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="model threads (the shipped configs use 1)")
    parser.add_argument("--backends", default=DEFAULT)
    parser.add_argument("--mix", action="store_true", help="the real query mix in batches of 32 (see above)")
    parser.add_argument("--rounds", type=int, default=3, help="--mix: interleaved rounds of 256 queries")
    args = parser.parse_args(argv)
    if args.mix:
        return mix(args.threads, (args.backends if args.backends != DEFAULT else "openvino-rows,openvino").split(","),
                   args.rounds)
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
