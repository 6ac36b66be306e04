"""The math of fitting: Beta shrinkage, cliffs, OOD threshold on held-out rows, model selection."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.fit import FitConfig, fit
from calibration.table import beta_table, domain_cells
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


def test_cliff_margin_spares_a_uniformly_slightly_weaker_model_but_not_a_specialist_out_of_domain() -> None:
    # Two clusters of 3,000 queries. Generalist 70 % in both; "cheap" 68 % in both (uniformly 2 points weaker);
    # "specialist" 72 % in cluster 0, 40 % in cluster 1 (30 points worse: a cliff).
    n = 3000
    labels = np.array([0] * n + [1] * n)
    hits = np.arange(n) % 100

    def rate(p: int) -> np.ndarray:
        return (hits < p).astype(float)

    scores = np.stack(
        [
            np.concatenate([rate(70), rate(70)]),
            np.concatenate([rate(68), rate(68)]),
            np.concatenate([rate(72), rate(40)]),
        ],
        axis=1,
    )
    costs = np.zeros((2 * n, 3))
    strict = beta_table(labels, 2, scores, costs, generalist=0, prior_strength=10, cliff_confidence=0.9)
    assert strict.cliff[:, 1].all()  # margin 0 (the original rule): the cheap model is ineligible everywhere
    assert strict.cliff[1, 2] and not strict.cliff[0, 2]
    margin = beta_table(
        labels, 2, scores, costs, generalist=0, prior_strength=10, cliff_confidence=0.9, cliff_margin=0.05
    )
    assert not margin.cliff[:, 1].any()  # 2 points weaker is a slope, not a cliff
    assert margin.cliff[1, 2] and not margin.cliff[0, 2]  # 30 points worse is still past its cliff
    assert not margin.cliff[:, 0].any()
    np.testing.assert_array_equal(margin.estimate, strict.estimate)  # only the cliff rule moves


def test_fit_records_the_margin_it_chose_on_validation() -> None:
    rows = [r for r in synthetic_rows(n_per_domain=150) if r["split"] == "train"]
    x = FakeEncoder().encode([r["query"] for r in rows])
    scores = np.array([[r["scores"][m] for m in MODELS] for r in rows])
    costs = np.array([[r["cost"][m] for m in MODELS] for r in rows])
    ids = [r["id"] for r in rows]
    result = fit(ids, x, scores, costs, MODELS, "general", FitConfig(), progress=False)
    assert [m["cliff_margin"] for m in result.margin_selection] == list(FitConfig().cliff_margins)
    best = max(m["validation_quality"] for m in result.margin_selection)
    chosen = next(m for m in result.margin_selection if m["validation_quality"] > best - 1e-9)
    assert result.cliff_margin == chosen["cliff_margin"]  # the first (smallest) margin reaching the best score
    fixed = fit(ids, x, scores, costs, MODELS, "general", FitConfig(cliff_margin=0.0), progress=False)
    assert fixed.cliff_margin == 0.0 and fixed.margin_selection == []


def test_validation_objective_is_the_reports_anchored_aiq() -> None:
    """Selection scores a candidate with the AIQ ``triage eval`` reports: the hull starts at the cheapest single
    model. A router stuck at the dear end must not be credited with the dear end's accuracy across the range."""
    from calibration.metrics import aiq
    from calibration.selection import quality

    # Two models: cheap (cost 1, 60 %) and dear (cost 3, 80 %).
    scores = np.array([[1.0, 1.0]] * 60 + [[0.0, 1.0]] * 20 + [[0.0, 0.0]] * 20)
    costs = np.array([[1.0, 3.0]] * 100)
    always_dear = [(k, 0.8, 3.0) for k in np.linspace(0, 1, 11)]
    trades = [(0.0, 0.6, 1.0), (0.5, 0.78, 1.5), (1.0, 0.8, 3.0)]
    # The straight line from (1, .6) to (3, .8) averages .7; the router that trades is above it.
    assert quality(always_dear, scores, costs) == pytest.approx(0.7, abs=1e-3)
    assert quality(trades, scores, costs) > quality(always_dear, scores, costs)
    # Unanchored (the hull flat left of the dear point), the router that never trades would have won: 0.8.
    assert aiq([(c, a) for _, a, c in always_dear], 1.0, 3.0) == pytest.approx(0.8)
    # Equal cost: accuracy at knob 1.
    assert quality(trades, scores, np.ones_like(costs)) == 0.8


def test_domain_level_is_chosen_where_clusters_mix_domains() -> None:
    """Two domains share every topic (k-means groups by the strong topic directions and mixes them), but a weak
    direction tells them apart. Model "a" answers 90 % of domain alpha, "b" of beta, "general" 45 % of both (so
    neither specialist is past a cliff in a mixed cluster): only a domain-aware estimate can send each query
    to its own model, and selection must find that."""
    rng = np.random.default_rng(0)
    n, models = 1200, ["general", "a", "b"]
    domains = np.where(np.arange(n) % 2 == 0, "alpha", "beta")
    x = np.zeros((n, 10), dtype=np.float32)
    x[:, :8] = rng.normal(size=(n, 8))
    x[:, 8] = np.where(domains == "alpha", 0.4, -0.4) + rng.normal(scale=0.05, size=n)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    hit = rng.random(n)
    scores = np.stack([(hit < 0.45), (domains == "alpha") & (hit < 0.9), (domains == "beta") & (hit < 0.9)], 1)
    ids = [f"q{i}" for i in range(n)]
    costs = np.zeros((n, 3))
    with_domains = fit(ids, x, scores.astype(float), costs, models, "general", FitConfig(), progress=False,
                       domains=domains.tolist())
    assert with_domains.domains is not None and with_domains.domains.weight > 0
    assert with_domains.domains.names == ["alpha", "beta"]
    assert {s["domain_weight"] for s in with_domains.selection} == set(FitConfig().domain_weights)
    best = {w: max(s["validation_quality"] for s in with_domains.selection if s["domain_weight"] == w)
            for w in FitConfig().domain_weights}
    # About 0.88 against 0.74 (the clusters alone are near 0.5; the kNN blend recovers part of the gap).
    assert best[with_domains.domains.weight] > best[0.0] + 0.1
    # The final classifier, refitted on every row, tells the domains apart; the per-domain table is shrunk.
    p = with_domains.domains.proba(x)
    assert (np.array(["alpha", "beta"])[p.argmax(1)] == domains).mean() > 0.95
    assert 0.8 < with_domains.domains.estimate[0, 1] < 0.9 and with_domains.domains.estimate[0, 2] < 0.02
    # Per-(domain, cluster) cells over the final clusters; strength 0 writes none.
    cells = with_domains.domains.cell_estimate
    assert cells is not None and cells.shape == (2, with_domains.k, 3) and with_domains.domains.cell_strength == 40
    rows_only = fit(ids, x, scores.astype(float), costs, models, "general", FitConfig(domain_cell_strength=0),
                    progress=False, domains=domains.tolist())
    assert rows_only.domains is not None and rows_only.domains.cell_estimate is None
    plain = fit(ids, x, scores.astype(float), costs, models, "general", FitConfig(), progress=False)
    assert plain.domains is None and {s["domain_weight"] for s in plain.selection} == {0.0}


def test_domain_cells_shrink_each_domains_rows_in_a_cluster_toward_its_domain_row() -> None:
    from router.domains import DomainLevel

    level = DomainLevel(["alpha", "beta"], np.zeros((2, 2), dtype=np.float32), np.zeros(2),
                        estimate=np.array([[0.5, 0.8], [0.6, 0.2]]), mean_cost=np.array([[1.0, 2.0], [1.0, 2.0]]),
                        weight=1.0)
    # cluster 0: two alpha rows (model 1 right on both) and one beta row; cluster 1: beta only
    domains = np.array(["alpha", "alpha", "beta", "beta"])
    labels = np.array([0, 0, 0, 1])
    scores = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    costs = np.array([[1.0, 4.0], [1.0, 4.0], [3.0, 2.0], [1.0, 2.0]])
    out = domain_cells(level, domains, labels, 2, scores, costs, strength=2.0)
    assert out.cell_strength == 2.0 and out.cell_estimate is not None and out.cell_cost is not None
    # alpha in cluster 0: (2 * row + sums) / (2 + 2)
    np.testing.assert_allclose(out.cell_estimate[0, 0], [(1.0 + 1.0) / 4, (1.6 + 2.0) / 4])
    np.testing.assert_allclose(out.cell_cost[0, 0], [(2.0 + 2.0) / 4, (4.0 + 8.0) / 4])
    # alpha has no row in cluster 1: its domain row; beta in cluster 1: one row
    np.testing.assert_allclose(out.cell_estimate[0, 1], [0.5, 0.8])
    np.testing.assert_allclose(out.cell_estimate[1, 1], [1.2 / 3, 0.4 / 3])
    assert domain_cells(level, domains, labels, 2, scores, costs, strength=0.0) is level


def test_one_domain_fits_no_domain_level() -> None:
    rows = [r for r in synthetic_rows(n_per_domain=60) if r["split"] == "train"]
    x = FakeEncoder().encode([r["query"] for r in rows])
    scores = np.array([[r["scores"][m] for m in MODELS] for r in rows])
    result = fit([r["id"] for r in rows], x, scores, np.zeros_like(scores), MODELS, "general", FitConfig(),
                 progress=False, domains=["only"] * len(rows))
    assert result.domains is None


def test_two_class_classifier_becomes_a_softmax_pair() -> None:
    from sklearn.linear_model import LogisticRegression

    from router.domains import from_classifier

    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    clf = LogisticRegression().fit(x, ["p", "p", "q", "q"])
    level = from_classifier(["p", "q"], clf.coef_, clf.intercept_, np.zeros((2, 1)), np.zeros((2, 1)), 1.0)
    assert level.coef.shape == (2, 2)
    np.testing.assert_allclose(level.proba(x.astype(np.float32)), clf.predict_proba(x), rtol=1e-5)


def test_selection_folds_hold_out_every_row_once_and_pool_their_sweeps() -> None:
    from calibration.selection import validation_masks

    rows = [r for r in synthetic_rows(n_per_domain=150) if r["split"] == "train"]
    ids = [r["id"] for r in rows]
    masks = validation_masks(ids, FitConfig(selection_folds=5))
    assert len(masks) == 5 and (np.sum(masks, axis=0) == 1).all()  # a partition of the rows
    assert all(0.1 < m.mean() < 0.3 for m in masks)
    single = validation_masks(ids, FitConfig(selection_folds=1))
    assert len(single) == 1 and 0.1 < single[0].mean() < 0.3  # the 20 % slice of before
    enc = FakeEncoder()
    x = enc.encode([r["query"] for r in rows])
    scores = np.array([[r["scores"][m] for m in MODELS] for r in rows])
    costs = np.array([[r["cost"][m] for m in MODELS] for r in rows])
    results = {
        folds: fit(ids, x, scores, costs, MODELS, "general", FitConfig(selection_folds=folds), progress=False)
        for folds in (1, 5)
    }
    for result in results.values():
        best = max(s["validation_quality"] for s in result.selection)
        chosen = next(s for s in result.selection if s["validation_quality"] > best - 1e-9)
        assert (chosen["k"], chosen["soft_top"]) == (result.k, result.soft_top)
    # Five folds score each candidate on every row, one slice on a fifth: the objectives differ.
    assert [s["validation_quality"] for s in results[1].selection] != [
        s["validation_quality"] for s in results[5].selection]


def test_the_fit_s_artifact_is_the_same_in_memory_and_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``FitResult.to_artifact`` (what leave-one-domain-out routes with) and the directory ``write_artifact``
    writes and reads back (what the router loads) make the same decisions; the writer's files hold every part."""
    from calibration.bundle import write_artifact
    from router.artifact import Artifact
    from router.policy import Policy

    rows = [r for r in synthetic_rows(n_per_domain=150) if r["split"] == "train"]
    enc = FakeEncoder()
    x = enc.encode([r["query"] for r in rows])
    scores = np.array([[r["scores"][m] for m in MODELS] for r in rows])
    costs = np.array([[r["cost"][m] for m in MODELS] for r in rows])
    result = fit([r["id"] for r in rows], x, scores, costs, MODELS, "general", FitConfig(), progress=False,
                 domains=[r["domain"] for r in rows])
    assert result.ood_detector is not None and result.domains is not None
    memory = result.to_artifact(MODELS, "general", enc.name)
    written = write_artifact(tmp_path / "art", models=MODELS, generalist="general", embedder_name=enc.name,
                             embedder_dim=enc.dim, fit=result, data_info={"source": "synthetic"},
                             extra={"ood_quantile": 0.95})
    assert written.path == (tmp_path / "art").resolve() and written.manifest["data"] == {"source": "synthetic"}
    again = Artifact.from_dir(tmp_path / "art", embedder_name=enc.name, embedder_dim=enc.dim)
    for a in (written, again):
        np.testing.assert_allclose(a.estimate, memory.estimate, atol=1e-6)
        np.testing.assert_array_equal(a.cliff, memory.cliff)
        np.testing.assert_array_equal(a.centroids, memory.centroids)
        assert a.domains is not None and a.ood_detector is not None
        np.testing.assert_array_equal(a.ood_detector.precision, memory.ood_detector.precision)  # type: ignore[union-attr]
    queries = enc.encode([r["query"] for r in synthetic_rows(n_per_domain=20)])
    for knob in (0.0, 0.5, 1.0):
        ours = [(d.model, d.reason) for d in Policy(memory).decide(queries, knob)]
        assert ours == [(d.model, d.reason) for d in Policy(again).decide(queries, knob)]
