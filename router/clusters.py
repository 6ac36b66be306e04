"""Cluster assignment: nearest centroids by cosine similarity, soft over the top few.

Embeddings and centroids are unit-norm, so the dot product is the cosine similarity. A query near a cluster
boundary gets a blend of its nearest clusters' accuracy tables (softmax of similarity / temperature over the
``soft_top`` nearest) instead of an all-or-nothing jump across the boundary.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]


def similarities(embeddings: Matrix, centroids: Matrix) -> npt.NDArray[np.float32]:
    return np.asarray(embeddings @ centroids.T, dtype=np.float32)


def nearest(embeddings: Matrix, centroids: Matrix) -> npt.NDArray[np.intp]:
    return np.asarray(np.argmax(similarities(embeddings, centroids), axis=1), dtype=np.intp)


def soft_weights(
    embeddings: Matrix, centroids: Matrix, soft_top: int, temperature: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """(nearest cluster per row, (n, k) weights summing to 1 over the ``soft_top`` nearest clusters)."""
    sims = similarities(embeddings, centroids).astype(np.float64)
    n, k = sims.shape
    top = min(max(soft_top, 1), k)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :top]
    picked = np.take_along_axis(sims, order, axis=1)
    logits = (picked - picked[:, :1]) / temperature  # shift by the max: exp never overflows
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    weights = np.zeros((n, k))
    np.put_along_axis(weights, order, w, axis=1)
    return np.asarray(order[:, 0], dtype=np.intp), weights
