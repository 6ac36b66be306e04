"""Length-aware batching: every text in exactly one batch, within the budgets, little padding, and each
vector exactly what the text gets alone."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from router.embedding.batching import CALL_TOKENS, MAX_ATTENTION_CELLS, padded, plan
from router.embedding.onnx import OnnxEmbedder
from router.embedding.openvino import OpenVinoEmbedder
from router.settings import EmbedderSettings


def padded_tokens(lengths: list[int], batches: list[list[int]], multiple: int = 1) -> int:
    return sum(len(batch) * padded(max(lengths[i] for i in batch), multiple) for batch in batches)


@pytest.mark.parametrize("multiple", [1, 32])
def test_every_text_lands_in_one_batch_within_the_budgets(multiple: int) -> None:
    rng = random.Random(7)
    lengths = [rng.choice([rng.randint(5, 40), rng.randint(40, 256)]) for _ in range(500)]
    batches = plan(lengths, max_tokens=2048, max_rows=64, pad_multiple=multiple)
    assert sorted(i for batch in batches for i in batch) == list(range(500))
    for batch in batches:
        width = padded(max(lengths[i] for i in batch), multiple)
        assert len(batch) <= 64 and (len(batch) == 1 or len(batch) * width <= 2048)
        assert len(batch) == 1 or len(batch) * width * width <= MAX_ATTENTION_CELLS
    # Padding plus calls costs less than rows in arrival order (what a batch of 64 by count paid).
    by_count = [list(range(i, min(i + 64, 500))) for i in range(0, 500, 64)]
    cost = padded_tokens(lengths, batches, multiple) + CALL_TOKENS * len(batches)
    assert cost < 0.6 * (padded_tokens(lengths, by_count, multiple) + CALL_TOKENS * len(by_count))


def test_one_long_text_does_not_pad_the_short_ones() -> None:
    lengths = [12] * 31 + [256]
    batches = plan(lengths, max_tokens=8192, max_rows=64)
    assert [len(b) for b in batches] == [31, 1] and batches[1] == [31]
    assert plan([], 8192, 64) == [] and plan([300], 256, 64) == [[0]]


@pytest.mark.parametrize("kind", [OnnxEmbedder, OpenVinoEmbedder])
def test_batching_by_length_leaves_every_vector_as_the_text_gets_it_alone(
    kind: type[OnnxEmbedder], onnx_dir: Path, routing_queries: list[str]
) -> None:
    encoder = kind(EmbedderSettings(onnx_path=str(onnx_dir), batch_tokens=1024))
    texts = routing_queries[:60] + [routing_queries[0] * 40]  # one text past the window
    together = encoder.encode(texts)
    # Alone, each text is padded only as far as its own length (to a multiple of 32 on OpenVINO).
    alone = np.vstack([encoder._run([encoder._tokenizer.encode(t).ids]) for t in texts])
    assert float(np.abs(together - alone).max()) < 1e-6
