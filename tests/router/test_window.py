"""The routing text is cut to the encoder's window before tokenisation: the same vectors for real queries,
bounded work for huge prompts, and small requests keep their routing latency while huge ones are in flight."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from router.decider import Decider
from router.embedding import char_bound, clip
from router.embedding.onnx import OnnxEmbedder
from router.settings import EmbedderSettings

# ~199k characters of ordinary prose, as in the outside review's attack; each copy gets its own prefix below.
PROSE = ("Summarise the following report about the quarterly revenue of a mid-sized retailer, "
         "paying attention to seasonal effects and to the costs of logistics. ") * 1320


def timeit(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class NearestCentroid:
    """Stands in for Policy (whose cost is not in question here): the nearest of a few fixed directions."""

    def __init__(self, dim: int) -> None:
        self.centroids = np.random.default_rng(0).standard_normal((8, dim)).astype(np.float32)

    def decide(self, vectors: np.ndarray, knobs: np.ndarray, available: object = None,
               refine: object = None) -> list[int]:
        return [int(i) for i in np.argmax(vectors @ self.centroids.T, axis=1)]


@pytest.fixture(scope="module")
def onnx(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(EmbedderSettings(onnx_path=str(onnx_dir)))


def test_the_cut_keeps_every_real_querys_tokens(onnx: OnnxEmbedder, shared_data: Path) -> None:
    """Every query of the shared routing data reads the same tokens cut or uncut (the longest has ~4.9k
    characters, so some are cut)."""
    tokenizer = onnx._tokenizer
    cut = 0
    for file in sorted((shared_data / "routing").glob("*.jsonl")):
        queries = {json.loads(line)["query"] for line in file.read_text().split("\n") if line.strip()}
        for query in queries:
            if len(query) > char_bound(onnx.max_tokens):
                cut += 1
                assert tokenizer.encode(clip(query, onnx.max_tokens)).ids == tokenizer.encode(query).ids, query[:80]
    assert cut > 0


def test_a_huge_prompt_gets_the_vector_of_its_uncut_form_and_costs_a_window(onnx: OnnxEmbedder) -> None:
    assert len(PROSE) > 199_000 and char_bound(onnx.max_tokens) == 4096
    whole = onnx._run([onnx._tokenizer.encode(PROSE).ids])  # the full text tokenised, truncated to 256
    started = time.perf_counter()
    got = onnx.encode([PROSE])
    assert float(np.abs(got - whole).max()) == 0.0
    assert time.perf_counter() - started < 5  # tokenising the whole text alone took ~0.33 s here


async def test_small_requests_keep_routing_while_huge_prompts_are_in_flight(
    onnx: OnnxEmbedder, routing_queries: list[str]
) -> None:
    """20 clients keep sending ~199k-character prompts; a client sending short queries one at a time waits for
    about one model call of long text, not for the queue of huge prompts (before the cut and the order:
    19 ms became ~3 s on a quiet machine)."""
    decider = Decider(onnx, EmbedderSettings(cache_size=0))
    policy = NearestCentroid(onnx.dim)
    small = [q for q in routing_queries if len(q) < 200][:30]
    await decider.start()

    async def timed(queries: list[str]) -> list[float]:
        latencies = []
        for query in queries:
            started = time.perf_counter()
            await decider.decide(query, policy, 0.5)  # type: ignore[arg-type]
            latencies.append(time.perf_counter() - started)
        return latencies

    stop = asyncio.Event()
    big_done = 0

    async def flood(client: int) -> None:
        nonlocal big_done
        n = 0
        while not stop.is_set():
            n += 1
            await decider.decide(f"client {client} prompt {n}: " + PROSE, policy, 0.5)  # type: ignore[arg-type]
            big_done += 1

    window = clip(PROSE, onnx.max_tokens)
    one_window = statistics.median(timeit(lambda: onnx.encode([window])) for _ in range(3))
    try:
        quiet = await timed(small[:15])
        flooders = [asyncio.create_task(flood(c)) for c in range(20)]
        await asyncio.sleep(0.5)  # the queue fills with huge prompts
        loaded = await timed(small[15:])
        stop.set()
        await asyncio.gather(*flooders)
    finally:
        await decider.stop()
    quiet_p50, loaded_p50 = statistics.median(quiet), statistics.median(loaded)
    # A small query waits for the call in progress (one long text at most) and shares its own call with at
    # most one: about two windows' time, on a quiet machine ~0.3 s. The huge prompts kept being served.
    assert loaded_p50 < quiet_p50 + 3 * one_window, (quiet_p50, loaded_p50, one_window)
    assert big_done >= 5, big_done
