"""Synthetic calibration artifacts of any size, for scaling benches (k clusters, m models, n reference rows).

Random unit-norm centroids and reference vectors, random accuracies and costs, a few cliffs: the numbers
mean nothing, the shapes are what a real artifact of that size has, and ``Artifact.load`` validates it like
any other (so a format change breaks this loudly instead of benchmarking a stale layout).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EMBEDDER = {"name": "all-MiniLM-L6-v2", "dim": 384, "normalisation": "l2"}


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_synthetic_artifact(out: Path, k: int, models: list[str], n_reference: int = 5000, seed: int = 0,
                             dim: int = 384, ood_threshold: float = 0.9) -> Path:
    """Writes an artifact directory whose generalist is ``models[0]``; returns ``out``.

    Random references sit far from real sentence embeddings (cosine distance ~0.85), so ``ood_threshold``
    above 1 keeps real prompts in domain and below ~0.8 sends them all to the generalist.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    generalist = models[0]
    np.save(out / "centroids.npy", _unit(rng, k, dim))
    np.save(out / "reference.npy", _unit(rng, n_reference, dim))
    np.save(out / "reference_scores.npy", (rng.random((n_reference, len(models))) < 0.6).astype(np.float32))
    accuracy = rng.random((k, len(models)))
    cost = rng.random(len(models)) * 1e-3
    clusters = [{"models": {m: {"n": 50, "accuracy": float(accuracy[c, j]), "estimate": float(accuracy[c, j]),
                                "mean_cost": float(cost[j])} for j, m in enumerate(models)}} for c in range(k)]
    (out / "table.json").write_text(json.dumps({"clusters": clusters}))
    cliffs = {m: sorted(int(c) for c in np.flatnonzero(accuracy[:, j] < accuracy[:, 0] - 0.4))
              for j, m in enumerate(models) if m != generalist}
    (out / "cliffs.json").write_text(json.dumps(cliffs))
    (out / "ood.json").write_text(json.dumps({"method": "knn_cosine_distance", "k_neighbors": 10,
                                              "threshold": ood_threshold}))
    manifest = {"format_version": 1, "embedder": {**EMBEDDER, "dim": dim}, "k": k, "models": models,
                "generalist": generalist, "reference_model": models[int(np.argmax(accuracy.mean(axis=0)))],
                "created_at": "synthetic", "data_fingerprint": f"synthetic-{seed}",
                "policy": {"soft_top": min(3, k), "temperature": 0.05, "knn_weight": 0.3, "knn_k": 10}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
