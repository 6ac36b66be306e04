"""The calibration artifact: a value the router routes with (format in docs/artifact.md).

``Artifact`` is a frozen dataclass whose constructor checks every invariant once (shapes against ``k``, the
embedder's dimension and the model list; accuracies in [0, 1]; costs and counts >= 0; the generalist among the
models and never past a cliff; the policy settings in range; the optional parts consistent with each other).
Calibration builds artifacts through it in memory; ``Artifact.from_dir`` reads one from disk with the reader of
its format version (``READERS``) and builds it through the same constructor; ``calibration/bundle.py``
``to_dir`` writes one. The directory::

    manifest.json      format_version, embedder {name, dim, normalisation, weights (a quantised copy's hash;
                       absent for the model's own weights)}, k, models, generalist,
                       reference_model, data fingerprint, created_at, policy and ood settings
    centroids.npy      (k, dim) float32, unit-norm k-means centroids
    table.json         per cluster, per model: n, accuracy, estimate (shrunk), lower/upper, mean_cost, cliff
    cliffs.json        {model: [cluster ids where it is ineligible]}
    ood.json           out-of-domain method, k_neighbors, threshold and the quantiles it came from
    reference.npy      (n_ref, dim) float32 embeddings the OOD score (and kNN estimate) measure against
    reference_scores.npy (n_ref, len(models)) float32 correctness of each model on each reference query
    report.md, *.png   for people

Optional parts, each both files or neither:

    refine.json, refine_reference.npy     a refine tier (``RefineTier``): close kNN OOD calls re-made with a
                                          better embedder
    domains.json, domain_coef.npy         the domain level (router/domains.py ``DomainLevel``)
    domains.json cells, domain_cells.npy  its per-(domain, cluster) cells, (2, D, k, m): estimate, then cost
    ood_means.npy, ood_precision.npy      the domain OOD detector (router/ood.py ``DomainDetector``), with
                                          ood.json method ``domain_mahalanobis_energy`` and its margin

Errors are ``ArtifactError`` with a message that names the file and the problem but never an absolute path
(it may reach an admin API client).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.artifact_files import (
    ArtifactError,
    finite,
    integer,
    numbers,
    read_cliffs,
    read_detector,
    read_domains,
    read_json,
    read_npy,
    read_object,
    read_refine,
    read_table,
)
from router.domains import DomainLevel
from router.ood import MARGIN_SCORES, DomainDetector, RefineTier

__all__ = ["FORMAT_VERSION", "NORMALISATION", "READERS", "Artifact", "ArtifactError", "RefineTier", "stale"]

FORMAT_VERSION = 5
NORMALISATION = "l2"  # of the embeddings
POLICY_NORMALISATION = "global"  # of accuracy and cost in the utility (router/policy.py)
OOD_METHODS = ("knn_cosine_distance", "domain_mahalanobis_energy")

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Artifact:
    """A validated calibration artifact: arrays ready for ``Policy``. ``k`` is the number of centroids."""

    models: list[str]
    generalist: str
    reference_model: str  # most accurate model overall (counterfactual for "saved" cost)
    embedder_name: str
    embedder_dim: int
    centroids: Matrix  # (k, dim)
    counts: Floats  # (k, m) queries measured
    accuracy: Floats  # (k, m) raw mean correctness
    estimate: Floats  # (k, m) Beta-posterior mean shrunk toward the model's global accuracy
    mean_cost: Floats  # (k, m) USD per query
    cliff: npt.NDArray[np.bool_]  # (k, m) True = model ineligible in that cluster
    reference: Matrix  # (n_ref, dim)
    reference_scores: Matrix  # (n_ref, m)
    soft_top: int
    temperature: float
    knn_weight: float
    knn_k: int
    ood_k: int
    # The kNN distance's line (inf: nothing is out of domain, as in model selection). With the domain detector its
    # scores are in units of its thresholds: the line is 1.0 and the per-cluster lines all 1.0, whatever is given.
    ood_threshold: float
    ood_cluster_thresholds: Floats | None = None  # (k,) per nearest cluster; None: all ``ood_threshold``
    embedder_weights: str = ""  # "": the model's own weights (or not recorded)
    embedder_window: int = 0  # the tokens of each query the vectors were made from; 0: not recorded (the whole)
    refine: RefineTier | None = None
    domains: DomainLevel | None = None
    ood_detector: DomainDetector | None = None  # set: it scores OOD in threshold units (ood_threshold 1.0)
    manifest: dict[str, Any] = field(default_factory=dict)  # the parsed manifest.json ({} in memory)
    path: Path | None = None  # the directory it was read from (None in memory)

    def __post_init__(self) -> None:
        if self.ood_detector is not None:
            object.__setattr__(self, "ood_threshold", 1.0)
            object.__setattr__(self, "ood_cluster_thresholds", np.ones(len(self.centroids)))
        elif self.ood_cluster_thresholds is None:
            object.__setattr__(self, "ood_cluster_thresholds", np.full(len(self.centroids), self.ood_threshold))
        _check_models(self)
        _check_clusters(self)
        _check_policy(self)
        _check_ood(self)
        if self.refine is not None:
            _check_refine(self, self.refine)
        if self.domains is not None:
            _check_domains(self, self.domains)
        if self.ood_detector is not None:
            _check_detector(self, self.ood_detector)

    @property
    def k(self) -> int:
        return len(self.centroids)

    @property
    def normalisation(self) -> str:
        """How the policy scales accuracy and cost: over the models' overall spread (router/policy.py)."""
        return POLICY_NORMALISATION

    @property
    def thresholds(self) -> Floats:
        """(k,) the OOD line per nearest cluster."""
        assert self.ood_cluster_thresholds is not None  # __post_init__ sets it
        return self.ood_cluster_thresholds

    @classmethod
    def from_dir(
        cls, path: str | Path, embedder_name: str | None = None, embedder_dim: int | None = None,
        embedder_weights: str | None = None, embedder_window: int | None = None, model_window: int | None = None,
    ) -> Artifact:
        """Read, validate and check against the caller's embedder (any of name, dimension, ``weights``: a
        quantised copy's file hash, "" for the model's own weights; an artifact that records other weights under
        the same name is refused)."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"artifact directory {path.name!r} not found")
        manifest = read_json(path / "manifest.json")
        if not isinstance(manifest, dict):
            raise ArtifactError("manifest.json: the top level must be an object")
        version = manifest.get("format_version")
        reader = READERS.get(version) if isinstance(version, int) else None
        if reader is None:
            reads = ", ".join(map(str, READERS))
            if isinstance(version, int) and 0 < version < min(READERS):
                raise ArtifactError(f"manifest.json: format_version {version} is no longer read (this router "
                                    f"reads {reads}): calibrate again")
            raise ArtifactError(f"manifest.json: unknown format_version {version!r} (this router reads {reads})")
        artifact = reader(path, manifest)
        artifact.check_embedder(embedder_name, embedder_dim, embedder_weights)
        artifact.check_window(embedder_window, model_window)
        return artifact

    load = from_dir  # the name the router, the CLIs and the tests call it by

    def check_embedder(self, name: str | None = None, dim: int | None = None, weights: str | None = None) -> None:
        """ArtifactError unless the artifact was calibrated with this embedder (None: not checked)."""
        if name is not None and name != self.embedder_name:
            raise ArtifactError(f"embedder mismatch: the artifact was calibrated with {self.embedder_name!r}, "
                                f"the router uses {name!r}")
        if weights is not None and self.embedder_weights and weights != self.embedder_weights:
            raise ArtifactError(
                f"embedder mismatch: the artifact was calibrated on the quantised copy {self.embedder_weights!r} "
                f"of {self.embedder_name!r}, the router's copy is {weights or 'the unquantised model'!r}: "
                "recalibrate with the router's model")
        if dim is not None and dim != self.embedder_dim:
            raise ArtifactError(f"embedder mismatch: the artifact has dimension {self.embedder_dim}, "
                                f"the router's embedder has {dim}")


    def check_window(self, window: int | None, model_window: int | None = None) -> None:
        """ArtifactError unless the router's encoder reads the routing window the artifact was calibrated with
        (None: not checked). An artifact that records none was made from the model's whole window,
        ``model_window``."""
        recorded = self.embedder_window or model_window
        if window is not None and recorded is not None and window != recorded:
            raise ArtifactError(
                f"routing window mismatch: the artifact was calibrated on the first {recorded} tokens of each query, "
                f"the router's embedder reads {window}: set embedder.window: {recorded}, or recalibrate with "
                f"triage calibrate --window {window}")


def recorded_window(path: str | Path) -> int | None:
    """The routing window the artifact at ``path`` records (None: none recorded, or no readable manifest), so that
    a tool given only the artifact (``triage eval``, ``route``, ``plan``) embeds as it was calibrated."""
    try:
        window = json.loads((Path(path) / "manifest.json").read_text()).get("embedder", {}).get("window")
    except (OSError, ValueError, AttributeError):
        return None
    return window if isinstance(window, int) and window > 0 else None


def stale(path: Path, generalist: str | None = None, window: int | None = None) -> bool:
    """Whether the artifact directory ``path`` has a manifest that calls for calibrating again: in another format
    than this Triage writes, or, given ``generalist`` or ``window``, naming another generalist or recording another
    routing window (the router refuses either mismatch). ``make run`` and the benches ask."""
    manifest = path / "manifest.json"
    if not manifest.exists():
        return False
    recorded = json.loads(manifest.read_text())
    other = generalist is not None and recorded.get("generalist") != generalist
    other_window = window is not None and recorded_window(path) != window
    return recorded.get("format_version") != FORMAT_VERSION or other or other_window


# ---- invariants (the constructor's) ---------------------------------------------------------------------------


def _check_models(a: Artifact) -> None:
    if not a.models or not all(isinstance(m, str) and m for m in a.models):
        raise ArtifactError("manifest.json: models must be a non-empty list of names")
    if len(set(a.models)) != len(a.models):
        raise ArtifactError("manifest.json: models has duplicates")
    for key, name in (("generalist", a.generalist), ("reference_model", a.reference_model)):
        if name not in a.models:
            raise ArtifactError(f"manifest.json: {key} {name!r} is not one of the models")
    if not a.embedder_name or a.embedder_dim < 1:
        raise ArtifactError("manifest.json: embedder must be {name: str, dim: int, normalisation}")


def _check_clusters(a: Artifact) -> None:
    k, m = len(a.centroids), len(a.models)
    if a.centroids.ndim != 2 or k < 1 or a.centroids.shape[1] != a.embedder_dim:
        raise ArtifactError(f"centroids.npy: shape {a.centroids.shape}, expected (k, {a.embedder_dim})")
    for name, values in (("n", a.counts), ("accuracy", a.accuracy), ("estimate", a.estimate),
                         ("mean_cost", a.mean_cost), ("cliff", a.cliff)):
        if values.shape != (k, m):
            raise ArtifactError(f"table.json: {name} has shape {values.shape}, expected (k={k}, models={m})")
    for name, values in (("accuracy", a.accuracy), ("estimate", a.estimate)):
        if values.min() < 0 or values.max() > 1:
            raise ArtifactError(f"table.json: {name} must lie in [0, 1]")
    if a.mean_cost.min() < 0 or a.counts.min() < 0:
        raise ArtifactError("table.json: n and mean_cost must be >= 0")
    if a.cliff[:, a.models.index(a.generalist)].any():
        raise ArtifactError("cliffs.json: the generalist cannot have a cliff")
    if a.reference.ndim != 2 or a.reference.shape[0] < 1 or a.reference.shape[1] != a.embedder_dim:
        raise ArtifactError(f"reference.npy: shape {a.reference.shape}, expected (n, {a.embedder_dim})")
    if a.reference_scores.shape != (len(a.reference), m):
        raise ArtifactError(f"reference_scores.npy: shape {a.reference_scores.shape}, expected "
                            f"({len(a.reference)}, {m})")


def _check_policy(a: Artifact) -> None:
    if not 1 <= a.soft_top <= a.k:
        raise ArtifactError(f"manifest.json: policy.soft_top must be an integer in [1, k={a.k}]")
    if not 1 <= a.knn_k <= len(a.reference):
        raise ArtifactError("manifest.json: policy.knn_k must be an integer in [1, number of reference vectors]")
    if not a.temperature > 0 or not 0 <= a.knn_weight <= 1:
        raise ArtifactError("manifest.json: policy.temperature must be > 0 and knn_weight in [0, 1]")


def _check_ood(a: Artifact) -> None:
    if not 1 <= a.ood_k <= len(a.reference):
        raise ArtifactError("ood.json: k_neighbors must be an integer in [1, number of reference vectors]")
    if math.isnan(a.ood_threshold):
        raise ArtifactError("ood.json: threshold must be a number")
    if a.thresholds.shape != (a.k,) or np.isnan(a.thresholds).any():
        raise ArtifactError(f"ood.json: cluster_thresholds must be a list of k={a.k} numbers")


def _check_refine(a: Artifact, tier: RefineTier) -> None:
    if tier.reference.shape != (len(a.reference), tier.embedder_dim):
        raise ArtifactError(f"refine_reference.npy: shape {tier.reference.shape}, expected "
                            f"({len(a.reference)}, {tier.embedder_dim}): the reference queries, re-embedded")
    if not 1 <= tier.ood_k <= len(tier.reference):
        raise ArtifactError("refine.json: k_neighbors must be an integer in [1, number of reference vectors]")
    for key, values in (("cluster_thresholds", tier.cluster_thresholds), ("refine_above", tier.refine_above)):
        if values.shape != (a.k,):
            raise ArtifactError(f"refine.json: {key} must be a list of k={a.k} numbers")


def _check_domains(a: Artifact, level: DomainLevel) -> None:
    d, m = len(level.names), len(a.models)
    if d < 2 or not all(isinstance(n, str) for n in level.names):
        raise ArtifactError("domains.json: names must be a list of at least 2 domain names")
    if level.coef.shape != (d, a.embedder_dim):
        raise ArtifactError(f"domain_coef.npy: shape {level.coef.shape}, expected ({d}, {a.embedder_dim})")
    if level.intercept.shape != (d,):
        raise ArtifactError(f"domains.json: intercept must be a list of {d} numbers")
    for key, values in (("estimate", level.estimate), ("mean_cost", level.mean_cost)):
        if values.shape != (d, m):
            raise ArtifactError(f"domains.json: {key} must be {d} rows of {m} numbers (domains x models)")
    if level.estimate.min() < 0 or level.estimate.max() > 1 or level.mean_cost.min() < 0:
        raise ArtifactError("domains.json: estimate must lie in [0, 1] and mean_cost be >= 0")
    if not 0 <= level.weight <= 1:
        raise ArtifactError("domains.json: weight must lie in [0, 1]")
    if level.cell_estimate is None and level.cell_cost is None:
        return
    shape = (d, a.k, m)
    if level.cell_estimate is None or level.cell_cost is None or level.cell_estimate.shape != shape or \
            level.cell_cost.shape != shape:
        got = None if level.cell_estimate is None else level.cell_estimate.shape
        raise ArtifactError(f"domain_cells.npy: shape (2, {got}), expected (2, {d}, {a.k}, {m})")
    if level.cell_estimate.min() < 0 or level.cell_estimate.max() > 1 or level.cell_cost.min() < 0:
        raise ArtifactError("domain_cells.npy: estimates must lie in [0, 1] and costs be >= 0")
    if not level.cell_strength > 0:
        raise ArtifactError("domains.json: cells.strength must be > 0")


def _check_detector(a: Artifact, detector: DomainDetector) -> None:
    if a.domains is None:
        raise ArtifactError("ood.json: method 'domain_mahalanobis_energy' needs the domain level "
                            "(domains.json, domain_coef.npy)")
    if a.refine is not None:
        raise ArtifactError("refine.json refines the kNN score: it cannot go with 'domain_mahalanobis_energy'")
    d, dim = len(a.domains.names), a.embedder_dim
    if detector.means.shape != (d, dim):
        raise ArtifactError(f"ood_means.npy: shape {detector.means.shape}, expected ({d}, {dim})")
    if detector.precision.shape != (dim, dim):
        raise ArtifactError(f"ood_precision.npy: shape {detector.precision.shape}, expected ({dim}, {dim})")
    for key, threshold, center in (("mahalanobis", detector.mahalanobis_threshold, detector.mahalanobis_center),
                                   ("energy", detector.energy_threshold, detector.energy_center)):
        if not threshold > center:
            raise ArtifactError(f"ood.json: {key}.threshold must exceed its center")
    if not 0 <= detector.margin_at_line <= 1 or not 0 <= detector.margin_from < 1:
        raise ArtifactError("ood.json: margin.at_line must lie in [0, 1] and margin.from in [0, 1)")
    if detector.margin_score not in MARGIN_SCORES:
        raise ArtifactError("ood.json: margin.score must be 'max' or 'energy'")


# ---- reading: one reader per format version ---------------------------------------------------------------------


def _read_v5(path: Path, manifest: dict[str, Any]) -> Artifact:
    emb = manifest.get("embedder")
    if not isinstance(emb, dict) or not isinstance(emb.get("name"), str) or not isinstance(emb.get("dim"), int):
        raise ArtifactError("manifest.json: embedder must be {name: str, dim: int, normalisation}")
    if not isinstance(emb.get("window", 0), int) or emb.get("window", 0) < 0:
        raise ArtifactError("manifest.json: embedder.window must be a number of tokens")
    if emb.get("normalisation") != NORMALISATION:
        raise ArtifactError(f"manifest.json: embedder.normalisation must be {NORMALISATION!r}")
    models = manifest.get("models")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ArtifactError("manifest.json: models must be a non-empty list of names")
    k = manifest.get("k")
    if not isinstance(k, int) or k < 1:
        raise ArtifactError("manifest.json: k must be a positive integer")
    centroids = read_npy(path / "centroids.npy")
    if centroids.shape != (k, emb["dim"]):
        raise ArtifactError(f"centroids.npy: shape {centroids.shape}, expected ({k}, {emb['dim']}) from manifest k "
                            "and embedder dim")
    counts, accuracy, estimate, mean_cost = read_table(read_json(path / "table.json"), k, models)
    policy = manifest.get("policy")
    if not isinstance(policy, dict):
        raise ArtifactError("manifest.json: policy must be an object")
    if policy.get("normalisation") != POLICY_NORMALISATION:
        raise ArtifactError(f"manifest.json: policy.normalisation must be {POLICY_NORMALISATION!r}")
    ood = read_object(path / "ood.json")
    if ood.get("method") not in OOD_METHODS:
        raise ArtifactError(f"ood.json: method must be one of {', '.join(map(repr, OOD_METHODS))}")
    per_cluster = ood.get("cluster_thresholds")  # absent or null: the one threshold everywhere
    if per_cluster is not None:
        per_cluster = numbers(per_cluster, k, "ood.json: cluster_thresholds", "k=")
    domains = read_domains(path, k, len(models))
    return Artifact(
        models=list(models), generalist=str(manifest.get("generalist")),
        reference_model=str(manifest.get("reference_model")), embedder_name=emb["name"], embedder_dim=emb["dim"],
        embedder_weights=str(emb.get("weights", "")), embedder_window=emb.get("window", 0), centroids=centroids,
        counts=counts, accuracy=accuracy, estimate=estimate, mean_cost=mean_cost,
        cliff=read_cliffs(read_json(path / "cliffs.json"), k, models),
        reference=read_npy(path / "reference.npy"), reference_scores=read_npy(path / "reference_scores.npy"),
        soft_top=integer(policy.get("soft_top"), "manifest.json: policy.soft_top"),
        temperature=finite(policy.get("temperature"), "manifest.json: policy.temperature"),
        knn_weight=finite(policy.get("knn_weight"), "manifest.json: policy.knn_weight"),
        knn_k=integer(policy.get("knn_k"), "manifest.json: policy.knn_k"),
        ood_k=integer(ood.get("k_neighbors"), "ood.json: k_neighbors"),
        ood_threshold=finite(ood.get("threshold"), "ood.json: threshold"),
        ood_cluster_thresholds=per_cluster,
        refine=read_refine(path, k), domains=domains, ood_detector=read_detector(path, ood, domains),
        manifest=manifest, path=path,
    )


READERS: dict[int, Callable[[Path, dict[str, Any]], Artifact]] = {5: _read_v5}
