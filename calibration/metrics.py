"""Router quality numbers: AIQ (RouterBench), AUROC, and the oracle / random reference points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-decreasing upper convex hull of (cost, accuracy) points, cheapest first.

    Mixing two routers at random achieves any point on the segment between them, so the hull is what a
    router's operating points can reach; "non-decreasing" drops points where paying more buys nothing.
    """
    pts = sorted(set(points))
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            hull.pop()  # same cost, sorted by accuracy: the later point is at least as accurate
        if hull and p[1] <= hull[-1][1]:
            continue  # costs more, not more accurate
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Drop the middle point when it lies on or under the segment from hull[-2] to p.
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def hull_value(hull: list[tuple[float, float]], cost: float) -> float:
    """Accuracy of the hull at ``cost``: flat left of the cheapest point and right of the dearest."""
    xs = [p[0] for p in hull]
    ys = [p[1] for p in hull]
    return float(np.interp(cost, xs, ys))


def aiq(
    points: Sequence[tuple[float, float]], cost_min: float, cost_max: float, samples: int = 2001
) -> float:
    """Area under the hull over [cost_min, cost_max] divided by the range (RouterBench's AIQ).

    Left of the router's cheapest point the hull is extended flat (``np.interp`` clamps), which only
    matters for routers that cannot reach the cheapest single model's cost.
    """
    hull = frontier(points)
    if cost_max <= cost_min:
        return hull_value(hull, cost_min)
    xs = np.linspace(cost_min, cost_max, samples)
    ys = np.interp(xs, [p[0] for p in hull], [p[1] for p in hull])
    return float(np.trapezoid(ys, xs) / (cost_max - cost_min))


def anchored_aiq(
    points: Sequence[tuple[float, float]], single_accuracy: npt.ArrayLike, single_cost: npt.ArrayLike
) -> float:
    """The AIQ ``triage eval`` reports and model selection optimises: the router's (cost, accuracy) ``points`` with
    the cheapest single model's point added (any router can send everything there; the more accurate of equally
    cheap ones), over the single models' cost range."""
    acc, cost = np.asarray(single_accuracy, float), np.asarray(single_cost, float)
    j = min(range(len(cost)), key=lambda m: (cost[m], -acc[m]))
    return aiq([*points, (float(cost[j]), float(acc[j]))], float(cost.min()), float(cost.max()))


def aiq_difference_interval(
    scores: Floats, costs: Floats, first: Sequence[npt.NDArray[np.intp]], second: Sequence[npt.NDArray[np.intp]],
    resamples: int = 1000, seed: int = 0,
) -> tuple[float, float]:
    """95 % paired bootstrap interval of AIQ(first) - AIQ(second) over the rows: each router is a sweep of per-row
    model choices (``first``: Triage's knobs, ``second``: the baseline's alphas), both anchored at the resample's
    cheapest single model over the resample's single-model cost range, as ``triage eval`` computes them."""
    rows = np.arange(len(scores))
    routers = [*first, *second]
    acc = np.stack([scores[rows, c] for c in routers])  # (R, n)
    cost = np.stack([costs[rows, c] for c in routers])
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    split = len(first)
    for b in range(resamples):
        idx = rng.integers(0, len(rows), len(rows))
        a, c = acc[:, idx].mean(axis=1), cost[:, idx].mean(axis=1)
        single_a, single_c = scores[idx].mean(axis=0), costs[idx].mean(axis=0)
        out[b] = (anchored_aiq([*zip(c[:split], a[:split], strict=True)], single_a, single_c)
                  - anchored_aiq([*zip(c[split:], a[split:], strict=True)], single_a, single_c))
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def paired_se(first: Floats, second: Floats) -> float:
    """Standard error of ``mean(first - second)`` over paired rows (0 for fewer than two rows)."""
    d = np.asarray(first, float) - np.asarray(second, float)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def auroc(negatives: Floats, positives: Floats) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    allv = np.concatenate([neg, pos])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(avg, counts)
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(neg) * len(pos)))


def oracle(scores: Floats, costs: Floats) -> tuple[float, float]:
    """Best model per query, cheapest among the best: (accuracy, mean cost)."""
    best = scores.max(axis=1, keepdims=True)
    c = np.where(scores >= best - 1e-12, costs, np.inf)
    pick = c.argmin(axis=1)
    rows = np.arange(len(scores))
    return float(scores[rows, pick].mean()), float(costs[rows, pick].mean())


def random_router(scores: Floats, costs: Floats) -> tuple[float, float]:
    """Expected accuracy and cost of picking a model uniformly at random per query."""
    return float(scores.mean()), float(costs.mean())
