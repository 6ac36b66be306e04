"""Offline evaluation: the router against every single model, random, the oracle and an Avengers-Pro-style
cluster baseline, on rows that were not fitted on.

The router's numbers come from ``Policy.estimate`` + ``Policy.choose``, the code ``Policy.decide`` runs for
the server, so what this reports is what the server would have done on these queries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.eval_result import (
    AiqComparison,
    AlphaPoint,
    DomainRow,
    EvalResult,
    KnobChoice,
    KnobPoint,
    OodSummary,
    Point,
)
from calibration.metrics import aiq_difference_interval, anchored_aiq, auroc, frontier, oracle, paired_se, random_router
from calibration.selection import KNOBS
from calibration.table import kmeans
from router.clusters import nearest
from router.policy import Estimates, Policy, Refiner

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
ALPHAS = [round(0.05 * i, 2) for i in range(21)]


@dataclass
class AvengersBaseline:
    """Avengers-Pro-style routing: per cluster, alpha * acc_norm + (1 - alpha) * (1 - cost_norm), argmax.

    Accuracy and cost are min-max normalised across models within each cluster; hard nearest cluster.
    """

    centroids: Matrix
    accuracy: Floats  # (k, m)
    cost: Floats  # (k, m)

    @classmethod
    def fit(
        cls, embeddings: Matrix, scores: Floats, costs: Floats, k: int, seed: int = 0
    ) -> AvengersBaseline:
        centroids, labels = kmeans(embeddings, k, seed)
        acc = np.zeros((k, scores.shape[1]))
        cost = np.zeros((k, scores.shape[1]))
        for c in range(k):
            rows = labels == c
            acc[c] = scores[rows].mean(axis=0) if rows.any() else scores.mean(axis=0)
            cost[c] = costs[rows].mean(axis=0) if rows.any() else costs.mean(axis=0)
        return cls(centroids, acc, cost)

    def choose(self, embeddings: Matrix, alpha: float) -> npt.NDArray[np.intp]:
        def norm(v: Floats) -> Floats:
            span = np.ptp(v, axis=1, keepdims=True)
            return np.where(span > 0, (v - v.min(axis=1, keepdims=True)) / np.where(span > 0, span, 1), 0.0)

        score = alpha * norm(self.accuracy) + (1 - alpha) * (1 - norm(self.cost))
        return np.asarray(np.argmax(score[nearest(embeddings, self.centroids)], axis=1), dtype=np.intp)


def picked(scores: Floats, costs: Floats, chosen: npt.NDArray[np.intp]) -> tuple[float, float]:
    rows = np.arange(len(scores))
    return float(scores[rows, chosen].mean()), float(costs[rows, chosen].mean())


def rows_of(vectors: Matrix | None) -> Refiner | None:
    """A ``refine`` callable over precomputed vectors (what the router's decider computes on demand)."""
    if vectors is None:
        return None
    return lambda rows: vectors[rows]


def evaluate(
    policy: Policy,
    models: list[str],
    test_x: Matrix,
    test_s: Floats,
    test_c: Floats,
    baseline: AvengersBaseline,
    ood_x: Matrix | None = None,
    ood_s: Floats | None = None,
    ood_c: Floats | None = None,
    test_refine: Matrix | None = None,
    ood_refine: Matrix | None = None,
    test_domains: Sequence[str] | None = None,
    domain_best: Mapping[str, int] | None = None,
) -> EvalResult:
    """``test_refine`` / ``ood_refine``: the same rows embedded by the artifact's refine embedder, if it has a
    refine tier (only the rows the policy asks for are used, as in the router).

    ``test_domains`` (each test row's domain label) and ``domain_best`` (domain -> index of the model with the
    best accuracy on that domain's fitted rows) add the *domain router*: a baseline that is told every query's
    domain and sends it to that model. It needs what the router never gets, the label, so it shows how much of
    the gain over the best single model is there to take by recognising domains alone; ``per_domain`` then
    compares Triage at knob 1 with it domain by domain."""
    est = policy.estimate(test_x, rows_of(test_refine))
    n = len(test_s)
    triage, triage_choices, margined = _knob_sweep(policy, est, models, test_s, test_c)
    avengers_choices = [baseline.choose(test_x, alpha) for alpha in ALPHAS]
    avengers = [AlphaPoint(alpha, *picked(test_s, test_c, chosen))
                for alpha, chosen in zip(ALPHAS, avengers_choices, strict=True)]
    single = {m: Point(float(test_s[:, j].mean()), float(test_c[:, j].mean())) for j, m in enumerate(models)}
    best_single = max(single, key=lambda m: (single[m].accuracy, -single[m].cost))
    best_point = max(triage, key=lambda p: (p.accuracy, -p.cost))
    matching = [p for p in triage if p.accuracy >= single[best_single].accuracy - 1e-12]
    cheapest = min(matching, key=lambda p: (p.cost, p.knob)) if matching else None
    domain_router, per_domain = None, None
    if test_domains is not None and domain_best is not None:
        domain_router, per_domain = _by_domain(models, test_s, test_c, est, triage_choices[-1], margined,
                                               list(test_domains), domain_best)
    ood, ood_scores = None, None
    if ood_x is not None and ood_s is not None and ood_c is not None and len(ood_x):
        ood, ood_scores = _held_out(policy, models, est, margined, ood_x, ood_s, ood_c, ood_refine)
    return EvalResult(
        n=n,
        has_cost=max(p.cost for p in single.values()) > min(p.cost for p in single.values()),
        triage=triage,
        avengers=avengers,
        single=single,
        oracle=Point(*oracle(test_s, test_c)),
        random=Point(*random_router(test_s, test_c)),
        best_single=best_single,
        best=KnobChoice(best_point.knob, best_point.accuracy, best_point.cost),
        cheapest_knob_matching_best_single=(KnobChoice(cheapest.knob, cheapest.accuracy, cheapest.cost)
                                            if cheapest is not None else None),
        knob1_minus_best_single=triage[-1].accuracy - single[best_single].accuracy,
        # Paired over the same rows: the standard error of the mean per-row difference.
        knob1_minus_best_single_se=paired_se(test_s[np.arange(n), triage_choices[-1]],
                                             test_s[:, models.index(best_single)]),
        triage_frontier=frontier([(p.cost, p.accuracy) for p in triage]),
        aiq=_aiq(test_s, test_c, single, triage, avengers, triage_choices, avengers_choices),
        domain_router=domain_router,
        per_domain=per_domain,
        # in-domain test rows the refine embedder re-scored
        refined_rate=float(est.refined.mean()) if policy.artifact.refine is not None else None,
        ood=ood,
        in_domain_ood_scores=est.ood_score,
        clusters=est.cluster,
        ood_scores=ood_scores,
    )


def _knob_sweep(
    policy: Policy, est: Estimates, models: list[str], scores: Floats, costs: Floats
) -> tuple[list[KnobPoint], list[npt.NDArray[np.intp]], npt.NDArray[np.bool_]]:
    """Triage at every knob, each knob's per-row choices, and the rows the OOD margin sent to the generalist at
    knob 1 (the last knob)."""
    points, choices = [], []
    margined = np.zeros(len(scores), dtype=bool)
    for knob in KNOBS:
        chosen, reasons = policy.choose(est, np.full(len(scores), knob))
        choices.append(chosen)
        margined = np.array([r == "ood_margin" for r in reasons], dtype=bool)
        points.append(KnobPoint(
            knob,
            *picked(scores, costs, chosen),
            ood_fallback_rate=float(np.mean([r == "ood_fallback" for r in reasons])),
            ood_margin_rate=float(margined.mean()),
            cliff_rate=float(np.mean([r == "cliff" for r in reasons])),
            share={m: float(np.mean(chosen == j)) for j, m in enumerate(models)},
        ))
    return points, choices, margined


def _aiq(
    scores: Floats, costs: Floats, single: dict[str, Point], triage: list[KnobPoint], avengers: list[AlphaPoint],
    triage_choices: list[npt.NDArray[np.intp]], avengers_choices: list[npt.NDArray[np.intp]],
) -> AiqComparison | None:
    """AIQ of both routers, None when every model costs the same (no cost axis to integrate over)."""
    single_cost = [p.cost for p in single.values()]
    if max(single_cost) <= min(single_cost):
        return None
    # Every router may also send everything to the cheapest model, so its point anchors both hulls: a router
    # that only reaches the dear end gets no credit for the cheap end it cannot serve.
    single_accuracy = [p.accuracy for p in single.values()]
    return AiqComparison(
        triage=anchored_aiq([(p.cost, p.accuracy) for p in triage], single_accuracy, single_cost),
        avengers=anchored_aiq([(p.cost, p.accuracy) for p in avengers], single_accuracy, single_cost),
        cost_range=[min(single_cost), max(single_cost)],
        # How far the difference moves when the test rows are resampled (1,000 paired bootstrap resamples).
        difference_interval_95=aiq_difference_interval(scores, costs, triage_choices, avengers_choices),
    )


def _held_out(
    policy: Policy, models: list[str], est: Estimates, margined: npt.NDArray[np.bool_], ood_x: Matrix,
    ood_s: Floats, ood_c: Floats, ood_refine: Matrix | None,
) -> tuple[OodSummary, Floats]:
    """The held-out domains' rows against the in-domain test rows (``est``), and their OOD scores."""
    ood_est = policy.estimate(ood_x, rows_of(ood_refine))
    g = models.index(policy.artifact.generalist)
    chosen, reasons = policy.choose(ood_est, np.ones(len(ood_x)))
    summary = OodSummary(
        n=len(ood_x),
        auroc=auroc(est.ood_score, ood_est.ood_score),
        flagged_rate=float(ood_est.is_ood.mean()),
        in_domain_flagged_rate=float(est.is_ood.mean()),
        ood_margin_rate=float(np.mean([r == "ood_margin" for r in reasons])),
        in_domain_ood_margin_rate=float(margined.mean()),
        routed_accuracy_knob1=picked(ood_s, ood_c, chosen)[0],
        generalist_accuracy=float(ood_s[:, g].mean()),
        best_single_accuracy=float(ood_s.mean(axis=0).max()),
    )
    return summary, ood_est.ood_score


def _by_domain(models: list[str], scores: Floats, costs: Floats, est: Estimates, triage_choice: npt.NDArray[np.intp],
               margined: npt.NDArray[np.bool_], domains: list[str], domain_best: Mapping[str, int],
               ) -> tuple[Point, list[DomainRow]]:
    labels = np.array(domains)
    pick = np.array([domain_best[d] for d in domains], dtype=np.intp)
    rows = np.arange(len(scores))
    per_domain = []
    for d, n in sorted(Counter(domains).items(), key=lambda item: (-item[1], item[0])):
        m = labels == d
        j = domain_best[d]
        per_domain.append(DomainRow(
            domain=d,
            n=n,
            triage_knob1=float(scores[rows[m], triage_choice[m]].mean()),
            ood_flagged_rate=float(est.is_ood[m].mean()),
            ood_margin_rate=float(margined[m].mean()),
            train_best=models[j],
            train_best_accuracy=float(scores[m, j].mean()),
            test_best_accuracy=float(scores[m].mean(axis=0).max()),
        ))
    return Point(*picked(scores, costs, pick)), per_domain
