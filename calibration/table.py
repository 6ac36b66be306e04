"""The accuracy tables: k-means clusters and, per cluster and model, the shrunk accuracy, mean cost and cliffs;
the domain level's classifier and its per-domain (and per-(domain, cluster)) table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy.stats import norm
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression

from calibration.config import FitConfig
from router.domains import DomainLevel, from_classifier

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]


@dataclass
class Table:
    counts: Floats
    accuracy: Floats
    estimate: Floats
    lower: Floats
    upper: Floats
    mean_cost: Floats
    cliff: npt.NDArray[np.bool_]



def kmeans(embeddings: Matrix, k: int, seed: int) -> tuple[Matrix, npt.NDArray[np.intp]]:
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(embeddings.astype(np.float64))
    centroids = km.cluster_centers_.astype(np.float32)
    # The router compares unit vectors by dot product: unit-norm centroids make that the cosine.
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids, np.asarray(km.labels_, dtype=np.intp)


def beta_table(
    labels: npt.NDArray[np.intp],
    k: int,
    scores: Floats,
    costs: Floats,
    generalist: int,
    prior_strength: float,
    cliff_confidence: float,
    cliff_margin: float = 0.0,
) -> Table:
    """Per cluster and model: raw accuracy, Beta posterior shrunk toward the model's global accuracy, cliffs.

    Prior Beta(s * p_global, s * (1 - p_global)) with s = ``prior_strength``; fractional scores count as
    fractional successes. A specialist has a cliff in a cluster when the posterior probability that it is
    less accurate than the generalist there exceeds ``cliff_confidence`` (normal approximation of the two
    posteriors, treated as independent, which is conservative for paired data). With ``cliff_margin`` > 0 the
    event is "more than ``cliff_margin`` less accurate": a cliff, not a slope.
    """
    m = scores.shape[1]
    p_global = np.clip(scores.mean(axis=0), 1e-3, 1 - 1e-3)
    onehot = np.zeros((len(labels), k))
    onehot[np.arange(len(labels)), labels] = 1.0
    counts = np.repeat(onehot.sum(axis=0)[:, None], m, axis=1)
    successes = onehot.T @ scores
    alpha = prior_strength * p_global[None, :] + successes
    beta = prior_strength * (1 - p_global[None, :]) + counts - successes
    estimate = alpha / (alpha + beta)
    var = alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1))
    sd = np.sqrt(var)
    z = norm.ppf(0.95)
    safe_counts = np.maximum(counts, 1)
    accuracy = np.where(counts > 0, successes / safe_counts, p_global[None, :])
    mean_cost = np.where(counts > 0, (onehot.T @ costs) / safe_counts, costs.mean(axis=0)[None, :])
    gap = estimate[:, [generalist]] - estimate - cliff_margin
    p_below = norm.cdf(gap / np.sqrt(var + var[:, [generalist]]))
    cliff = p_below > cliff_confidence
    cliff[:, generalist] = False
    return Table(
        counts=counts,
        accuracy=accuracy,
        estimate=estimate,
        lower=np.clip(estimate - z * sd, 0, 1),
        upper=np.clip(estimate + z * sd, 0, 1),
        mean_cost=mean_cost,
        cliff=cliff,
    )


def domain_level(
    x: Matrix, domains: npt.NDArray[np.str_], scores: Floats, costs: Floats, generalist: int, config: FitConfig,
    weight: float = 0.0,
) -> DomainLevel | None:
    """The domain classifier (multinomial logistic regression, scikit-learn's defaults) and each model's shrunk
    accuracy and mean cost per domain (the same Beta posterior as the clusters'); None for fewer than 2
    domains."""
    if len(set(domains.tolist())) < 2:
        return None
    clf = LogisticRegression(max_iter=2000).fit(x.astype(np.float64), domains)
    index = {d: i for i, d in enumerate(clf.classes_.tolist())}
    labels = np.array([index[d] for d in domains.tolist()], dtype=np.intp)
    table = beta_table(labels, len(index), scores, costs, generalist, config.prior_strength, config.cliff_confidence)
    return from_classifier(clf.classes_.tolist(), clf.coef_, clf.intercept_, table.estimate, table.mean_cost,
                           weight)


def domain_cells(level: DomainLevel, domains: npt.NDArray[np.str_], labels: npt.NDArray[np.intp], k: int,
                 scores: Floats, costs: Floats, strength: float) -> DomainLevel:
    """``level`` with per-(domain, cluster) cells: for the rows of domain d in cluster c, ``(strength * row_d +
    sum of scores) / (strength + n_dc)``, the same for cost; an empty cell is the domain's row. ``strength`` 0:
    ``level`` unchanged."""
    if strength <= 0:
        return level
    index = {name: i for i, name in enumerate(level.names)}
    d = np.array([index[name] for name in domains.tolist()], dtype=np.intp)
    n_domains, m = level.estimate.shape
    counts = np.zeros((n_domains, k))
    np.add.at(counts, (d, labels), 1.0)
    successes = np.zeros((n_domains, k, m))
    np.add.at(successes, (d, labels), scores)
    spent = np.zeros((n_domains, k, m))
    np.add.at(spent, (d, labels), costs)
    total = strength + counts[:, :, None]
    return replace(level, cell_estimate=(strength * level.estimate[:, None, :] + successes) / total,
                   cell_cost=(strength * level.mean_cost[:, None, :] + spent) / total, cell_strength=strength)


def final_domain_level(x: Matrix, domains: npt.NDArray[np.str_] | None, labels: npt.NDArray[np.intp], k: int,
                       scores: Floats, costs: Floats, generalist: int, config: FitConfig,
                       weight: float) -> DomainLevel | None:
    """The domain level an artifact carries at the chosen ``weight``: the classifier and per-domain table refitted
    on every train row, with cells for the final clusters; None at weight 0 or with fewer than 2 domains."""
    if domains is None or weight <= 0:
        return None
    level = domain_level(x, domains, scores, costs, generalist, config, weight)
    if level is None:
        return None
    return domain_cells(level, domains, labels, k, scores, costs, config.domain_cell_strength)
