"""The out-of-domain detectors: the domain detector's arithmetic, its calibration, and on the real artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.fit import FitConfig, fit
from calibration.oodfit import mahalanobis_fit, use_domain_detector
from router.artifact import Artifact
from router.domains import DomainLevel
from router.embedding.torch import Embedder
from router.ood import DomainDetector, joint_thresholds
from router.policy import Policy

OFF_TOPIC = [line.strip() for line in (Path(__file__).parent / "offtopic_chat.txt").read_text().splitlines()
             if line.strip()]


def test_mahalanobis_is_the_distance_to_the_nearest_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    domains = np.array(["a", "b", "c"] * 100)
    x[domains == "b"] += 3.0
    means, precision = mahalanobis_fit(x.astype(np.float32), domains, ["a", "b", "c"])
    assert np.allclose(means[1], x[domains == "b"].mean(axis=0), atol=1e-5)
    q = rng.normal(size=(5, 6)).astype(np.float32)
    detector = DomainDetector(means, precision, 1.0, 0.0, 1.0, 0.0)
    brute = np.min([np.einsum("ij,jk,ik->i", q - m, precision, q - m) for m in means], axis=0)
    assert detector.mahalanobis(q) == pytest.approx(brute, rel=1e-6)


def test_joint_thresholds_flag_the_asked_share_of_rows() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=4000)
    b = 0.5 * a + rng.normal(size=4000)  # correlated, as the two parts are
    for q in (0.8, 0.95):
        ta, tb = joint_thresholds(a, b, q)
        assert ((a > ta) | (b > tb)).mean() == pytest.approx(1 - q, abs=0.01)
        # each part alone flags less than the whole budget
        assert (a > ta).mean() < 1 - q and (b > tb).mean() < 1 - q


def test_the_detector_needs_two_domains_and_no_knn_refinement() -> None:
    assert use_domain_detector(FitConfig(), ["a", "b"], refine=False)
    assert not use_domain_detector(FitConfig(), ["a", "a"], refine=False)  # auto: kNN
    assert not use_domain_detector(FitConfig(), ["a", "b"], refine=True)
    assert not use_domain_detector(FitConfig(ood_method="knn"), ["a", "b"], refine=False)
    with pytest.raises(ValueError, match="at least 2 domains"):
        use_domain_detector(FitConfig(ood_method="domains"), None, refine=False)
    with pytest.raises(ValueError, match="use the knn OOD method"):
        use_domain_detector(FitConfig(ood_method="domains", ood_per_cluster=True), ["a", "b"], refine=False)
    with pytest.raises(ValueError, match="must be 'auto'"):
        use_domain_detector(FitConfig(ood_method="lof"), ["a", "b"], refine=False)
    for margin, start in ((-0.1, 0.5), (1.5, 0.5), (0.1, 1.0), (0.1, -0.2)):
        with pytest.raises(ValueError, match="the OOD margin must lie in"):
            use_domain_detector(FitConfig(ood_margin=margin, ood_margin_from=start), ["a", "b"], refine=False)


def test_the_margin_rises_from_its_start_to_the_line() -> None:
    detector = DomainDetector(np.zeros((2, 3)), np.eye(3), 1.0, 0.0, 1.0, 0.0, margin_at_line=0.1, margin_from=0.5)
    score = np.array([-2.0, 0.5, 0.75, 1.0, 4.0])
    assert detector.margin(score) == pytest.approx([0.0, 0.0, 0.05, 0.1, 0.1])
    assert DomainDetector(np.zeros((2, 3)), np.eye(3), 1.0, 0.0, 1.0, 0.0).margin(score) == pytest.approx([0.0] * 5)
    with pytest.raises(ValueError, match="reads 'max' or 'energy'"):
        use_domain_detector(FitConfig(ood_margin_score="min"), ["a", "b"], refine=False)


def test_fit_calibrates_the_detector_on_held_out_rows() -> None:
    """Three well-separated domains: about 1 - quantile of new in-domain rows are flagged, a new domain is."""
    rng = np.random.default_rng(2)
    dim, n = 16, 1500
    centres = np.eye(dim)[:4] * 5
    labels = rng.integers(0, 3, size=n)
    x = centres[labels] + rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    scores = rng.random((n, 2)).round()
    result = fit([f"r{i}" for i in range(n)], x, scores, np.ones((n, 2)), ["g", "s"], "g", FitConfig(),
                 progress=False, domains=[f"d{c}" for c in labels])
    assert result.ood_detector is not None and result.domains is not None
    fresh = centres[rng.integers(0, 3, size=2000)] + rng.normal(size=(2000, dim))
    new = centres[3] + rng.normal(size=(500, dim))
    unit = [(v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for v in (fresh, new)]
    flagged = [(result.ood_detector.score(v, result.domains) > 1).mean() for v in unit]
    assert 0.01 < flagged[0] < 0.12 and flagged[1] > 0.9


def test_energy_is_high_where_no_domain_fits() -> None:
    level = DomainLevel(["a", "b"], np.array([[10, 0], [0, 10]], dtype=np.float32), np.zeros(2),
                        np.zeros((2, 1)), np.zeros((2, 1)), 0.0)
    e = level.energy(np.array([[1, 0], [0.7, 0.7], [0, 0]], dtype=np.float32))
    assert e[0] < e[1] < e[2]  # one strong domain < two medium ones < none


def test_the_real_artifact_sends_off_topic_chat_to_the_generalist(artifact: Artifact, embedder: Embedder,
                                                                   shared_data: Path) -> None:
    """Real embeddings, a real calibration (RouterDC's benchmarks): everyday chat requests lie outside every
    calibration domain. At the 0.95 quantile about 5 % of in-domain test queries are flagged too."""
    assert artifact.ood_detector is not None  # the default for data with domains
    policy = Policy(artifact)
    chat = policy.estimate(embedder.encode(OFF_TOPIC))
    assert chat.is_ood.mean() >= 0.8, [q for q, o in zip(OFF_TOPIC, chat.is_ood, strict=True) if not o]
    text = (shared_data / "routing" / "routerdc_7model.jsonl").read_text()
    rows = [json.loads(line) for line in text.split("\n") if line]
    test = [r["query"] for r in rows if r["split"] == "test"][::20]
    flagged = policy.estimate(embedder.encode(test)).is_ood.mean()
    assert 0.01 < flagged < 0.12


def test_the_real_margin_turns_back_only_small_edges_near_the_line(artifact: Artifact, embedder: Embedder,
                                                                   shared_data: Path) -> None:
    """The default OOD margin on the real artifact: some in-domain test queries between score 0.5 and the line go
    to the generalist, each one where the best specialist's estimated edge was smaller than its margin. The margin
    reads the energy part, which is at most the score (the larger part)."""
    detector = artifact.ood_detector
    assert detector is not None
    assert (detector.margin_at_line, detector.margin_from, detector.margin_score) == (0.1, 0.5, "energy")
    text = (shared_data / "routing" / "routerdc_7model.jsonl").read_text()
    rows = [json.loads(line) for line in text.split("\n") if line]
    test = [r["query"] for r in rows if r["split"] == "test"][::20]
    decisions = Policy(artifact).decide(embedder.encode(test), 1.0)
    margined = [d for d in decisions if d.reason == "ood_margin"]
    assert 0 < len(margined) < 0.2 * len(decisions)
    for d in margined:
        assert d.model == artifact.generalist and not d.is_ood and 0.5 < d.ood_score <= 1.0
        edge = max(c.expected_accuracy for c in d.candidates if c.eligible) - next(
            c.expected_accuracy for c in d.candidates if c.model == artifact.generalist)
        assert 0 < edge < d.ood_margin <= 0.1 * (d.ood_score - 0.5) / 0.5 + 1e-9
    assert all(d.ood_margin == 0 for d in decisions if d.ood_score <= 0.5)


def test_too_few_rows_for_the_detector_is_a_clear_error() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    args = ([f"r{i}" for i in range(30)], x, rng.random((30, 2)).round(), np.ones((30, 2)), ["g", "s"], "g")
    domains = ["a", "b"] * 15
    assert fit(*args, FitConfig(), progress=False, domains=domains).ood_detector is None  # auto: kNN
    with pytest.raises(ValueError, match="too few train rows"):
        fit(*args, FitConfig(ood_method="domains"), progress=False, domains=domains)
