"""Policy.decide on a hand-built two-cluster artifact: knob behaviour, cliffs, OOD, ties, availability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router.artifact import Artifact, ArtifactError
from router.policy import Policy
from tests.router.test_artifact import DIM, write_artifact

IN_CLUSTER_0 = np.array([[1, 0.02, 0, 0]], dtype=np.float32)
IN_CLUSTER_1 = np.array([[0.02, 1, 0, 0]], dtype=np.float32)
FAR_AWAY = np.array([[0, 0, 0, 1]], dtype=np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def policy(tmp_path: Path, **kwargs: object) -> Policy:
    return Policy(Artifact.load(write_artifact(tmp_path / "a", **kwargs)))  # type: ignore[arg-type]


def test_knob_one_picks_most_accurate_knob_zero_cheapest(tmp_path: Path) -> None:
    p = policy(tmp_path)
    best, cheapest = p.decide(np.vstack([unit(IN_CLUSTER_0)] * 2), [1.0, 0.0])
    assert (best.model, best.reason, best.cluster) == ("special", "best", 0)
    assert cheapest.model == "cheap"
    assert best.candidates[0].model == "special"
    assert [c.utility for c in best.candidates] == sorted((c.utility for c in best.candidates), reverse=True)


def test_cliff_excludes_specialist_and_says_so(tmp_path: Path) -> None:
    # In cluster 1 the specialist is most accurate on paper but past its cliff.
    p = policy(tmp_path, estimate=[[0.6, 0.9, 0.5], [0.6, 0.95, 0.5]])
    (d,) = p.decide(unit(IN_CLUSTER_1), 1.0)
    assert d.model == "general" and d.reason == "cliff"
    special = next(c for c in d.candidates if c.model == "special")
    assert not special.eligible and special.excluded_by == "cliff"


def test_ood_goes_to_generalist(tmp_path: Path) -> None:
    p = policy(tmp_path)
    (d,) = p.decide(unit(FAR_AWAY), 0.0)
    assert d.model == "general" and d.reason == "ood_fallback" and d.is_ood and d.ood_score > 0.5
    assert {c.excluded_by for c in d.candidates if c.model != "general"} == {"ood"}


def test_equal_prices_send_knob_zero_to_the_most_accurate_model(tmp_path: Path) -> None:
    """With one price for every model, cost cannot separate them: every utility at knob 0 is the same, and the tie
    goes to the most accurate eligible model, not to the generalist (nothing is saved by a worse answer)."""
    p = policy(tmp_path, cost=[1.0, 1.0, 1.0])
    in_0, in_1 = p.decide(np.vstack([unit(IN_CLUSTER_0), unit(IN_CLUSTER_1)]), 0.0)
    assert (in_0.model, in_0.reason) == ("special", "best")  # 0.9 against the generalist's 0.6
    assert len({c.utility for c in in_0.candidates}) == 1  # a tie, broken on expected accuracy
    assert [c.model for c in in_0.candidates] == ["special", "general", "cheap"]
    assert (in_1.model, in_1.reason) == ("general", "best")  # 'special' is past its cliff in cluster 1
    # Equal accuracy too: the generalist; an OOD query still goes to it whatever the estimates.
    same = policy(tmp_path / "b", estimate=[[0.7, 0.7, 0.7], [0.7, 0.7, 0.7]], cost=[1.0, 1.0, 1.0], cliffs={})
    assert same.decide(unit(IN_CLUSTER_0), 0.0)[0].model == "general"
    assert p.decide(unit(FAR_AWAY), 0.0)[0].model == "general"


def test_ties_go_to_cheaper_then_generalist(tmp_path: Path) -> None:
    p = policy(tmp_path, estimate=[[0.7, 0.7, 0.7], [0.7, 0.7, 0.7]], cost=[1.0, 1.0, 1.0], cliffs={})
    (d,) = p.decide(unit(IN_CLUSTER_0), 1.0)
    assert d.model == "general"  # equal accuracy and cost: the generalist
    p = policy(tmp_path / "b", estimate=[[0.7, 0.7, 0.7], [0.7, 0.7, 0.7]], cost=[1.0, 0.5, 0.5], cliffs={})
    (d,) = p.decide(unit(IN_CLUSTER_0), 1.0)
    assert d.model == "special"  # knob 1 ignores cost, but the tie goes to the cheaper (first in order)


def test_unavailable_models_are_skipped_and_fallbacks_end_with_generalist(tmp_path: Path) -> None:
    p = policy(tmp_path)
    (d,) = p.decide(unit(IN_CLUSTER_0), 1.0, available={"general", "cheap"})
    assert d.model == "general" and d.reason == "backend_down"  # the specialist would have won
    assert next(c for c in d.candidates if c.model == "special").excluded_by == "unavailable"
    (d,) = p.decide(unit(IN_CLUSTER_0), 0.0, available={"general", "special"})
    assert d.reason == "backend_down"  # at knob 0 the cheap model would have won
    (d,) = p.decide(unit(IN_CLUSTER_0), 1.0, available={"general", "special"})
    assert d.reason == "best"  # it is down, but at knob 1 it would not have won
    (d,) = p.decide(unit(IN_CLUSTER_0), 1.0)
    assert d.fallbacks() == ["general", "cheap"]  # by utility; the generalist is always in the chain
    (d,) = p.decide(unit(IN_CLUSTER_0), 1.0, available={"special", "cheap"})
    assert d.fallbacks() == ["cheap", "general"]  # appended even when it is not available right now
    (d,) = p.decide(unit(IN_CLUSTER_0), 1.0, available=set())
    assert d.model == "general"  # nothing eligible: the generalist
    assert d.to_dict()["candidates"][0]["model"] == "general"


def test_intermediate_knob_trades_accuracy_for_cost(tmp_path: Path) -> None:
    p = policy(tmp_path)
    models = [d.model for d in p.decide(np.vstack([unit(IN_CLUSTER_0)] * 11), np.linspace(0, 1, 11))]
    assert models[0] == "cheap" and models[-1] == "special"
    assert "general" not in models  # dearer and less accurate than the specialist in its own cluster


def test_decide_validates_input(tmp_path: Path) -> None:
    p = policy(tmp_path)
    with pytest.raises(ValueError, match="knobs"):
        p.decide(unit(IN_CLUSTER_0), 1.5)
    with pytest.raises(ValueError, match="shape"):
        p.decide(np.zeros((1, DIM + 1), np.float32), 1.0)


def test_per_cluster_ood_thresholds(tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "a")
    ood = json.loads((path / "ood.json").read_text())
    (path / "ood.json").write_text(json.dumps({**ood, "cluster_thresholds": [0.0, 0.5]}))
    p = Policy(Artifact.load(path))
    near_0, near_1 = p.decide(np.vstack([unit(IN_CLUSTER_0), unit(IN_CLUSTER_1)]), 1.0)
    assert near_0.is_ood and near_0.reason == "ood_fallback"  # cluster 0 tolerates no distance at all
    assert not near_1.is_ood
    (path / "ood.json").write_text(json.dumps({**ood, "cluster_thresholds": [0.1]}))
    with pytest.raises(ArtifactError, match="cluster_thresholds must be a list of k=2"):
        Artifact.load(path)


def test_domain_level_blends_per_domain_estimates(tmp_path: Path) -> None:
    # Both queries sit in cluster 0, where the table says 'special' (0.9); the domain classifier tells them
    # apart (alpha along e2, beta along e3), and in alpha 'cheap' is best.
    from tests.router.test_artifact import add_domain_level

    alpha, beta = unit(np.array([[1, 0, 0.3, 0]])), unit(np.array([[1, 0, 0, 0.3]]))
    plain = Policy(Artifact.load(write_artifact(tmp_path / "plain", cliffs={})))
    assert [d.model for d in plain.decide(np.vstack([alpha, beta]), 1.0)] == ["special", "special"]
    assert plain.decide(alpha, 1.0)[0].domain == ""
    full = Policy(Artifact.load(add_domain_level(write_artifact(tmp_path / "full", cliffs={}), weight=1.0)))
    a, b = full.decide(np.vstack([alpha, beta]), 1.0)
    assert (a.model, a.domain, b.model, b.domain) == ("cheap", "alpha", "special", "beta")
    assert a.to_dict()["domain"] == "alpha"
    # The blend is (1 - w) * cluster + w * sum_d p(d) * domain estimate, for accuracy and cost alike.
    half = Policy(Artifact.load(add_domain_level(write_artifact(tmp_path / "half", cliffs={}), weight=0.5)))
    est = half.estimate(alpha)
    p = half.artifact.domains.proba(alpha)  # type: ignore[union-attr]
    expected = 0.5 * np.array([0.6, 0.9, 0.5]) + 0.5 * (p @ np.array([[0.5, 0.4, 0.95], [0.5, 0.95, 0.4]]))
    np.testing.assert_allclose(est.accuracy[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(est.cost[0], [1.0, 0.5, 0.1], rtol=1e-6)


def test_domain_header_is_percent_encoded() -> None:
    from router.policy import Decision
    from router.service import Routed

    decision = Decision(model="m", cluster=0, ood_score=0.1, is_ood=False, knob=1.0, reason="best",
                        candidates=(), domain="Grundschul-Mathe für alle")
    headers = Routed("r1", backend="m", reason="best", decision=decision).headers()
    assert headers["x-triage-domain"] == "Grundschul-Mathe%20f%C3%BCr%20alle"
    headers["x-triage-domain"].encode("ascii")
    assert "x-triage-domain" not in Routed("r2", backend="m", reason="pinned").headers()


def test_global_normalisation_is_one_exchange_rate_for_every_query(tmp_path: Path) -> None:
    # Cluster 0: the three models within 2 points of each other; cluster 1: far apart. Measured against the models'
    # overall spread (about 20 points), cluster 0's 2-point edge is not worth the specialist's price at knob 0.5
    # (per-query min-max would have stretched it to the full scale and paid for it).
    estimate = [[0.60, 0.61, 0.59], [0.6, 0.2, 0.5]]
    glob = policy(tmp_path / "g", estimate=estimate, cliffs={})
    assert glob.artifact.normalisation == "global"
    assert glob.decide(unit(IN_CLUSTER_0), 0.5)[0].model == "cheap"
    # The scales: overall accuracy (cluster sizes as weights) and mean cost, spread over the available models.
    np.testing.assert_allclose(glob.overall_accuracy, [0.6, 0.405, 0.545])
    (d,) = glob.decide(unit(IN_CLUSTER_0), 0.5)
    cheap = next(c for c in d.candidates if c.model == "cheap")
    assert cheap.utility == pytest.approx(0.5 * 0.59 / 0.195 - 0.5 * 0.1 / 0.9)
    # The ends of the knob: the most accurate, the cheapest.
    assert glob.decide(unit(IN_CLUSTER_0), 1.0)[0].model == "special"
    assert glob.decide(unit(IN_CLUSTER_0), 0.0)[0].model == "cheap"
