"""AIQ, frontier and AUROC on hand-checkable numbers."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.metrics import aiq, auroc, frontier, oracle


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
