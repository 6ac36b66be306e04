"""Length-aware batches: which texts share one model call, so that padding costs little.

A batch is padded to its longest member, and on a CPU the model's cost is close to linear in the tokens it
is fed (padding included): one 250-token query in a batch of 32 short ones made the short ones pay 250 tokens
each. ``plan`` sorts the texts by token count and cuts the sorted run where padding would cost more than a
model call (``CALL_TOKENS``), keeping every batch within a token budget, an attention budget and a row count.
Only which rows share a call changes: each vector is still its own text's (tests/router/test_batching.py).
"""

from __future__ import annotations

from collections.abc import Sequence

# One model call's fixed cost, in tokens of compute (OpenVINO re-plans a new shape in ~1.4 ms; a MiniLM token
# costs ~0.5 ms on one core): a batch is cut where its padding would cost more than another call.
CALL_TOKENS = 16
# Attention memory grows with rows * width^2: a batch of long texts is cut down to this many cells per head
# (64 texts of 128 tokens), which bounds the peak (and so the RSS, which glibc never gives back) near 200 MiB.
MAX_ATTENTION_CELLS = 64 * 128 * 128


def padded(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def plan(lengths: Sequence[int], max_tokens: int, max_rows: int, pad_multiple: int = 1) -> list[list[int]]:
    """Indices into ``lengths`` (token counts), grouped into batches that minimise padded tokens plus
    ``CALL_TOKENS`` per call. Each batch: rows * padded width <= ``max_tokens`` (a longer single text still
    gets a batch of its own), rows * width^2 <= ``MAX_ATTENTION_CELLS``, rows <= ``max_rows``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    widths = [padded(max(1, lengths[i]), pad_multiple) for i in order]
    n = len(widths)
    # best[j]: the least cost of batching the j shortest texts; start[j]: where the last of those batches starts.
    best = [0] + [0] * n
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        width = widths[j - 1]  # the widest of any batch that ends at j
        rows = max(1, min(max_rows, max_tokens // width, MAX_ATTENTION_CELLS // (width * width)))
        best[j], start[j] = min((best[i] + CALL_TOKENS + (j - i) * width, i) for i in range(max(0, j - rows), j))
    batches: list[list[int]] = []
    j = n
    while j > 0:
        batches.append(order[start[j]:j])
        j = start[j]
    return batches[::-1]
