"""Out-of-domain score: mean cosine distance to the k nearest reference (calibration) embeddings.

A query far from everything the fleet was measured on has no accuracy evidence behind any specialist, so the
policy sends it to the generalist. The threshold is calibrated on held-out in-domain queries (a quantile of
their scores), never on the reference points themselves, whose distance to their own neighbourhood is
optimistically small. DESIGN.md measured AUROC 0.98 for this score with all-MiniLM-L6-v2.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
CHUNK = 1024  # rows per block: bounds the (rows x n_ref) similarity matrix to a few tens of MB


def knn(
    embeddings: Matrix, reference: Matrix, k: int, exclude_self: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """(ood_score per row, indices (n, k) of the nearest references, their similarities (n, k)).

    ``exclude_self`` drops the single nearest neighbour (the point itself when scoring reference rows).
    """
    n = embeddings.shape[0]
    skip = 1 if exclude_self else 0
    k = min(k, reference.shape[0] - skip)
    scores = np.zeros(n)
    indices = np.zeros((n, k), dtype=np.intp)
    sims_out = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, CHUNK):
        block = np.asarray(embeddings[start : start + CHUNK] @ reference.T, dtype=np.float32)
        part = np.argpartition(-block, k + skip - 1, axis=1)[:, : k + skip]
        part_sims = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")[:, skip : k + skip]
        idx = np.take_along_axis(part, order, axis=1)
        sims = np.take_along_axis(part_sims, order, axis=1)
        indices[start : start + CHUNK] = idx
        sims_out[start : start + CHUNK] = sims
        scores[start : start + CHUNK] = 1.0 - sims.mean(axis=1)
    return scores, indices, sims_out


def ood_scores(embeddings: Matrix, reference: Matrix, k: int) -> npt.NDArray[np.float64]:
    return knn(embeddings, reference, k)[0]
