"""Artifact.from_dir and the constructor: a valid artifact loads; every kind of damage is refused with a clear,
path-free message."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.artifact import Artifact, ArtifactError
from router.policy import Policy

MODELS = ["general", "special", "cheap"]
DIM = 4


def write_artifact(
    path: Path,
    *,
    estimate: list[list[float]] | None = None,
    cost: list[float] | None = None,
    cliffs: dict[str, list[int]] | None = None,
    threshold: float = 0.5,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """A two-cluster artifact: cluster 0 along e0, cluster 1 along e1; references near both."""
    path.mkdir(parents=True, exist_ok=True)
    estimate = estimate or [[0.6, 0.9, 0.5], [0.6, 0.2, 0.5]]
    cost = cost or [1.0, 0.5, 0.1]
    man = {
        "format_version": 5,
        "embedder": {"name": "test-embedder", "dim": DIM, "normalisation": "l2"},
        "k": 2,
        "models": MODELS,
        "generalist": "general",
        "reference_model": "general",
        "policy": {"soft_top": 1, "temperature": 1.0, "knn_weight": 0.0, "knn_k": 2, "normalisation": "global"},
    }
    man.update(manifest or {})
    (path / "manifest.json").write_text(json.dumps(man))
    np.save(path / "centroids.npy", np.eye(DIM, dtype=np.float32)[:2])
    ref = np.array([[1, 0.05, 0, 0], [1, -0.05, 0, 0], [0.05, 1, 0, 0], [-0.05, 1, 0, 0]], dtype=np.float32)
    np.save(path / "reference.npy", ref / np.linalg.norm(ref, axis=1, keepdims=True))
    np.save(path / "reference_scores.npy", np.ones((4, 3), dtype=np.float32))
    table = {
        "clusters": [
            {
                "id": c,
                "models": {
                    m: {"n": 50, "accuracy": estimate[c][j], "estimate": estimate[c][j], "mean_cost": cost[j]}
                    for j, m in enumerate(MODELS)
                },
            }
            for c in range(2)
        ]
    }
    (path / "table.json").write_text(json.dumps(table))
    (path / "cliffs.json").write_text(json.dumps(cliffs if cliffs is not None else {"special": [1]}))
    (path / "ood.json").write_text(
        json.dumps({"method": "knn_cosine_distance", "k_neighbors": 2, "threshold": threshold})
    )
    return path


def test_valid_artifact_loads(tmp_path: Path) -> None:
    art = Artifact.load(write_artifact(tmp_path / "a"), embedder_name="test-embedder", embedder_dim=DIM)
    assert art.models == MODELS and art.k == 2 and art.generalist == "general"
    assert art.cliff[1, 1] and not art.cliff[0, 1]
    assert art.estimate.shape == (2, 3) and art.ood_threshold == 0.5


def test_embedder_mismatch_refused(tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "a")
    with pytest.raises(ArtifactError, match="embedder mismatch.*test-embedder.*other"):
        Artifact.load(path, embedder_name="other")
    with pytest.raises(ArtifactError, match="dimension 4"):
        Artifact.load(path, embedder_dim=384)


def test_an_artifact_fitted_on_one_quantised_copy_is_refused_by_a_router_with_another(tmp_path: Path) -> None:
    """Same name, other weights (re-quantised): the vectors moved, so the table would route on the wrong ones."""
    quantised = write_artifact(tmp_path / "q", manifest={"embedder": {"name": "test-embedder", "dim": DIM,
                                                                     "normalisation": "l2", "weights": "a1b2c3"}})
    assert Artifact.load(quantised, embedder_name="test-embedder", embedder_weights="a1b2c3").embedder_weights == \
        "a1b2c3"
    with pytest.raises(ArtifactError, match="quantised copy 'a1b2c3'.*'d4e5f6': recalibrate"):
        Artifact.load(quantised, embedder_name="test-embedder", embedder_weights="d4e5f6")
    with pytest.raises(ArtifactError, match="quantised copy 'a1b2c3'.*the unquantised model"):
        Artifact.load(quantised, embedder_name="test-embedder", embedder_weights="")
    # An artifact of the model's own weights records none; one written before weights were recorded neither.
    plain = Artifact.load(write_artifact(tmp_path / "p"), embedder_weights="d4e5f6")
    assert plain.embedder_weights == ""


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json is not valid JSON"),
        (lambda p: (p / "table.json").unlink(), "table.json is missing"),
        (lambda p: (p / "centroids.npy").write_bytes(b"garbage"), "centroids.npy is not a valid .npy"),
        (lambda p: np.save(p / "centroids.npy", np.full((2, DIM), np.nan, np.float32)), "NaN"),
        (
            lambda p: np.save(p / "centroids.npy", np.eye(3, dtype=np.float32)),
            r"centroids.npy: shape \(3, 3\)",
        ),
        (
            lambda p: np.save(p / "reference_scores.npy", np.ones((4, 2), np.float32)),
            "reference_scores.npy: shape",
        ),
        (lambda p: (p / "cliffs.json").write_text('{"general": [0]}'), "generalist cannot have a cliff"),
        (lambda p: (p / "cliffs.json").write_text('{"nobody": [0]}'), "unknown model 'nobody'"),
    ],
)
def test_damaged_artifact_refused(tmp_path: Path, damage: Any, message: str) -> None:
    path = write_artifact(tmp_path / "a")
    damage(path)
    with pytest.raises(ArtifactError, match=message) as info:
        Artifact.load(path)
    assert str(tmp_path) not in str(info.value)  # never leak absolute paths


def test_the_constructor_holds_the_invariants_whoever_builds_the_artifact(tmp_path: Path) -> None:
    """Calibration builds artifacts in memory through the same constructor the reader uses: a bad part is refused
    there too, and nothing changes an artifact after it is made."""
    art = Artifact.from_dir(write_artifact(tmp_path / "a"))
    assert art.path == tmp_path / "a" and art.k == 2 and art.thresholds.tolist() == [0.5, 0.5]
    with pytest.raises(ArtifactError, match="generalist cannot have a cliff"):
        replace(art, cliff=np.ones_like(art.cliff))
    with pytest.raises(ArtifactError, match=r"reference_scores.npy: shape \(4, 2\), expected \(4, 3\)"):
        replace(art, reference_scores=art.reference_scores[:, :2])
    with pytest.raises(ArtifactError, match="policy.soft_top must be an integer in"):
        replace(art, soft_top=3)
    with pytest.raises(ArtifactError, match="generalist 'nobody' is not one of the models"):
        replace(art, generalist="nobody")
    with pytest.raises(dataclasses.FrozenInstanceError):
        art.knn_weight = 0.5  # type: ignore[misc]
    # In memory, as model selection builds them: no directory, no manifest, nothing out of domain.
    memory = replace(art, path=None, manifest={}, ood_threshold=np.inf, ood_cluster_thresholds=None)
    far = np.array([[0, 0, 0, 1]], dtype=np.float32)
    assert Policy(art).estimate(far).is_ood.tolist() == [True]
    assert Policy(memory).estimate(far).is_ood.tolist() == [False]


def test_nan_in_table_refused(tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "a")
    text = (path / "table.json").read_text().replace('"estimate": 0.9', '"estimate": NaN', 1)
    (path / "table.json").write_text(text)
    with pytest.raises(ArtifactError, match="estimate must be a finite number"):
        Artifact.load(path)


def test_unknown_format_version_refused(tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "a", manifest={"format_version": 99})
    with pytest.raises(ArtifactError, match="unknown format_version 99"):
        Artifact.load(path)


def test_a_retired_format_asks_for_a_new_calibration(tmp_path: Path) -> None:
    """Formats 1-4 are no longer read (``stale`` makes ``make run`` calibrate again)."""
    path = write_artifact(tmp_path / "a", manifest={"format_version": 4})
    with pytest.raises(ArtifactError, match=r"format_version 4 is no longer read \(this router reads 5\): calibrate"):
        Artifact.from_dir(path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="'nope' not found") as info:
        Artifact.load(tmp_path / "nope")
    assert str(tmp_path) not in str(info.value)


def add_domain_level(path: Path, *, weight: float = 1.0, coef: np.ndarray | None = None,
                     **spec: Any) -> Path:
    """The domain level: two domains, 'alpha' along e2 and 'beta' along e3 (a logistic regression's weights);
    'cheap' is best in alpha, 'special' in beta."""
    np.save(path / "domain_coef.npy", coef if coef is not None else
            np.array([[0, 0, 20, 0], [0, 0, 0, 20]], dtype=np.float32))
    body = {"names": ["alpha", "beta"], "weight": weight, "intercept": [0.0, 0.0],
            "estimate": [[0.5, 0.4, 0.95], [0.5, 0.95, 0.4]], "mean_cost": [[1.0, 0.5, 0.1], [1.0, 0.5, 0.1]]}
    (path / "domains.json").write_text(json.dumps({**body, **spec}))
    return path


def test_domain_level_loads(tmp_path: Path) -> None:
    art = Artifact.load(add_domain_level(write_artifact(tmp_path / "a")), embedder_dim=DIM)
    assert art.domains is not None and art.domains.names == ["alpha", "beta"] and art.domains.weight == 1.0
    p = art.domains.proba(np.array([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    assert p.shape == (2, 2) and p[0, 0] > 0.99 and p[1, 1] > 0.99
    assert Artifact.load(write_artifact(tmp_path / "b")).domains is None  # optional: no domain level


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: add_domain_level(p, coef=np.zeros((2, 3), dtype=np.float32)), r"domain_coef.npy: shape \(2, 3\)"),
        (lambda p: add_domain_level(p, weight=1.5), "weight must lie in"),
        (lambda p: add_domain_level(p, names=["alpha"]), "at least 2 domain names"),
        (lambda p: add_domain_level(p, estimate=[[0.5, 0.4]]), "estimate must be 2 rows of 3 numbers"),
        (lambda p: add_domain_level(p, estimate=[[0.5, 0.4, 1.2], [0.5, 0.4, 0.5]]), "estimate must lie in"),
        (lambda p: add_domain_level(p, intercept=[0.0]), "intercept must be a list of 2"),
        (lambda p: (add_domain_level(p), (p / "domain_coef.npy").unlink()), "domain_coef.npy is missing"),
        (lambda p: (add_domain_level(p), (p / "domains.json").unlink()), "domains.json is missing"),
    ],
)
def test_damaged_domain_level_refused(tmp_path: Path, damage: Any, message: str) -> None:
    assert_damage_refused(tmp_path, damage, message)


def assert_damage_refused(tmp_path: Path, damage: Any, message: str) -> None:
    path = write_artifact(tmp_path / "a")
    damage(path)
    with pytest.raises(ArtifactError, match=message) as info:
        Artifact.load(path)
    assert str(tmp_path) not in str(info.value)


def test_normalisation_setting_is_checked(tmp_path: Path) -> None:
    policy = {"soft_top": 1, "temperature": 1.0, "knn_weight": 0.0, "knn_k": 2}
    with pytest.raises(ArtifactError, match="policy.normalisation must be 'global'"):
        Artifact.load(write_artifact(tmp_path / "a", manifest={"policy": policy}))
    with pytest.raises(ArtifactError, match="policy.normalisation must be 'global'"):
        Artifact.load(write_artifact(tmp_path / "b", manifest={"policy": {**policy, "normalisation": "query"}}))
    assert Artifact.load(write_artifact(tmp_path / "c")).normalisation == "global"


def add_detector(path: Path, *, means: np.ndarray | None = None, **parts: Any) -> Path:
    """The domain OOD detector over add_domain_level's two domains (means along e2 and e3), no margin."""
    add_domain_level(path)
    np.save(path / "ood_means.npy", means if means is not None else np.eye(DIM)[2:])
    np.save(path / "ood_precision.npy", np.eye(DIM))
    ood = {"method": "domain_mahalanobis_energy", "k_neighbors": 2, "threshold": 1.0,
           "mahalanobis": {"threshold": 1.0, "center": 0.5}, "energy": {"threshold": -5.0, "center": -10.0},
           "margin": {"at_line": 0.0, "from": 0.5}}
    (path / "ood.json").write_text(json.dumps({**ood, **parts}))
    return path


def test_domain_detector_loads_and_scores_in_threshold_units(tmp_path: Path) -> None:
    art = Artifact.load(add_detector(write_artifact(tmp_path / "a")), embedder_dim=DIM)
    assert art.ood_detector is not None and art.ood_threshold == 1.0
    assert art.domains is not None
    x = np.array([[0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float32)  # on alpha's mean; far from both domains
    # squared distances 0 and 2 to the nearest mean: (0 - 0.5) / 0.5 = -1 and (2 - 0.5) / 0.5 = 3
    assert art.ood_detector.mahalanobis(x) == pytest.approx([0.0, 2.0])
    score = art.ood_detector.score(x, art.domains)
    assert score[1] == pytest.approx(3.0) and score[0] < 1.0
    est = Policy(art).estimate(x)
    assert est.is_ood.tolist() == [False, True] and est.ood_score == pytest.approx(score)


def test_the_ood_margin_makes_the_line_a_slope(tmp_path: Path) -> None:
    """Between ``from`` and the line a specialist must beat the generalist's estimated accuracy by a
    margin rising to ``at_line``. Both queries lie nearest domain alpha, where 'cheap' is estimated 0.95 and the
    generalist 0.5: one near alpha's mean (score < 0, no margin), one at score 0.6 (margin 0.6 at_line 1.0)."""
    c = np.array([0.8, 0.6])
    x = np.stack([np.zeros(2), np.sqrt(1 - c**2), c, np.zeros(2)], axis=1).astype(np.float32)
    # squared distance to alpha's mean 2 - 2c: (0.4 - 0.5) / 0.5 = -0.2 and (0.8 - 0.5) / 0.5 = 0.6 in threshold
    # units; energy about -20c: (-16 + 10) / 5 = -1.2 and (-12 + 10) / 5 = -0.4
    steep = Artifact.load(add_detector(write_artifact(tmp_path / "a"),
                                       margin={"at_line": 1.0, "from": 0.0}), embedder_dim=DIM)
    first, second = Policy(steep).decide(x, 1.0)
    assert (first.model, first.reason, first.ood_margin) == ("cheap", "best", 0.0)
    assert (second.model, second.reason, second.is_ood) == ("general", "ood_margin", False)
    assert second.ood_margin == pytest.approx(0.6, abs=1e-3) and second.to_dict()["ood_margin"] == second.ood_margin
    # a margin of 0.3 at that score is less than cheap's 0.45 edge: it answers
    gentle = Artifact.load(add_detector(write_artifact(tmp_path / "b"),
                                        margin={"at_line": 0.5, "from": 0.0}), embedder_dim=DIM)
    assert [d.model for d in Policy(gentle).decide(x, 1.0)] == ["cheap", "cheap"]
    # read from the energy part alone: the second query's energy (-0.4) is below the start, so no margin
    energy = Artifact.load(add_detector(write_artifact(tmp_path / "e"),
                                        margin={"at_line": 1.0, "from": 0.0, "score": "energy"}), embedder_dim=DIM)
    assert energy.ood_detector is not None and energy.ood_detector.margin_score == "energy"
    assert [(d.model, d.ood_margin) for d in Policy(energy).decide(x, 1.0)] == [("cheap", 0.0), ("cheap", 0.0)]
    # margin 0: the line alone
    plain = Artifact.load(add_detector(write_artifact(tmp_path / "c")), embedder_dim=DIM)
    assert plain.ood_detector is not None and plain.ood_detector.margin_at_line == 0.0
    assert Policy(plain).estimate(x).margin is None
    assert [d.reason for d in Policy(plain).decide(x, 1.0)] == ["best", "best"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: add_detector(p, margin=None), r"margin must be \{at_line, from\[, score\]\}"),
        (lambda p: add_detector(p, margin={"at_line": 0.1, "from": 0.5, "score": "min"}),
         "margin.score must be 'max' or 'energy'"),
        (lambda p: add_detector(p, margin={"at_line": 2.0, "from": 0.5}), "margin.at_line must lie in"),
        (lambda p: add_detector(p, margin={"at_line": 0.1, "from": 1.0}), "margin.from in"),
        (lambda p: add_detector(p, margin={"at_line": 0.1}), "margin.from must be a finite number"),
        (lambda p: add_detector(p, means=np.eye(DIM)[:3]), r"ood_means.npy: shape \(3, 4\), expected \(2, 4\)"),
        (lambda p: add_detector(p, energy={"threshold": -5.0}), "energy.center must be a finite number"),
        (lambda p: add_detector(p, mahalanobis={"threshold": 0.2, "center": 0.5}), "threshold must exceed"),
        (lambda p: (add_detector(p), (p / "domains.json").unlink(), (p / "domain_coef.npy").unlink()),
         "needs the domain level"),
        (lambda p: (add_detector(p), (p / "ood_precision.npy").unlink()), "ood_precision.npy is missing"),
        # detector files under a kNN method: an older writer or a hand edit; refuse rather than ignore
        (lambda p: (add_detector(p), (p / "ood.json").write_text(json.dumps(
            {"method": "knn_cosine_distance", "k_neighbors": 2, "threshold": 0.5}))), "belong to ood.json method"),
        (lambda p: (add_detector(p), (p / "ood.json").write_text(json.dumps({"method": "magic"}))),
         "method must be one of"),
    ],
)
def test_damaged_domain_detector_refused(tmp_path: Path, damage: Any, message: str) -> None:
    assert_damage_refused(tmp_path, damage, message)


def add_cells(path: Path, *, strength: float = 40.0, cells: np.ndarray | None = None) -> Path:
    """add_domain_level's two domains with per-(domain, cluster) cells. Cluster 0 (along e0) mixes both domains:
    there, alpha's rows say 'special' and beta's 'cheap', against their domains' rows."""
    add_domain_level(path)
    spec = json.loads((path / "domains.json").read_text())
    (path / "domains.json").write_text(json.dumps({**spec, "cells": {"strength": strength}}))
    if cells is None:
        estimate = np.array([[[0.5, 0.9, 0.3], [0.5, 0.4, 0.95]], [[0.5, 0.3, 0.9], [0.5, 0.95, 0.4]]])
        cells = np.stack([estimate, np.broadcast_to([1.0, 0.5, 0.1], estimate.shape)])
    np.save(path / "domain_cells.npy", cells)
    return path


def test_domain_cells_read_the_querys_domain_within_its_cluster(tmp_path: Path) -> None:
    """Two queries in cluster 0, one in each domain. The per-domain rows alone send alpha to 'cheap' and
    beta to 'special'; the cells, measured on each domain's rows of cluster 0, send them the other way."""
    x = np.array([[1, 0, 0.3, 0], [1, 0, 0, 0.3]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = Artifact.load(add_domain_level(write_artifact(tmp_path / "a")), embedder_dim=DIM)
    assert [d.model for d in Policy(rows).decide(x, 1.0)] == ["cheap", "special"]
    cells = Artifact.load(add_cells(write_artifact(tmp_path / "b")), embedder_dim=DIM)
    assert cells.domains is not None and cells.domains.cell_strength == 40.0
    assert cells.domains.cell_estimate is not None and cells.domains.cell_estimate.shape == (2, 2, 3)
    assert [d.model for d in Policy(cells).decide(x, 1.0)] == ["special", "cheap"]
    est = Policy(cells).estimate(x)
    p = cells.domains.proba(x)
    # the estimate is sum_d p_d * cell[d, cluster 0] (weight 1, hard assignment)
    assert est.accuracy[0] == pytest.approx(p[0, 0] * np.array([0.5, 0.9, 0.3]) + p[0, 1] * np.array([0.5, 0.3, 0.9]))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: add_cells(p, strength=0.0), "cells.strength must be > 0"),
        (lambda p: add_cells(p, cells=np.full((2, 2, 1, 3), 0.5)), r"domain_cells.npy: shape \(2, 2, 1, 3\), "
                                                                  r"expected \(2, 2, 2, 3\)"),
        (lambda p: add_cells(p, cells=np.full((2, 2, 2, 3), 1.5)), "estimates must lie in"),
        (lambda p: add_cells(p, cells=np.full((2, 2, 3), 0.5)), "expected a 4-d array"),
        (lambda p: (add_cells(p), (p / "domain_cells.npy").unlink()), "domain_cells.npy is missing"),
        (lambda p: (add_cells(p), (p / "domains.json").write_text(json.dumps(
            {k: v for k, v in json.loads((p / "domains.json").read_text()).items() if k != "cells"}))),
         "cells must be"),
    ],
)
def test_damaged_domain_cells_refused(tmp_path: Path, damage: Any, message: str) -> None:
    assert_damage_refused(tmp_path, damage, message)


def test_stale_names_an_older_format_or_another_generalist(tmp_path: Path) -> None:
    """What make run (scripts/run-local.sh) and the benches calibrate again; a missing artifact is not stale."""
    from router.artifact import FORMAT_VERSION, stale

    assert not stale(tmp_path / "missing", "g")
    for name, version, generalist in (("current", FORMAT_VERSION, "g"), ("old", FORMAT_VERSION - 1, "g"),
                                      ("other", FORMAT_VERSION, "h")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"format_version": version,
                                                                    "generalist": generalist}))
    assert not stale(tmp_path / "current") and not stale(tmp_path / "current", "g")
    assert stale(tmp_path / "old") and stale(tmp_path / "old", "g")
    assert not stale(tmp_path / "other") and stale(tmp_path / "other", "g")
    # A routing window other than the router's (or none recorded: the model's whole window) calls for calibrating.
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "generalist": "g",
                                                              "embedder": {"window": 64}}))
    assert not stale(tmp_path / "w", "g", 64) and not stale(tmp_path / "w", "g")
    assert stale(tmp_path / "w", "g", 32) and stale(tmp_path / "current", "g", 64)
