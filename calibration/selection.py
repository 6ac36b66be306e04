"""Model selection: the policy's settings (k, soft assignment, kNN blend, domain weight, cliff margin) chosen by
routing quality on held-out train rows.

Each selection fold holds out some train rows (one 20 % slice by hash, or every row once over ``selection_folds``
folds) and fits candidate artifacts on the others; every candidate routes the held-out rows over the knob sweep,
the folds' sweeps are pooled, and the objective (``quality``) ranks the candidates. Test rows are never seen here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from calibration.config import FitConfig
from calibration.data import hash_fraction
from calibration.metrics import anchored_aiq
from calibration.table import Table, beta_table, domain_cells, domain_level, kmeans
from router.artifact import Artifact
from router.domains import DomainLevel
from router.ood import knn
from router.policy import Policy

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
Points = list[tuple[float, float, float]]  # (knob, mean accuracy, mean cost) over the knob sweep
KNOBS = tuple(round(0.1 * i, 1) for i in range(11))  # the knob sweep of selection and of ``triage eval``


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


def sweep(
    policy: Policy, embeddings: Matrix, scores: Floats, costs: Floats, knobs: Sequence[float] = KNOBS,
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


@dataclass(frozen=True)
class Settings:
    """One candidate of the policy's settings."""

    k: int
    soft_top: int
    temperature: float
    knn_weight: float
    domain_weight: float
    cliff_margin: float


@dataclass
class Selection:
    """The chosen settings, every candidate's validation scores, and the folds they were measured on."""

    chosen: Settings
    folds: list[Fold]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    margins: list[dict[str, Any]] = field(default_factory=list)


class Selector:
    """Scores candidate settings on the folds' held-out rows (each fold fitted without them)."""

    def __init__(self, folds: list[Fold], models: list[str], generalist: str, reference_model: str,
                 config: FitConfig) -> None:
        self.folds, self.models, self.generalist, self.reference_model = folds, models, generalist, reference_model
        self.g, self.config = models.index(generalist), config
        # All held-out rows of all folds: the single models' cost range that anchors the AIQ objective.
        self.val_s = np.concatenate([f.val_s for f in folds])
        self.val_c = np.concatenate([f.val_c for f in folds])

    def candidate(self, fold: Fold, s: Settings) -> Artifact:
        """The artifact ``s`` makes of ``fold``'s fit rows: what the router would run, nothing out of domain."""
        centroids, table = fold.table(s.k, s.cliff_margin, self.g, self.config)
        n_ref = len(fold.fit_x)
        return Artifact(
            models=list(self.models), generalist=self.generalist, reference_model=self.reference_model,
            embedder_name="in-memory", embedder_dim=centroids.shape[1], centroids=centroids, counts=table.counts,
            accuracy=table.accuracy, estimate=table.estimate, mean_cost=table.mean_cost, cliff=table.cliff,
            reference=fold.fit_x, reference_scores=fold.fit_s32, soft_top=min(s.soft_top, len(centroids)),
            temperature=s.temperature, knn_weight=s.knn_weight, knn_k=min(self.config.knn_k, n_ref),
            ood_k=min(self.config.ood_k, n_ref), ood_threshold=np.inf,
            domains=fold.level(s.k, s.domain_weight, self.config))

    def routed(self, s: Settings) -> Points:
        """The knob sweep on every fold's held-out rows, pooled."""
        per_fold = []
        for f in self.folds:
            art = self.candidate(f, s)
            nearby = f.neighbours(max(art.ood_k, art.knn_k))
            per_fold.append((len(f.val_s), sweep(Policy(art), f.val_x, f.val_s, f.val_c, neighbours=nearby)))
        n = sum(size for size, _ in per_fold)
        return [
            (knob, sum(size * pts[i][1] for size, pts in per_fold) / n,
             sum(size * pts[i][2] for size, pts in per_fold) / n)
            for i, knob in enumerate(KNOBS)
        ]

    def quality(self, points: Points) -> float:
        return quality(points, self.val_s, self.val_c)


def select(masks: list[npt.NDArray[np.bool_]], x: Matrix, scores: Floats, costs: Floats,
           domains: npt.NDArray[np.str_] | None, models: list[str], generalist: str, config: FitConfig,
           k_fixed: int | None = None, progress: bool = True) -> Selection:
    """The settings with the best validation objective: k, soft assignment, kNN blend and domain weight jointly,
    then the cliff margin with those (unless ``config`` fixes it). Ties keep the earlier candidate."""
    g = models.index(generalist)
    folds = [Fold.split(mask, x, scores, costs, domains, g, config) for mask in masks]
    reference_model = models[int(np.argmax(scores.mean(axis=0)))]
    selector = Selector(folds, models, generalist, reference_model, config)
    max_k = max(1, min(len(f.fit_x) for f in folds) // 20)  # keep clusters at >= ~20 queries on average
    ks = [k_fixed] if k_fixed else [k for k in config.k_candidates if k <= max_k] or [max(1, max_k)]
    fixed_weight = (config.domain_weight,) if config.domain_weight is not None else config.domain_weights
    domain_weights = fixed_weight if folds[0].domains is not None else (0.0,)
    first_margin = config.cliff_margin if config.cliff_margin is not None else 0.0
    combos = list(itertools.product(ks, config.soft_options, config.knn_weights, domain_weights))
    candidates: list[dict[str, Any]] = []
    best: tuple[float, Settings] | None = None
    for k, (soft_top, temperature), knn_weight, domain_weight in tqdm(
        combos, desc="model selection", disable=not progress
    ):
        s = Settings(k, soft_top, temperature, knn_weight, domain_weight, first_margin)
        points = selector.routed(s)
        score = selector.quality(points)
        candidates.append({"k": k, "soft_top": soft_top, "temperature": temperature, "knn_weight": knn_weight,
                           "domain_weight": domain_weight, "validation_quality": score,
                           "validation_accuracy_knob1": points[-1][1]})
        # Ties keep the earlier (smaller k, hard assignment, no kNN, no domain level): simpler wins when it
        # measures the same.
        if best is None or score > best[0] + 1e-9:
            best = (score, s)
    assert best is not None
    chosen, margins = best[1], list[dict[str, Any]]()
    if config.cliff_margin is None:
        chosen, margins = select_margin(selector, chosen, config.cliff_margins)
    return Selection(chosen, folds, candidates, margins)


def select_margin(selector: Selector, chosen: Settings,
                  margins: tuple[float, ...]) -> tuple[Settings, list[dict[str, Any]]]:
    """With the chosen settings, each candidate cliff margin on the same held-out rows (the same objective); ties
    keep the smaller margin, so margin 0 (the original rule) stays unless another beats it."""
    rows, best = [], (-np.inf, chosen.cliff_margin)
    for margin in margins:
        points = selector.routed(replace(chosen, cliff_margin=margin))
        score = selector.quality(points)
        rows.append({"cliff_margin": margin, "validation_quality": score, "validation_accuracy_knob1": points[-1][1]})
        if score > best[0] + 1e-9:
            best = (score, margin)
    return replace(chosen, cliff_margin=best[1]), rows
