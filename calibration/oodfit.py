"""The out-of-domain fit: the kNN distance's line, the domain detector's thresholds, a refine tier's.

Every line is calibrated on held-out train rows scored against rows fitted without them (never a row against
itself); the artifact's means, covariance and classifier are then refitted on every train row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from sklearn.covariance import LedoitWolf

from calibration.config import FitConfig
from calibration.table import domain_level
from router.clusters import nearest
from router.domains import DomainLevel
from router.ood import MARGIN_SCORES, DomainDetector, RefineTier, joint_thresholds, knn

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]


@dataclass
class RefineFit:
    """The refine tier's part of the fit (router/artifact.py ``RefineTier``; the same reference rows)."""

    reference: Matrix
    ood_k: int
    threshold: float
    cluster_thresholds: Floats
    refine_above: Floats

    def tier(self, embedder_name: str) -> RefineTier:
        return RefineTier(embedder_name=embedder_name, embedder_dim=self.reference.shape[1],
                          reference=self.reference, ood_k=self.ood_k, threshold=self.threshold,
                          cluster_thresholds=self.cluster_thresholds, refine_above=self.refine_above)


def knn_threshold(val_x: Matrix, fit_x: Matrix, config: FitConfig) -> tuple[Floats, dict[str, float], float]:
    """The held-out rows' kNN distances to the fit rows, their 0.9/0.95/0.99 quantiles, and the line (the
    ``ood_quantile`` of them)."""
    val_ood, _, _ = knn(val_x, fit_x, config.ood_k)
    quantiles = {f"{q:.2f}": float(np.quantile(val_ood, q)) for q in (0.9, 0.95, 0.99)}
    return val_ood, quantiles, float(np.quantile(val_ood, config.ood_quantile))


def use_domain_detector(config: FitConfig, domains: list[str] | None, refine: bool) -> bool:
    """Whether ``fit`` calibrates the domain detector (``FitConfig.ood_method``); ValueError where "domains" is
    asked for and cannot be had."""
    if config.ood_method not in ("auto", "knn", "domains"):
        raise ValueError(f"ood_method must be 'auto', 'knn' or 'domains', not {config.ood_method!r}")
    if not 0 <= config.ood_margin <= 1 or not 0 <= config.ood_margin_from < 1:
        raise ValueError(f"the OOD margin must lie in [0, 1] (got {config.ood_margin!r}) and start in [0, 1) "
                         f"(got {config.ood_margin_from!r})")
    if config.ood_margin_score not in MARGIN_SCORES:
        raise ValueError(f"the OOD margin reads 'max' or 'energy', not {config.ood_margin_score!r}")
    if config.ood_method == "knn":
        return False
    enough = domains is not None and len(set(domains)) >= 2
    if config.ood_method == "domains":
        if not enough:
            raise ValueError("the domain OOD detector needs train rows from at least 2 domains")
        if refine or config.ood_per_cluster:
            raise ValueError("a refine tier and per-cluster thresholds refine the kNN score: use the knn OOD method")
        return True
    return enough and not refine and not config.ood_per_cluster


def mahalanobis_fit(x: Matrix, domains: npt.NDArray[np.str_], names: list[str]) -> tuple[Floats, Floats]:
    """(D, dim) each domain's mean embedding, in ``names`` order, and the inverse of the covariance of the rows
    around their own domain's mean, shrunk (Ledoit-Wolf) so that a few hundred rows in 384 dimensions invert."""
    x64 = x.astype(np.float64)
    means = np.stack([x64[domains == n].mean(axis=0) for n in names])
    index = {n: i for i, n in enumerate(names)}
    centred = x64 - means[[index[d] for d in domains.tolist()]]
    precision: Floats = LedoitWolf(assume_centered=True).fit(centred).precision_
    return means, precision


def detector_thresholds(
    fit_x: Matrix, fit_domains: npt.NDArray[np.str_], val_x: Matrix, level: DomainLevel | None, config: FitConfig,
) -> tuple[DomainDetector, Floats]:
    """The detector fitted without the validation rows, its thresholds and centers from those rows' scores; and
    those rows' scores in threshold units."""
    names = sorted(set(fit_domains.tolist()))
    means, precision = mahalanobis_fit(fit_x, fit_domains, names)
    if level is None:  # no domain level in this fit: a classifier on the same rows, for its energy only
        zeros = np.zeros((len(fit_x), 1))
        level = domain_level(fit_x, fit_domains, zeros, zeros, 0, config)
        assert level is not None
    m = DomainDetector(means, precision, 1.0, 0.0, 1.0, 0.0).mahalanobis(val_x)
    e = level.energy(val_x)
    tm, te = joint_thresholds(m, e, config.ood_quantile)
    detector = DomainDetector(means, precision, tm, float(np.median(m)), te, float(np.median(e)),
                              config.ood_margin, config.ood_margin_from, config.ood_margin_score)
    return detector, detector.score(val_x, level)


def per_cluster_thresholds(
    val_x: Matrix, val_ood: Floats, centroids: Matrix, threshold: float, config: FitConfig,
    quantile: float | None = None,
) -> Floats:
    """The ``ood_quantile`` (or ``quantile``) of the held-out rows nearest to each cluster (``threshold`` if
    too few)."""
    q = config.ood_quantile if quantile is None else quantile
    nearest_cluster = nearest(val_x, centroids)
    out = np.full(len(centroids), threshold)
    for c in range(len(centroids)):
        member = val_ood[nearest_cluster == c]
        if len(member) >= config.min_cluster_validation:
            out[c] = float(np.quantile(member, q))
    return out


def refine_fit(refine_embeddings: Matrix, val: npt.NDArray[np.bool_], val_x: Matrix, val_ood: Floats,
               centroids: Matrix, keep: npt.NDArray[np.intp], config: FitConfig) -> RefineFit:
    """The refine embedder's OOD thresholds, on the same held-out rows scored against the same fit rows, and
    the fast score from which a query is refined (``refine_quantile`` of its cluster's held-out rows)."""
    val_fine, _, _ = knn(refine_embeddings[val], refine_embeddings[~val].astype(np.float32), config.ood_k)
    threshold = float(np.quantile(val_fine, config.ood_quantile))
    fast_line = float(np.quantile(val_ood, config.refine_quantile))
    k = len(centroids)
    if config.ood_per_cluster:  # the same choice as the fast tier's own thresholds; the fast tier's clusters
        thresholds = per_cluster_thresholds(val_x, val_fine, centroids, threshold, config)
        refine_above = per_cluster_thresholds(val_x, val_ood, centroids, fast_line, config, config.refine_quantile)
    else:
        thresholds, refine_above = np.full(k, threshold), np.full(k, fast_line)
    return RefineFit(reference=refine_embeddings[keep].astype(np.float32), ood_k=config.ood_k, threshold=threshold,
                     cluster_thresholds=thresholds, refine_above=refine_above)


def final_detector(fitted: DomainDetector, x: Matrix, domains: npt.NDArray[np.str_], level: DomainLevel | None,
                   scores: Floats, costs: Floats, generalist: int, config: FitConfig) -> tuple[DomainDetector,
                                                                                               DomainLevel]:
    """The router's detector: ``fitted``'s thresholds, means and covariance from every train row (in the
    classifier's domain order); and the domain level it reads, fitted for the detector alone (weight 0 in the
    blend) where the artifact has none."""
    if level is None:
        level = domain_level(x, domains, scores, costs, generalist, config, 0.0)
        assert level is not None  # the detector was fitted: there are at least 2 domains
    means, precision = mahalanobis_fit(x, domains, level.names)
    return replace(fitted, means=means, precision=precision), level
