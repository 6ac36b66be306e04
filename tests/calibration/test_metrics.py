"""AIQ, frontier and AUROC on hand-checkable numbers."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.metrics import aiq, aiq_difference_interval, auroc, frontier, oracle


def test_frontier_drops_points_under_the_hull_and_costlier_worse_points() -> None:
    points = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9), (4.0, 0.8)]
    # (2, .6) lies under the segment (1, .5)-(3, .9) at .7; (4, .8) costs more and is worse.
    assert frontier(points) == [(1.0, 0.5), (3.0, 0.9)]


def test_aiq_is_mean_height_of_hull_over_range() -> None:
    points = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9)]
    assert aiq(points, 1.0, 3.0) == pytest.approx(0.7)  # linear .5 -> .9
    # Flat beyond the dearest point: over [1, 5] the area is 1.4 + 2 * .9 = 3.2, / 4.
    assert aiq(points, 1.0, 5.0) == pytest.approx(0.8)
    assert aiq([(1.0, 0.8), (2.0, 0.6)], 1.0, 2.0) == pytest.approx(0.8)  # non-decreasing


def test_auroc() -> None:
    assert auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([0.1, 0.3]), np.array([0.2, 0.3])) == pytest.approx(0.625)  # one tie counts half


def test_oracle_prefers_cheaper_among_best() -> None:
    scores = np.array([[1.0, 1.0], [0.0, 1.0]])
    costs = np.array([[2.0, 1.0], [2.0, 3.0]])
    assert oracle(scores, costs) == (1.0, 2.0)  # row 0: model 1 (cheaper), row 1: model 1


def test_aiq_difference_interval_is_zero_for_the_same_router_and_excludes_zero_for_a_clearly_better_one() -> None:
    """Two models: a cheap one right on half the rows, a dear one on all. Routers are sweeps of per-row choices."""
    rng = np.random.default_rng(1)
    n = 400
    scores = np.stack([rng.random(n) < 0.5, np.ones(n, bool)], axis=1).astype(float)
    costs = np.tile([1.0, 10.0], (n, 1))
    cheap, dear = np.zeros(n, np.intp), np.ones(n, np.intp)
    # the oracle-like router sends only the cheap model's misses to the dear one: above the straight line
    smart = np.where(scores[:, 0] > 0, 0, 1).astype(np.intp)
    assert aiq_difference_interval(scores, costs, [cheap, dear], [cheap, dear], resamples=50) == (0.0, 0.0)
    lo, hi = aiq_difference_interval(scores, costs, [cheap, smart, dear], [cheap, dear], resamples=200)
    assert 0 < lo <= hi < 0.5
