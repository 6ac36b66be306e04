"""The math of fitting: Beta shrinkage, cliffs, OOD threshold on held-out rows, model selection."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.fit import FitConfig, beta_table, fit
from tests.calibration.conftest import MODELS, FakeEncoder, synthetic_rows


def test_small_cluster_cannot_crown_a_model() -> None:
    # Cluster 0: 5 queries, the weak model got all 5 right. Cluster 1: 500 queries, it is weak overall.
    labels = np.array([0] * 5 + [1] * 500)
    scores = np.zeros((505, 2))
    scores[:5, 1] = 1.0
    scores[:, 0] = 0.7
    scores[5:, 1] = (np.arange(500) % 10 < 3).astype(float)  # 30 %
    t = beta_table(
        labels, 2, scores, np.zeros((505, 2)), generalist=0, prior_strength=10, cliff_confidence=0.9
    )
    assert t.accuracy[0, 1] == 1.0  # raw: perfect
    # Shrunk: (10 * p_global + 5) / 15 with p_global ~ .31, i.e. well below the generalist's .7.
    assert t.estimate[0, 1] < 0.6
    assert t.estimate[0, 1] == pytest.approx(scores[:, 1].mean() * 10 / 15 + 5 / 15)
    assert not t.cliff[0, 1]  # 5 queries are no evidence of a cliff either
    assert t.cliff[1, 1]  # 500 queries at 30 % vs 70 %: a cliff
    assert not t.cliff[:, 0].any()  # the generalist never has one
    assert (t.lower <= t.estimate).all() and (t.estimate <= t.upper).all()


def test_fit_finds_the_specialists_cliff_and_calibrates_ood() -> None:
    rows = [r for r in synthetic_rows(n_per_domain=150) if r["split"] == "train"]
    enc = FakeEncoder()
    x = enc.encode([r["query"] for r in rows])
    scores = np.array([[r["scores"][m] for m in MODELS] for r in rows])
    costs = np.array([[r["cost"][m] for m in MODELS] for r in rows])
    result = fit([r["id"] for r in rows], x, scores, costs, MODELS, "general", FitConfig(), progress=False)
    domains = np.array([r["domain"] for r in rows])
    mathy = MODELS.index("mathy")
    for c in range(result.k):
        members = domains[result.labels == c]
        if len(members) >= 30 and (members == "math").mean() > 0.9:
            assert not result.table.cliff[c, mathy]
        if len(members) >= 30 and (members == "math").mean() < 0.1:
            assert result.table.cliff[c, mathy]  # 20-25 % vs 60-70 %: past its cliff
    assert {s["k"] for s in result.selection} >= {4}
    # Threshold from held-out validation rows: about 5 % of them lie above it, not 0 % (as on the fit rows).
    assert np.mean(result.validation_ood_scores > result.ood_threshold) <= 0.1
    far = enc.encode(["poetry: an unseen domain"])
    from router.ood import ood_scores

    assert ood_scores(far, result.reference, result.ood_k)[0] > result.ood_threshold
