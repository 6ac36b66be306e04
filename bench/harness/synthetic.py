"""Synthetic calibration artifacts of any size (k clusters, m models, n reference rows), for scaling benches
and for tests that need a valid artifact but not a calibration run.

The data are made up, the artifact is not: it goes through the routing core's own pieces, ``beta_table``
(calibration/fit.py) for the per-cluster table and cliffs and ``write_artifact`` (calibration/bundle.py) to
write and validate it, so it has exactly the shapes and checks a real artifact of that size has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.bundle import write_artifact
from calibration.fit import FitResult
from calibration.table import beta_table
from router.artifact import Artifact

EMBEDDER_NAME, EMBEDDER_DIM = "all-MiniLM-L6-v2", 384


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def write_synthetic_artifact(out: Path, k: int, models: list[str], n_reference: int = 5000, seed: int = 0,
                             ood_threshold: float = 0.9) -> Artifact:
    """Writes and loads an artifact whose generalist is ``models[0]``.

    References are drawn around random cluster centres. Random directions sit far from real sentence
    embeddings (cosine distance ~0.85), so ``ood_threshold`` above 1 keeps real prompts in domain.
    """
    rng = np.random.default_rng(seed)
    m = len(models)
    centroids = unit_rows(rng, k, EMBEDDER_DIM)
    labels = rng.integers(0, k, n_reference)
    reference = centroids[labels] + 0.05 * rng.standard_normal((n_reference, EMBEDDER_DIM)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    skill = rng.random((k, m))  # each model's accuracy in each cluster
    scores = (rng.random((n_reference, m)) < skill[labels]).astype(np.float64)
    costs = np.broadcast_to(np.linspace(1e-4, 1e-3, m), (n_reference, m)).copy()
    table = beta_table(labels, k, scores, costs, generalist=0, prior_strength=10.0, cliff_confidence=0.9)
    fit = FitResult(k=k, centroids=centroids, labels=labels, table=table, soft_top=min(3, k), temperature=0.05,
                    knn_weight=0.3, knn_k=20, ood_k=10, ood_threshold=ood_threshold, ood_quantiles={},
                    cluster_thresholds=None,
                    reference=reference, reference_scores=scores.astype(np.float32),
                    global_accuracy=scores.mean(axis=0))
    return write_artifact(out, models=models, generalist=models[0], embedder_name=EMBEDDER_NAME,
                          embedder_dim=EMBEDDER_DIM, fit=fit, data_info={"source": "synthetic", "seed": seed},
                          extra={})
