"""Fitting: k-means clusters, the shrunk accuracy table, cliffs, OOD threshold, and the policy's settings.

Read top to bottom: ``fit(train, embeddings)`` splits the train rows by hash into fit (80 %) and validation
(20 %), picks k / soft assignment / kNN blend / domain blend / cliff margin by routing quality on the validation
slice (or, with ``selection_folds`` > 1, on every row of that many folds, each routed by a fit on the others),
calibrates the OOD detector's thresholds on the (first) validation slice scored against the rows fitted without
it, then refits the clusters (and the domain classifier, and the detector's domain means) on all train rows.
Test rows are never seen here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import norm
from sklearn.cluster import KMeans
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from calibration.data import hash_fraction
from calibration.metrics import anchored_aiq
from router.artifact import Artifact, RefineTier
from router.clusters import nearest
from router.domains import DomainLevel, from_classifier
from router.ood import MARGIN_SCORES, DomainDetector, joint_thresholds, knn
from router.policy import Policy

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
KNOBS = np.round(np.linspace(0, 1, 11), 2)


@dataclass
class FitConfig:
    k_candidates: tuple[int, ...] = (4, 8, 12, 16, 24, 32, 48, 64)
    prior_strength: float = 10.0  # pseudo-queries of the model's global accuracy in every cluster
    cliff_confidence: float = 0.9  # P(specialist < generalist - margin) needed to mark a cliff
    # Cliff margin (absolute accuracy): a model is past its cliff only where it is *more than* this much below
    # the generalist with ``cliff_confidence``. A cheap model uniformly a little weaker than the generalist is
    # not a specialist out of its domain. Chosen on the validation slice among these (ties: the smaller);
    # ``cliff_margin`` set fixes it instead. 0.0 is the original rule.
    cliff_margins: tuple[float, ...] = (0.0, 0.05, 0.10, 0.15)
    cliff_margin: float | None = None
    ood_k: int = 10
    # Held-out in-domain queries above this quantile are flagged: 5 % false alarms by construction.
    ood_quantile: float = 0.95
    # One threshold per cluster (the quantile of the held-out rows nearest to it) instead of one global one:
    # a dense domain's neighbourhood is tight, so a query that is far *for that cluster* is flagged even when
    # it would pass the global threshold inflated by sparse domains.
    ood_per_cluster: bool = False  # measured on train-only leave-one-domain-out: no better (docs/results.md)
    # "knn": the distance to the nearest train queries flags a query. "domains": the domain detector
    # (router/ood.py ``DomainDetector``: Mahalanobis distance to the domain means, or the domain classifier's
    # energy), which needs rows from at least two domains. "auto": "domains" when the rows name two or more and
    # neither a refine tier nor per-cluster thresholds are asked for (those refine the kNN score), else "knn".
    ood_method: str = "auto"
    # The domain detector's OOD margin (router/ood.py ``DomainDetector.margin``): from score ``ood_margin_from``
    # (0 = the held-out median, 1 = the line) a specialist must beat the generalist's estimated accuracy by a
    # margin rising linearly to ``ood_margin`` at the line. Fixed, not chosen per dataset: an in-domain
    # validation slice cannot see what it protects against. Chosen on train rows only (docs/results.md, "The
    # OOD margin"; ``python -m bench.ood_detector --grid``): of the settings at which RouterDC's train-only
    # leave-one-domain-out was even with the generalist on average and within 3 points on every domain, the
    # one with the best in-domain objective.
    ood_margin: float = 0.1
    ood_margin_from: float = 0.5
    # The score the margin reads: "energy" (that part alone) or "max" (the detector's score, the larger part). The
    # energy says how well the query fits a *known* domain; a far but recognisable query (the spread-out MMLU) keeps
    # its domain's estimates. Chosen by the same rule on train rows (``python -m bench.ood_detector --parts``).
    ood_margin_score: str = "energy"
    min_cluster_validation: int = 20  # fewer held-out rows near a cluster: it uses the global threshold
    soft_options: tuple[tuple[int, float], ...] = ((1, 1.0), (3, 0.02), (3, 0.05))
    knn_weights: tuple[float, ...] = (0.0, 0.3, 0.6)
    # Share of the domain level's estimate (router/domains.py) in the blend with the cluster estimate; used
    # only when the train rows name at least two domains. 0 keeps the clusters alone.
    domain_weights: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0)
    domain_weight: float | None = None  # set: this weight, not chosen (``triage calibrate --domain-weight``)
    # The domain level per domain *and cluster* (router/domains.py ``cell_estimate``): each (domain, cluster) cell
    # is the Beta posterior of that domain's rows in that cluster with this many pseudo-queries of the domain's own
    # row as its prior. 0: the per-domain rows alone (formats 2-4).
    domain_cell_strength: float = 40.0
    knn_k: int = 20
    validation_fraction: float = 0.2
    # Model selection on one held-out slice (``validation_fraction`` of the train rows, by hash) or, with
    # ``selection_folds`` > 1, on every train row once: that many folds by hash, each scored by a fit on the
    # others, the folds' knob sweeps pooled. One 20 % slice of RouterDC moves the objective by about a point
    # either way (docs/results.md); five folds see five times the rows, for five fits per candidate k. Not the
    # default: on train rows the gain was mixed (``python -m bench.selection_folds``, docs/results.md), and five
    # folds pick domain weight 1 more often, which leaves a domain nobody calibrated on entirely to the table of
    # whichever known domain the classifier names (RouterDC leave-one-domain-out, gsm8k: -23.75 vs -15.83).
    selection_folds: int = 1
    max_reference: int = 10_000
    seed: int = 0
    # With a refine tier (a fast embedder for the table, a better one for close OOD calls): held-out queries
    # whose fast score is at or above this quantile of their cluster's held-out scores are re-scored by the
    # refine embedder. 0.4: the largest quantile whose OOD AUROC stayed within 0.01 of MiniLM alone on every
    # RouterDC domain with >= 300 rows, in a leave-one-domain-out on train rows only (python -m bench.refine_quantile).
    refine_quantile: float = 0.4


@dataclass
class Table:
    counts: Floats
    accuracy: Floats
    estimate: Floats
    lower: Floats
    upper: Floats
    mean_cost: Floats
    cliff: npt.NDArray[np.bool_]


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


def validation_masks(ids: list[str], config: FitConfig) -> list[npt.NDArray[np.bool_]]:
    """The held-out rows of each selection fold (True = held out), by a hash of each row's id."""
    if config.selection_folds <= 1:
        return [np.array([hash_fraction("val:" + i) < config.validation_fraction for i in ids])]
    fold = np.array([int(hash_fraction("fold:" + i) * config.selection_folds) for i in ids])
    return [fold == f for f in range(config.selection_folds)]


@dataclass
class Fold:
    """One selection fold: rows to fit on, rows held out, and the fits on the former (cached per k).
    ``fit_x`` (float32) and ``fit_s32`` are the candidate artifacts' reference rows and scores as they take them."""

    fit_x: Matrix
    val_x: Matrix
    fit_s: Floats
    fit_s32: Matrix
    val_s: Floats
    fit_c: Floats
    val_c: Floats
    domains: DomainLevel | None
    fit_d: npt.NDArray[np.str_] | None
    seed: int
    clusters: dict[int, tuple[Matrix, npt.NDArray[np.intp]]] = field(default_factory=dict)
    tables: dict[tuple[int, float], Table] = field(default_factory=dict)
    nearest: dict[int, tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]] = field(default_factory=dict)
    levels: dict[int, DomainLevel] = field(default_factory=dict)

    @classmethod
    def split(cls, val: npt.NDArray[np.bool_], x: Matrix, scores: Floats, costs: Floats,
              domains: npt.NDArray[np.str_] | None, generalist: int, config: FitConfig) -> Fold:
        fit_s, fit_c = scores[~val], costs[~val]
        level = domain_level(x[~val], domains[~val], fit_s, fit_c, generalist, config) if domains is not None else None
        return cls(x[~val].astype(np.float32), x[val], fit_s, fit_s.astype(np.float32), scores[val], fit_c,
                   costs[val], level, domains[~val] if domains is not None else None, config.seed)

    def table(self, k: int, margin: float, generalist: int, config: FitConfig) -> tuple[Matrix, Table]:
        if k not in self.clusters:
            self.clusters[k] = kmeans(self.fit_x, k, self.seed)
        centroids, labels = self.clusters[k]
        if (k, margin) not in self.tables:
            self.tables[k, margin] = beta_table(labels, k, self.fit_s, self.fit_c, generalist,
                                                config.prior_strength, config.cliff_confidence, margin)
        return centroids, self.tables[k, margin]

    def level(self, k: int, weight: float, config: FitConfig) -> DomainLevel | None:
        """The fold's domain level at this weight, with its cells for the fold's k clusters (cached per k)."""
        if self.domains is None or self.fit_d is None or weight <= 0:
            return None
        if k not in self.levels:
            labels = self.clusters[k][1]
            self.levels[k] = domain_cells(self.domains, self.fit_d, labels, k, self.fit_s, self.fit_c,
                                          config.domain_cell_strength)
        return replace(self.levels[k], weight=weight)

    def neighbours(self, k: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The held-out rows' ``k`` nearest fit rows: the same for every candidate, so computed once."""
        if k not in self.nearest:
            _, indices, sims = knn(self.val_x, self.fit_x, k)
            self.nearest[k] = (indices, sims)
        return self.nearest[k]


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


def in_memory_artifact(
    models: list[str],
    generalist: str,
    reference_model: str,
    dim: int,
    centroids: Matrix,
    table: Table,
    reference: Matrix,
    reference_scores: Matrix,
    *,
    soft_top: int,
    temperature: float,
    knn_weight: float,
    knn_k: int,
    ood_k: int,
    ood_threshold: float,
    cluster_thresholds: Floats | None = None,
    refine: RefineTier | None = None,
    domains: DomainLevel | None = None,
    ood_detector: DomainDetector | None = None,
) -> Artifact:
    """The same ``Artifact`` the router loads, built without the disk round trip (for model selection)."""
    art = Artifact()
    art.models, art.generalist, art.reference_model = list(models), generalist, reference_model
    art.embedder_name, art.embedder_dim, art.k, art.manifest = "in-memory", dim, len(centroids), {}
    art.centroids = centroids
    art.counts, art.accuracy, art.estimate = table.counts, table.accuracy, table.estimate
    art.mean_cost, art.cliff = table.mean_cost, table.cliff
    art.reference, art.reference_scores = reference, reference_scores
    art.soft_top, art.temperature, art.knn_weight = min(soft_top, len(centroids)), temperature, knn_weight
    art.knn_k, art.ood_k, art.ood_threshold = (
        min(knn_k, len(reference)),
        min(ood_k, len(reference)),
        ood_threshold,
    )
    art.ood_cluster_thresholds = (
        np.full(len(centroids), ood_threshold) if cluster_thresholds is None else cluster_thresholds
    )
    art.refine = refine
    art.domains = domains
    if ood_detector is not None:  # its scores are in units of its thresholds: 1.0 is the line
        art.ood_detector, art.ood_threshold = ood_detector, 1.0
        art.ood_cluster_thresholds = np.ones(len(centroids))
    art.normalisation = "global"  # what bundle.py writes: selection scores the policy the router will run
    return art


def sweep(
    policy: Policy, embeddings: Matrix, scores: Floats, costs: Floats, knobs: npt.NDArray[np.float64] = KNOBS,
    neighbours: tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]] | None = None,
) -> list[tuple[float, float, float]]:
    """(knob, mean accuracy, mean cost) on rows with known outcomes: what the router would score."""
    est = policy.estimate(embeddings, neighbours=neighbours)
    rows = np.arange(len(scores))
    out = []
    for knob in knobs:
        chosen, _ = policy.choose(est, np.full(len(scores), knob))
        out.append((float(knob), float(scores[rows, chosen].mean()), float(costs[rows, chosen].mean())))
    return out


def quality(points: list[tuple[float, float, float]], scores: Floats, costs: Floats) -> float:
    """Validation objective: AIQ when models differ in cost, else accuracy at knob 1.

    The AIQ is the one ``triage eval`` reports: the hull is anchored at the cheapest single model (any router
    can send everything there). Without the anchor the hull would extend flat to the left of the router's
    cheapest point, crediting a router that only reaches the dear end with that end's accuracy over the whole
    cost range, and selection would favour settings that never trade accuracy for cost.
    """
    single_cost = costs.mean(axis=0)
    if np.ptp(single_cost) > 0:
        return anchored_aiq([(c, a) for _, a, c in points], scores.mean(axis=0), single_cost)
    return max(a for k, a, _ in points if k == 1.0)


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
    reference_model = models[int(np.argmax(scores.mean(axis=0)))]
    if len(ids) < 2:
        raise ValueError("need at least 2 train rows to fit")
    detect = use_domain_detector(config, domains, refine_embeddings is not None)
    masks = validation_masks(ids, config)
    if any(m.sum() < 20 or (~m).sum() < 20 for m in masks):
        if config.ood_method == "domains":  # auto falls back to the kNN distance, as small_fit does
            raise ValueError("too few train rows for a validation slice, which the domain OOD detector is "
                             "calibrated on: use --ood-method knn or auto")
        return small_fit(embeddings, scores, costs, g, config, k_fixed)
    # A fixed weight of 0 needs no classifier: the domain level is then off, as without domains.
    domain_arr = np.asarray(domains) if domains is not None and config.domain_weight != 0 else None
    folds = [Fold.split(mask, embeddings, scores, costs, domain_arr, g, config) for mask in masks]
    val = masks[0]  # the OOD threshold (and the refine tier) are calibrated on the first fold's held-out rows
    val_x, fit_ref = folds[0].val_x, folds[0].fit_x
    # All held-out rows of all folds: the single models' cost range that anchors the AIQ objective.
    all_val_s = np.concatenate([f.val_s for f in folds])
    all_val_c = np.concatenate([f.val_c for f in folds])
    max_k = max(1, min(len(f.fit_x) for f in folds) // 20)  # keep clusters at >= ~20 queries on average
    candidates = [k_fixed] if k_fixed else [k for k in config.k_candidates if k <= max_k] or [max(1, max_k)]
    selection: list[dict[str, Any]] = []
    best: tuple[float, int, int, float, float, float] | None = None
    fixed_weight = (config.domain_weight,) if config.domain_weight is not None else config.domain_weights
    domain_weights = fixed_weight if folds[0].domains is not None else (0.0,)
    combos = list(itertools.product(candidates, config.soft_options, config.knn_weights, domain_weights))

    def routed(k: int, margin: float, soft_top: int, temperature: float, knn_weight: float,
               domain_weight: float) -> list[tuple[float, float, float]]:
        """The knob sweep on every fold's held-out rows, pooled (each fold fitted without them)."""
        per_fold = []
        for f in folds:
            centroids, table = f.table(k, margin, g, config)
            level = f.level(k, domain_weight, config)
            art = in_memory_artifact(
                models, generalist, reference_model, embeddings.shape[1], centroids, table,
                f.fit_x, f.fit_s32, soft_top=soft_top,
                temperature=temperature, knn_weight=knn_weight, knn_k=config.knn_k, ood_k=config.ood_k,
                ood_threshold=np.inf, domains=level,
            )
            nearby = f.neighbours(max(art.ood_k, art.knn_k))
            per_fold.append((len(f.val_s), sweep(Policy(art), f.val_x, f.val_s, f.val_c, neighbours=nearby)))
        n = sum(size for size, _ in per_fold)
        return [
            (knob, sum(size * pts[i][1] for size, pts in per_fold) / n,
             sum(size * pts[i][2] for size, pts in per_fold) / n)
            for i, knob in enumerate(KNOBS.tolist())
        ]

    first_margin = config.cliff_margin if config.cliff_margin is not None else 0.0
    for k, (soft_top, temperature), knn_weight, domain_weight in tqdm(
        combos, desc="model selection", disable=not progress
    ):
        points = routed(k, first_margin, soft_top, temperature, knn_weight, domain_weight)
        score = quality(points, all_val_s, all_val_c)
        selection.append(
            {
                "k": k,
                "soft_top": soft_top,
                "temperature": temperature,
                "knn_weight": knn_weight,
                "domain_weight": domain_weight,
                "validation_quality": score,
                "validation_accuracy_knob1": points[-1][1],
            }
        )
        # Ties keep the earlier (smaller k, hard assignment, no kNN, no domain level): simpler wins when it
        # measures the same.
        if best is None or score > best[0] + 1e-9:
            best = (score, k, soft_top, temperature, knn_weight, domain_weight)
    assert best is not None
    best_score, k, soft_top, temperature, knn_weight, domain_weight = best

    # Cliff margin: with the chosen settings, each candidate margin on the same held-out rows (the same
    # objective); ties keep the smaller margin, so margin 0 (the original rule) stays unless another beats it.
    margin, margin_selection = first_margin, []
    if config.cliff_margin is None:
        best_margin = (-np.inf, first_margin)
        for cand in config.cliff_margins:
            points = routed(k, cand, soft_top, temperature, knn_weight, domain_weight)
            score, acc1 = quality(points, all_val_s, all_val_c), points[-1][1]
            margin_selection.append(
                {"cliff_margin": cand, "validation_quality": score, "validation_accuracy_knob1": acc1}
            )
            if score > best_margin[0] + 1e-9:
                best_margin = (score, cand)
        margin = best_margin[1]

    # OOD threshold: validation rows scored against the fit rows only (never against themselves).
    val_ood, _, _ = knn(val_x, fit_ref, config.ood_k)
    quantiles = {f"{q:.2f}": float(np.quantile(val_ood, q)) for q in (0.9, 0.95, 0.99)}
    threshold = float(np.quantile(val_ood, config.ood_quantile))
    all_domains = np.asarray(domains) if domains is not None else None
    fit_detector = None
    if detect:
        assert all_domains is not None
        fit_detector, detector_val_scores = detector_thresholds(fit_ref, all_domains[~val], val_x, folds[0].domains,
                                                                config)

    # Final clusters and table on every train row; reference = all train rows (capped, seeded subsample).
    centroids, labels = kmeans(embeddings, k, config.seed)
    table = beta_table(labels, k, scores, costs, g, config.prior_strength, config.cliff_confidence, margin)
    cluster_thresholds = per_cluster_thresholds(val_x, val_ood, centroids, threshold, config)
    keep = np.arange(len(embeddings))
    if len(keep) > config.max_reference:
        keep = np.sort(
            np.random.default_rng(config.seed).choice(len(keep), config.max_reference, replace=False)
        )
    final_domains = None
    if domain_arr is not None and domain_weight > 0:  # the classifier and per-domain table refitted on every row
        final_domains = domain_level(embeddings, domain_arr, scores, costs, g, config, domain_weight)
        if final_domains is not None:
            final_domains = domain_cells(final_domains, domain_arr, labels, k, scores, costs,
                                         config.domain_cell_strength)
    detector = None
    if fit_detector is not None:
        assert all_domains is not None
        if final_domains is None:  # the classifier serves the detector only: weight 0 in the blend
            final_domains = domain_level(embeddings, all_domains, scores, costs, g, config, 0.0)
        assert final_domains is not None
        # The router's detector: means and covariance from every train row (in the classifier's domain order),
        # thresholds from the validation rows.
        means, precision = mahalanobis_fit(embeddings, all_domains, final_domains.names)
        detector = replace(fit_detector, means=means, precision=precision)
        val_ood = detector_val_scores
    refine = None
    if refine_embeddings is not None:
        refine = refine_fit(refine_embeddings, val, val_x, val_ood, centroids, keep, config)
    return FitResult(
        k=k,
        centroids=centroids,
        labels=labels,
        table=table,
        soft_top=min(soft_top, k),
        temperature=temperature,
        knn_weight=knn_weight,
        knn_k=config.knn_k,
        ood_k=config.ood_k,
        ood_threshold=threshold,
        ood_quantiles=quantiles,
        cluster_thresholds=cluster_thresholds if config.ood_per_cluster else None,
        refine=refine,
        domains=final_domains,
        ood_detector=detector,
        reference=embeddings[keep].astype(np.float32),
        reference_scores=scores[keep].astype(np.float32),
        global_accuracy=scores.mean(axis=0),
        selection=selection,
        validation_ood_scores=val_ood,
        cliff_margin=margin,
        margin_selection=margin_selection,
    )


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
