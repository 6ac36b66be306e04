"""Writing the artifact directory (format: docs/artifact.md; reader: router/artifact.py).

Everything is written into a temporary sibling directory, validated by ``Artifact.load`` exactly as the
router would, and only then renamed into place: a crash or a bad fit never leaves a half-written artifact
where the router could pick it up.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from calibration.fit import FitResult
from router.artifact import FORMAT_VERSION, NORMALISATION, Artifact


def table_json(models: list[str], fit: FitResult) -> dict[str, Any]:
    t = fit.table
    clusters = []
    for c in range(fit.k):
        clusters.append(
            {
                "id": c,
                "size": int(t.counts[c, 0]),
                "models": {
                    model: {
                        "n": int(t.counts[c, j]),
                        "accuracy": round(float(t.accuracy[c, j]), 6),
                        "estimate": round(float(t.estimate[c, j]), 6),
                        "lower": round(float(t.lower[c, j]), 6),
                        "upper": round(float(t.upper[c, j]), 6),
                        "mean_cost": float(t.mean_cost[c, j]),
                        "cliff": bool(t.cliff[c, j]),
                    }
                    for j, model in enumerate(models)
                },
            }
        )
    return {
        "clusters": clusters,
        "global_accuracy": {m: round(float(a), 6) for m, a in zip(models, fit.global_accuracy, strict=True)},
    }


def write_artifact(
    out: Path,
    *,
    models: list[str],
    generalist: str,
    embedder_name: str,
    embedder_dim: int,
    fit: FitResult,
    data_info: dict[str, Any],
    extra: dict[str, Any],
    write_human: Callable[[Path], None] | None = None,
    refine_embedder_name: str | None = None,
    embedder_weights: str = "",
) -> Artifact:
    """Write, validate, rename into place; returns the loaded artifact. ``embedder_weights``: the encoder's
    ``weights`` (a quantised copy's file hash), recorded so that a router with another copy refuses it."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    reference_model = models[int(np.argmax(fit.global_accuracy))]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = {
            "format_version": FORMAT_VERSION,
            "embedder": {"name": embedder_name, "dim": embedder_dim, "normalisation": NORMALISATION,
                         **({"weights": embedder_weights} if embedder_weights else {})},
            "k": fit.k,
            "models": models,
            "generalist": generalist,
            "reference_model": reference_model,
            "policy": {
                "soft_top": fit.soft_top,
                "temperature": fit.temperature,
                "knn_weight": fit.knn_weight,
                "knn_k": fit.knn_k,
                "normalisation": "global",
            },
            "data": data_info,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        np.save(tmp / "centroids.npy", fit.centroids.astype(np.float32))
        np.save(tmp / "reference.npy", fit.reference.astype(np.float32))
        np.save(tmp / "reference_scores.npy", fit.reference_scores.astype(np.float32))
        (tmp / "table.json").write_text(json.dumps(table_json(models, fit), indent=1) + "\n")
        cliffs = {m: [int(c) for c in np.flatnonzero(fit.table.cliff[:, j])] for j, m in enumerate(models)}
        (tmp / "cliffs.json").write_text(json.dumps(cliffs, indent=1) + "\n")
        detector = fit.ood_detector
        if detector is not None:
            if fit.domains is None:
                raise ValueError("a fit with the domain OOD detector needs its domain level")
            np.save(tmp / "ood_means.npy", detector.means.astype(np.float64))
            np.save(tmp / "ood_precision.npy", detector.precision.astype(np.float64))
        ood = ood_json(fit, extra.get("ood_quantile"))
        (tmp / "ood.json").write_text(json.dumps(ood, indent=1) + "\n")
        if fit.refine is not None:
            if refine_embedder_name is None:
                raise ValueError("a fit with a refine tier needs the refine embedder's name")
            r = fit.refine
            np.save(tmp / "refine_reference.npy", r.reference.astype(np.float32))
            refine = {
                "embedder": {"name": refine_embedder_name, "dim": int(r.reference.shape[1]),
                             "normalisation": NORMALISATION},
                "method": "knn_cosine_distance",
                "k_neighbors": r.ood_k,
                "threshold": r.threshold,
                "cluster_thresholds": [float(v) for v in r.cluster_thresholds],
                "refine_above": [float(v) for v in r.refine_above],
                "refine_quantile": extra.get("refine_quantile"),
                "calibrated_on": "the same validation slice, scored by the refine embedder against the same rows",
            }
            (tmp / "refine.json").write_text(json.dumps(refine, indent=1) + "\n")
        if fit.domains is not None:
            d = fit.domains
            np.save(tmp / "domain_coef.npy", d.coef.astype(np.float32))
            domains = {
                "names": d.names,
                "weight": d.weight,
                "classifier": "multinomial logistic regression on the embedding (scikit-learn), train rows",
                "intercept": [float(v) for v in d.intercept],
                "estimate": [[round(float(v), 6) for v in row] for row in d.estimate],
                "mean_cost": [[float(v) for v in row] for row in d.mean_cost],
            }
            if d.cell_estimate is not None and d.cell_cost is not None:
                domains["cells"] = {"strength": d.cell_strength, "file": "domain_cells.npy",
                                    "shape": "(2, domains, k, models): estimate, then mean_cost"}
                np.save(tmp / "domain_cells.npy", np.stack([d.cell_estimate, d.cell_cost]).astype(np.float64))
            (tmp / "domains.json").write_text(json.dumps(domains, indent=1) + "\n")
        artifact = Artifact.load(tmp, embedder_name=embedder_name, embedder_dim=embedder_dim,
                                 embedder_weights=embedder_weights)
        if write_human is not None:
            write_human(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / "previous")
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    artifact.path = out
    return artifact


def ood_json(fit: FitResult, quantile: float | None) -> dict[str, Any]:
    """ood.json: the domain detector's thresholds, centers and margin, or the kNN distance's threshold."""
    common = {"quantile": quantile, "held_out_quantiles": fit.ood_quantiles}
    detector = fit.ood_detector
    if detector is None:
        return {
            "method": "knn_cosine_distance",
            "k_neighbors": fit.ood_k,
            "threshold": fit.ood_threshold,
            **common,
            "cluster_thresholds": None
            if fit.cluster_thresholds is None
            else [float(v) for v in fit.cluster_thresholds],
            "calibrated_on": "validation slice of the train rows, scored against the other train rows",
        }
    return {
        "method": "domain_mahalanobis_energy",
        "k_neighbors": fit.ood_k,  # the kNN estimate's neighbours; the detector itself uses none
        "threshold": 1.0,
        "score": "max over the parts of (score - center) / (threshold - center); above 1.0 is out of domain",
        "mahalanobis": {"threshold": detector.mahalanobis_threshold, "center": detector.mahalanobis_center},
        "energy": {"threshold": detector.energy_threshold, "center": detector.energy_center},
        "margin": detector.margin_spec(),
        **common,  # held_out_quantiles: the kNN distance's, for comparison
        "cluster_thresholds": None,
        "calibrated_on": "validation slice of the train rows, scored by means, covariance and classifier fitted on "
                         "the other train rows; the two parts' thresholds at one quantile each, so that either "
                         "flags 1 - quantile of those rows",
    }
