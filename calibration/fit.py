"""Fitting: from train rows with known outcomes to the artifact's numbers.

Read top to bottom: ``fit(train, embeddings)`` holds out validation rows by hash and picks the policy's settings
on them (``calibration/selection.py``: k, soft assignment, kNN blend, domain blend, cliff margin), calibrates the
out-of-domain line on the first fold's held-out rows scored against the rows fitted without them
(``calibration/oodfit.py``), then refits the clusters, the accuracy table (``calibration/table.py``), the domain
classifier and the detector's domain means on all train rows. Test rows are never seen here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.config import FitConfig
from calibration.oodfit import (
    RefineFit,
    detector_thresholds,
    final_detector,
    knn_threshold,
    per_cluster_thresholds,
    refine_fit,
    use_domain_detector,
)
from calibration.selection import select, validation_masks
from calibration.table import Table, beta_table, final_domain_level, kmeans
from router.artifact import Artifact
from router.domains import DomainLevel
from router.ood import DomainDetector, knn

__all__ = ["FitConfig", "FitResult", "fit", "reference_rows", "small_fit"]  # FitConfig: what fit() is given

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]


@dataclass
class FitResult:
    k: int
    centroids: Matrix
    labels: npt.NDArray[np.intp]
    table: Table
    soft_top: int
    temperature: float
    knn_weight: float
    knn_k: int
    ood_k: int
    ood_threshold: float
    ood_quantiles: dict[str, float]
    cluster_thresholds: Floats | None
    reference: Matrix
    reference_scores: Matrix
    global_accuracy: Floats
    selection: list[dict[str, Any]] = field(default_factory=list)
    validation_ood_scores: Floats = field(default_factory=lambda: np.zeros(0))
    cliff_margin: float = 0.0
    margin_selection: list[dict[str, Any]] = field(default_factory=list)
    refine: RefineFit | None = None
    domains: DomainLevel | None = None
    ood_detector: DomainDetector | None = None  # set: it flags out-of-domain queries, not the kNN threshold

    def to_artifact(self, models: list[str], generalist: str, embedder_name: str = "in-memory", *,
                    embedder_weights: str = "", embedder_window: int = 0, refine_name: str = "refine",
                    manifest: dict[str, Any] | None = None) -> Artifact:
        """The artifact this fit makes, through ``Artifact``'s constructor (``calibration/bundle.py`` writes it;
        leave-one-domain-out routes with it in memory). ``refine_name``: the refine tier's embedder."""
        n_ref = len(self.reference)
        t = self.table
        return Artifact(
            models=list(models), generalist=generalist, reference_model=models[int(np.argmax(self.global_accuracy))],
            embedder_name=embedder_name, embedder_dim=self.centroids.shape[1], embedder_weights=embedder_weights,
            embedder_window=embedder_window,
            centroids=self.centroids, counts=t.counts, accuracy=t.accuracy, estimate=t.estimate,
            mean_cost=t.mean_cost, cliff=t.cliff, reference=self.reference, reference_scores=self.reference_scores,
            soft_top=min(self.soft_top, self.k), temperature=self.temperature, knn_weight=self.knn_weight,
            knn_k=min(self.knn_k, n_ref), ood_k=min(self.ood_k, n_ref), ood_threshold=self.ood_threshold,
            ood_cluster_thresholds=self.cluster_thresholds,
            refine=self.refine.tier(refine_name) if self.refine is not None else None, domains=self.domains,
            ood_detector=self.ood_detector, manifest=manifest or {})


def fit(
    ids: list[str],
    embeddings: Matrix,
    scores: Floats,
    costs: Floats,
    models: list[str],
    generalist: str,
    config: FitConfig,
    k_fixed: int | None = None,
    progress: bool = True,
    refine_embeddings: Matrix | None = None,
    domains: list[str] | None = None,
) -> FitResult:
    """``refine_embeddings`` (the same rows, another embedder) adds a refine tier for close OOD calls;
    ``domains`` (each row's domain) a domain level, when there are at least two and the validation slice
    measures it better."""
    g = models.index(generalist)
    if len(ids) < 2:
        raise ValueError("need at least 2 train rows to fit")
    detect = use_domain_detector(config, domains, refine_embeddings is not None)
    masks = validation_masks(ids, config)
    if any(m.sum() < 20 or (~m).sum() < 20 for m in masks):
        if config.ood_method == "domains":  # auto falls back to the kNN distance, as small_fit does
            raise ValueError("too few train rows for a validation slice, which the domain OOD detector is "
                             "calibrated on: use --ood-method knn or auto")
        return small_fit(embeddings, scores, costs, g, config, k_fixed)
    all_domains = np.asarray(domains) if domains is not None else None
    # A fixed weight of 0 needs no classifier: the domain level is then off, as without domains.
    domain_arr = all_domains if config.domain_weight != 0 else None

    # 1. The policy's settings, chosen on held-out rows.
    selection = select(masks, embeddings, scores, costs, domain_arr, models, generalist, config, k_fixed, progress)
    s, first = selection.chosen, selection.folds[0]

    # 2. The OOD line: the first fold's held-out rows scored against its fit rows only (never against themselves).
    val = masks[0]
    val_ood, quantiles, threshold = knn_threshold(first.val_x, first.fit_x, config)
    fitted_detector = None
    if detect:
        assert all_domains is not None
        fitted_detector, detector_val_scores = detector_thresholds(first.fit_x, all_domains[~val], first.val_x,
                                                                   first.domains, config)

    # 3. Final clusters and table on every train row; reference = all train rows (capped, seeded subsample).
    centroids, labels = kmeans(embeddings, s.k, config.seed)
    table = beta_table(labels, s.k, scores, costs, g, config.prior_strength, config.cliff_confidence,
                       s.cliff_margin)
    cluster_thresholds = per_cluster_thresholds(first.val_x, val_ood, centroids, threshold, config)
    keep = reference_rows(len(embeddings), config)
    final_domains = final_domain_level(embeddings, domain_arr, labels, s.k, scores, costs, g, config,
                                       s.domain_weight)
    detector = None
    if fitted_detector is not None:
        assert all_domains is not None
        detector, final_domains = final_detector(fitted_detector, embeddings, all_domains, final_domains, scores,
                                                 costs, g, config)
        val_ood = detector_val_scores
    refine = None
    if refine_embeddings is not None:
        refine = refine_fit(refine_embeddings, val, first.val_x, val_ood, centroids, keep, config)
    return FitResult(
        k=s.k, centroids=centroids, labels=labels, table=table, soft_top=min(s.soft_top, s.k),
        temperature=s.temperature, knn_weight=s.knn_weight, knn_k=config.knn_k, ood_k=config.ood_k,
        ood_threshold=threshold, ood_quantiles=quantiles,
        cluster_thresholds=cluster_thresholds if config.ood_per_cluster else None, refine=refine,
        domains=final_domains, ood_detector=detector, reference=embeddings[keep].astype(np.float32),
        reference_scores=scores[keep].astype(np.float32), global_accuracy=scores.mean(axis=0),
        selection=selection.candidates, validation_ood_scores=val_ood, cliff_margin=s.cliff_margin,
        margin_selection=selection.margins,
    )


def reference_rows(n: int, config: FitConfig) -> npt.NDArray[np.intp]:
    """The rows an artifact keeps as its reference: all, or a seeded subsample of ``max_reference``."""
    keep = np.arange(n)
    if n > config.max_reference:
        keep = np.sort(np.random.default_rng(config.seed).choice(n, config.max_reference, replace=False))
    return keep


def small_fit(
    embeddings: Matrix, scores: Floats, costs: Floats, g: int, config: FitConfig, k_fixed: int | None
) -> FitResult:
    """Too few rows for a validation slice (e.g. a short live run): fixed simple settings, and the OOD
    threshold from leave-one-out distances (each row scored against the others, never itself)."""
    n = len(embeddings)
    k = min(k_fixed or max(1, min(4, n // 10)), n)
    centroids, labels = kmeans(embeddings, k, config.seed)
    margin = config.cliff_margin or 0.0  # no validation slice to choose one on: the original rule
    table = beta_table(labels, k, scores, costs, g, config.prior_strength, config.cliff_confidence, margin)
    ood_k = min(config.ood_k, n - 1)
    loo, _, _ = knn(embeddings, embeddings, ood_k, exclude_self=True)
    quantiles = {f"{q:.2f}": float(np.quantile(loo, q)) for q in (0.9, 0.95, 0.99)}
    return FitResult(
        k=k,
        centroids=centroids,
        labels=labels,
        table=table,
        soft_top=1,
        temperature=1.0,
        knn_weight=0.0,
        knn_k=min(config.knn_k, n),
        ood_k=ood_k,
        ood_threshold=float(np.quantile(loo, config.ood_quantile)),
        ood_quantiles=quantiles,
        cluster_thresholds=None,
        reference=embeddings.astype(np.float32),
        reference_scores=scores.astype(np.float32),
        global_accuracy=scores.mean(axis=0),
        selection=[
            {
                "k": k,
                "soft_top": 1,
                "temperature": 1.0,
                "knn_weight": 0.0,
                "domain_weight": 0.0,
                "validation_quality": float("nan"),
                "validation_accuracy_knob1": float("nan"),
                "note": "too few rows for a validation slice: fixed settings",
            }
        ],
        validation_ood_scores=loo,
        cliff_margin=margin,
    )
