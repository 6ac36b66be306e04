"""Writing the artifact directory (format: docs/artifact.md; reader: ``router.artifact.Artifact.from_dir``).

``to_dir(artifact, out, notes)`` writes an ``Artifact`` value, with ``notes`` (what the files record for people
beside what the router reads). Everything is written into a temporary sibling directory, validated by
``Artifact.from_dir`` exactly as the router would, and only then renamed into place: a crash or a bad fit never
leaves a half-written artifact where the router could pick it up. ``write_artifact`` does both from a fit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from calibration.fit import FitResult
from router.artifact import FORMAT_VERSION, NORMALISATION, Artifact

T = TypeVar("T")

Floats = npt.NDArray[np.float64]
# The manifest keys an Artifact's fields make; the rest of its ``manifest`` (data, created_at, settings) follows.
FIELDS = ("format_version", "embedder", "k", "models", "generalist", "reference_model", "policy")


@dataclass(frozen=True)
class Notes:
    """What the files record for people beside what the router reads."""

    lower: Floats  # (k, m) 90 % band of each cluster's estimate
    upper: Floats
    global_accuracy: Floats  # (m,) each model's mean correctness on the train rows
    held_out_quantiles: dict[str, float]  # the kNN distance's on the validation rows

    @classmethod
    def of(cls, fit: FitResult) -> Notes:
        return cls(fit.table.lower, fit.table.upper, fit.global_accuracy, fit.ood_quantiles)


def table_json(a: Artifact, notes: Notes) -> dict[str, Any]:
    clusters = []
    for c in range(a.k):
        clusters.append(
            {
                "id": c,
                "size": int(a.counts[c, 0]),
                "models": {
                    model: {
                        "n": int(a.counts[c, j]),
                        "accuracy": round(float(a.accuracy[c, j]), 6),
                        "estimate": round(float(a.estimate[c, j]), 6),
                        "lower": round(float(notes.lower[c, j]), 6),
                        "upper": round(float(notes.upper[c, j]), 6),
                        "mean_cost": float(a.mean_cost[c, j]),
                        "cliff": bool(a.cliff[c, j]),
                    }
                    for j, model in enumerate(a.models)
                },
            }
        )
    return {
        "clusters": clusters,
        "global_accuracy": {m: round(float(v), 6) for m, v in zip(a.models, notes.global_accuracy, strict=True)},
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
    embedder_window: int = 0,
) -> Artifact:
    """The fit's artifact, written by ``to_dir``; returns it as read back. ``embedder_weights``: the encoder's
    ``weights`` (a quantised copy's file hash), recorded so that a router with another copy refuses it."""
    if fit.refine is not None and refine_embedder_name is None:
        raise ValueError("a fit with a refine tier needs the refine embedder's name")
    if fit.centroids.shape[1] != embedder_dim:
        raise ValueError(f"the fit's vectors have {fit.centroids.shape[1]} dimensions, the embedder {embedder_dim}")
    manifest = {"data": data_info, "created_at": datetime.now(UTC).isoformat(timespec="seconds"), **extra}
    artifact = fit.to_artifact(models, generalist, embedder_name, embedder_weights=embedder_weights,
                               embedder_window=embedder_window,
                               refine_name=refine_embedder_name or "", manifest=manifest)
    return to_dir(artifact, out, Notes.of(fit), write_human)


def to_dir(artifact: Artifact, out: Path, notes: Notes, write_human: Callable[[Path], None] | None = None) -> Artifact:
    """Write, validate, rename into place; returns the artifact as ``Artifact.from_dir`` reads it."""

    def fill(tmp: Path) -> Artifact:
        write_files(artifact, tmp, notes)
        written = Artifact.from_dir(tmp, embedder_name=artifact.embedder_name, embedder_dim=artifact.embedder_dim,
                                    embedder_weights=artifact.embedder_weights,
                                    embedder_window=artifact.embedder_window or None)
        if write_human is not None:
            write_human(tmp)
        return written

    return replace(publish(out, fill), path=out.resolve())


def publish(out: Path, fill: Callable[[Path], T]) -> T:
    """``fill(tmp)`` writes (and checks) a new directory beside ``out``, which is then renamed into place: a router
    reloading ``out`` reads the old artifact or the new one, never half of one. On any error ``out`` is untouched.
    Returns what ``fill`` returned."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result = fill(tmp)
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
    return result


def manifest_json(a: Artifact) -> dict[str, Any]:
    embedder = {"name": a.embedder_name, "dim": a.embedder_dim, "normalisation": NORMALISATION,
                **({"weights": a.embedder_weights} if a.embedder_weights else {}),
                **({"window": a.embedder_window} if a.embedder_window else {})}
    policy = {"soft_top": a.soft_top, "temperature": a.temperature, "knn_weight": a.knn_weight, "knn_k": a.knn_k,
              "normalisation": a.normalisation}
    made = {"format_version": FORMAT_VERSION, "embedder": embedder, "k": a.k, "models": a.models,
            "generalist": a.generalist, "reference_model": a.reference_model, "policy": policy}
    return {**made, **{key: value for key, value in a.manifest.items() if key not in FIELDS}}


def write_files(a: Artifact, tmp: Path, notes: Notes) -> None:
    """Every file the router reads, into ``tmp``."""
    (tmp / "manifest.json").write_text(json.dumps(manifest_json(a), indent=2) + "\n")
    np.save(tmp / "centroids.npy", a.centroids.astype(np.float32))
    np.save(tmp / "reference.npy", a.reference.astype(np.float32))
    np.save(tmp / "reference_scores.npy", a.reference_scores.astype(np.float32))
    (tmp / "table.json").write_text(json.dumps(table_json(a, notes), indent=1) + "\n")
    cliffs = {m: [int(c) for c in np.flatnonzero(a.cliff[:, j])] for j, m in enumerate(a.models)}
    (tmp / "cliffs.json").write_text(json.dumps(cliffs, indent=1) + "\n")
    detector = a.ood_detector
    if detector is not None:
        np.save(tmp / "ood_means.npy", detector.means.astype(np.float64))
        np.save(tmp / "ood_precision.npy", detector.precision.astype(np.float64))
    (tmp / "ood.json").write_text(json.dumps(ood_json(a, notes), indent=1) + "\n")
    if a.refine is not None:
        r = a.refine
        np.save(tmp / "refine_reference.npy", r.reference.astype(np.float32))
        refine = {
            "embedder": {"name": r.embedder_name, "dim": int(r.reference.shape[1]), "normalisation": NORMALISATION},
            "method": "knn_cosine_distance",
            "k_neighbors": r.ood_k,
            "threshold": r.threshold,
            "cluster_thresholds": [float(v) for v in r.cluster_thresholds],
            "refine_above": [float(v) for v in r.refine_above],
            "refine_quantile": a.manifest.get("refine_quantile"),
            "calibrated_on": "the same validation slice, scored by the refine embedder against the same rows",
        }
        (tmp / "refine.json").write_text(json.dumps(refine, indent=1) + "\n")
    if a.domains is not None:
        write_domains(a, tmp)


def write_domains(a: Artifact, tmp: Path) -> None:
    d = a.domains
    assert d is not None
    np.save(tmp / "domain_coef.npy", d.coef.astype(np.float32))
    domains: dict[str, Any] = {
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


def ood_json(a: Artifact, notes: Notes) -> dict[str, Any]:
    """ood.json: the domain detector's thresholds, centers and margin, or the kNN distance's threshold."""
    common = {"quantile": a.manifest.get("ood_quantile"), "held_out_quantiles": notes.held_out_quantiles}
    detector = a.ood_detector
    if detector is None:
        per_cluster = a.thresholds
        return {
            "method": "knn_cosine_distance",
            "k_neighbors": a.ood_k,
            "threshold": a.ood_threshold,
            **common,
            "cluster_thresholds": None if np.all(per_cluster == a.ood_threshold) else [float(v) for v in per_cluster],
            "calibrated_on": "validation slice of the train rows, scored against the other train rows",
        }
    return {
        "method": "domain_mahalanobis_energy",
        "k_neighbors": a.ood_k,  # the kNN estimate's neighbours; the detector itself uses none
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
