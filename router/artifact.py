"""The calibration artifact, as the router reads it (``calibration/`` writes it; format in docs/artifact.md).

A directory::

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

An artifact fitted on a fast embedder may carry a refine tier (both files, or neither)::

    refine.json          embedder {name, dim}, k_neighbors, threshold, cluster_thresholds, refine_above (per
                         cluster: the fast OOD score at or above which the refine embedder makes the call)
    refine_reference.npy (n_ref, refine dim) the same reference queries embedded by the refine embedder

Format version 2 adds ``policy.normalisation`` (manifest) and the optional domain level (both files, or
neither; a version-1 router refuses a version-2 artifact instead of ignoring what it does not know)::

    domains.json       names, weight (share in the blend), intercept, estimate and mean_cost per domain and model
    domain_coef.npy    (D, dim) float32 weights of the embedding -> domain classifier

Format version 3 adds the domain OOD detector (router/ood.py ``DomainDetector``): ood.json's method
``domain_mahalanobis_energy`` with the thresholds and centers of its two parts, the domain level (the detector
uses its classifier; its weight may be 0) and::

    ood_means.npy      (D, dim) float64 each domain's mean embedding, in domains.json's order
    ood_precision.npy  (dim, dim) float64 inverse of the shared within-domain covariance

Format version 4 adds the detector's OOD margin, ood.json ``margin: {at_line, from, score}`` (``score``: "energy"
or "max", "max" when absent; ``DomainDetector.margin``): a version-3 router would route such an artifact without it.

Format version 5 adds the domain level's optional per-(domain, cluster) cells (``DomainLevel.cell_estimate``),
domains.json ``cells: {strength, ...}`` and::

    domain_cells.npy   (2, D, k, m) float64: each cell's shrunk accuracy, then its mean cost

``Artifact.load`` checks all of it and raises ``ArtifactError`` with a message that names the file and the
problem but never an absolute path (it may reach an admin API client).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.domains import DomainLevel
from router.ood import MARGIN_SCORES, DomainDetector

# Version 2 (2026-12-02): policy.normalisation and the optional domain level (router/domains.py). Version 3
# (2026-12-02): the domain OOD detector (router/ood.py). Version 4 (2026-12-02): its OOD margin. Version 5
# (2026-12-04): the domain level's per-(domain, cluster) cells. A router that reads only older versions refuses a
# newer artifact instead of routing it with rules it does not know.
FORMAT_VERSION = 5
SUPPORTED_FORMAT_VERSIONS = (1, 2, 3, 4, 5)
OOD_METHODS = ("knn_cosine_distance", "domain_mahalanobis_energy")
NORMALISATION = "l2"
REQUIRED_FILES = (
    "manifest.json",
    "centroids.npy",
    "table.json",
    "cliffs.json",
    "ood.json",
    "reference.npy",
    "reference_scores.npy",
)

Matrix = npt.NDArray[np.float32]


class ArtifactError(Exception):
    """The artifact is missing, malformed or made for another embedder; the message is safe to show."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"artifact file {path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"artifact file {path.name} is not valid JSON ({type(exc).__name__})") from None


def stale(path: Path, generalist: str | None = None) -> bool:
    """Whether the artifact directory ``path`` has a manifest that calls for calibrating again: in another format
    than this Triage writes (it may load, but it routes without what the current format adds), or, given
    ``generalist``, naming another generalist (the router refuses that mismatch). ``make run`` and the benches ask."""
    manifest = path / "manifest.json"
    if not manifest.exists():
        return False
    recorded = json.loads(manifest.read_text())
    other = generalist is not None and recorded.get("generalist") != generalist
    return recorded.get("format_version") != FORMAT_VERSION or other


def _read_npy(path: Path, dtype: type[np.floating[Any]] = np.float32, ndim: int = 2) -> Matrix:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ArtifactError(f"artifact file {path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"artifact file {path.name} is not a valid .npy array ({type(exc).__name__})"
        ) from None
    if array.ndim != ndim:
        raise ArtifactError(f"artifact file {path.name}: expected a {ndim}-d array, got {array.ndim}-d")
    if not np.issubdtype(array.dtype, np.floating):
        raise ArtifactError(f"artifact file {path.name}: expected floats, got {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ArtifactError(f"artifact file {path.name} contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=dtype)


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArtifactError(f"{where} must be a finite number, got {value!r}")
    return float(value)


@dataclass
class RefineTier:
    """Out-of-domain calls near the threshold, re-made with a better (slower) embedder."""

    embedder_name: str
    embedder_dim: int
    reference: Matrix  # (n_ref, refine dim): the artifact's reference queries in the refine embedder's space
    ood_k: int
    threshold: float
    cluster_thresholds: npt.NDArray[np.float64]  # (k,)
    refine_above: npt.NDArray[np.float64]  # (k,) fast OOD score from which a query is refined


class Artifact:
    """A validated calibration artifact: arrays ready for ``Policy``."""

    path: Path
    models: list[str]
    generalist: str
    reference_model: str
    embedder_name: str
    embedder_dim: int
    embedder_weights: str  # "": the model's own weights (or not recorded)
    k: int
    manifest: dict[str, Any]
    centroids: Matrix  # (k, dim)
    counts: npt.NDArray[np.float64]  # (k, m) queries measured
    accuracy: npt.NDArray[np.float64]  # (k, m) raw mean correctness
    estimate: npt.NDArray[np.float64]  # (k, m) Beta-posterior mean shrunk toward the model's global accuracy
    mean_cost: npt.NDArray[np.float64]  # (k, m) USD per query
    cliff: npt.NDArray[np.bool_]  # (k, m) True = model ineligible in that cluster
    reference: Matrix  # (n_ref, dim)
    reference_scores: Matrix  # (n_ref, m)
    ood_k: int
    ood_threshold: float
    ood_cluster_thresholds: npt.NDArray[np.float64]  # (k,) per nearest cluster; all = threshold if absent
    soft_top: int
    temperature: float
    knn_weight: float
    knn_k: int
    refine: RefineTier | None = None
    domains: DomainLevel | None = None
    ood_detector: DomainDetector | None = None  # set: it scores OOD in threshold units (ood_threshold 1.0)
    normalisation: str = "query"  # "global" (format version 2) or "query" (version 1: per-query min-max)

    @classmethod
    def load(
        cls, path: str | Path, embedder_name: str | None = None, embedder_dim: int | None = None,
        embedder_weights: str | None = None,
    ) -> Artifact:
        """``embedder_weights``: the serving encoder's ``weights`` (a quantised copy's file hash, "" for the
        model's own weights). An artifact that records other weights under the same name is refused."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"artifact directory {path.name!r} not found")
        self = cls()
        self.path = path
        manifest = _read_json(path / "manifest.json")
        if not isinstance(manifest, dict):
            raise ArtifactError("manifest.json: the top level must be an object")
        self.manifest = manifest
        version = manifest.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ArtifactError(
                f"manifest.json: unknown format_version {version!r} (this router reads "
                f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
            )
        emb = manifest.get("embedder")
        if (
            not isinstance(emb, dict)
            or not isinstance(emb.get("name"), str)
            or not isinstance(emb.get("dim"), int)
        ):
            raise ArtifactError("manifest.json: embedder must be {name: str, dim: int, normalisation}")
        self.embedder_name, self.embedder_dim = emb["name"], emb["dim"]
        if emb.get("normalisation") != NORMALISATION:
            raise ArtifactError(f"manifest.json: embedder.normalisation must be {NORMALISATION!r}")
        if embedder_name is not None and embedder_name != self.embedder_name:
            raise ArtifactError(
                f"embedder mismatch: the artifact was calibrated with {self.embedder_name!r}, "
                f"the router uses {embedder_name!r}"
            )
        self.embedder_weights = str(emb.get("weights", ""))
        if embedder_weights is not None and self.embedder_weights and embedder_weights != self.embedder_weights:
            raise ArtifactError(
                f"embedder mismatch: the artifact was calibrated on the quantised copy {self.embedder_weights!r} "
                f"of {self.embedder_name!r}, the router's copy is {embedder_weights or 'the unquantised model'!r}: "
                "recalibrate with the router's model"
            )
        if embedder_dim is not None and embedder_dim != self.embedder_dim:
            raise ArtifactError(
                f"embedder mismatch: the artifact has dimension {self.embedder_dim}, "
                f"the router's embedder has {embedder_dim}"
            )
        models = manifest.get("models")
        if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
            raise ArtifactError("manifest.json: models must be a non-empty list of names")
        if len(set(models)) != len(models):
            raise ArtifactError("manifest.json: models has duplicates")
        self.models = list(models)
        for key in ("generalist", "reference_model"):
            if manifest.get(key) not in self.models:
                raise ArtifactError(f"manifest.json: {key} {manifest.get(key)!r} is not one of the models")
        self.generalist, self.reference_model = manifest["generalist"], manifest["reference_model"]
        k = manifest.get("k")
        if not isinstance(k, int) or k < 1:
            raise ArtifactError("manifest.json: k must be a positive integer")
        self.k = k
        self._load_policy(manifest.get("policy"))
        if version < 2 and self.normalisation != "query":
            raise ArtifactError("manifest.json: policy.normalisation needs format_version 2")
        self._load_arrays(path)
        self._load_table(_read_json(path / "table.json"))
        self._load_cliffs(_read_json(path / "cliffs.json"))
        ood = _read_json(path / "ood.json")
        self._load_ood(ood)
        self._load_refine(path)
        self._load_domains(path, version)
        self._load_detector(path, version, ood)
        return self

    def _load_detector(self, path: Path, version: int, ood: dict[str, Any]) -> None:
        files = (path / "ood_means.npy", path / "ood_precision.npy")
        if ood["method"] != "domain_mahalanobis_energy":
            if any(f.exists() for f in files):
                raise ArtifactError("ood_means.npy / ood_precision.npy belong to ood.json method "
                                    "'domain_mahalanobis_energy'")
            self.ood_detector = None
            return
        if version < 3:
            raise ArtifactError("ood.json: method 'domain_mahalanobis_energy' needs format_version 3")
        if self.domains is None:
            raise ArtifactError("ood.json: method 'domain_mahalanobis_energy' needs the domain level "
                                "(domains.json, domain_coef.npy)")
        if self.refine is not None:
            raise ArtifactError("refine.json refines the kNN score: it cannot go with 'domain_mahalanobis_energy'")
        d, dim = len(self.domains.names), self.embedder_dim
        means, precision = _read_npy(files[0], np.float64), _read_npy(files[1], np.float64)
        if means.shape != (d, dim):
            raise ArtifactError(f"ood_means.npy: shape {means.shape}, expected ({d}, {dim})")
        if precision.shape != (dim, dim):
            raise ArtifactError(f"ood_precision.npy: shape {precision.shape}, expected ({dim}, {dim})")

        def part(key: str) -> tuple[float, float]:
            spec = ood.get(key)
            if not isinstance(spec, dict):
                raise ArtifactError(f"ood.json: {key} must be {{threshold, center}}")
            threshold = _finite(spec.get("threshold"), f"ood.json: {key}.threshold")
            center = _finite(spec.get("center"), f"ood.json: {key}.center")
            if threshold <= center:
                raise ArtifactError(f"ood.json: {key}.threshold must exceed its center")
            return threshold, center

        (tm, cm), (te, ce) = part("mahalanobis"), part("energy")
        at_line, start, reads = 0.0, 0.5, "max"  # format 3 had no margin: the line alone
        if version >= 4:
            spec = ood.get("margin")
            if not isinstance(spec, dict):
                raise ArtifactError("ood.json: margin must be {at_line, from[, score]} (format_version 4)")
            at_line = _finite(spec.get("at_line"), "ood.json: margin.at_line")
            start = _finite(spec.get("from"), "ood.json: margin.from")
            if not 0 <= at_line <= 1 or not 0 <= start < 1:
                raise ArtifactError("ood.json: margin.at_line must lie in [0, 1] and margin.from in [0, 1)")
            reads = spec.get("score", "max")
            if reads not in MARGIN_SCORES:
                raise ArtifactError("ood.json: margin.score must be 'max' or 'energy'")
        self.ood_detector = DomainDetector(means.astype(np.float64), precision.astype(np.float64), tm, cm, te, ce,
                                           at_line, start, reads)
        # Its scores are in units of its thresholds, so the line is 1.0 wherever the query lands.
        self.ood_threshold = 1.0
        self.ood_cluster_thresholds = np.ones(self.k)

    def _load_domains(self, path: Path, version: int) -> None:
        spec_file, coef_file = path / "domains.json", path / "domain_coef.npy"
        if version < 2 and (spec_file.exists() or coef_file.exists()):
            raise ArtifactError("domains.json / domain_coef.npy need format_version 2")
        if not spec_file.exists() and not coef_file.exists():
            self.domains = None
            return
        spec = _read_json(spec_file)
        if not isinstance(spec, dict):
            raise ArtifactError("domains.json: the top level must be an object")
        names = spec.get("names")
        if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
            raise ArtifactError("domains.json: names must be a list of at least 2 domain names")
        d, m = len(names), len(self.models)
        coef = _read_npy(coef_file)
        if coef.shape != (d, self.embedder_dim):
            raise ArtifactError(f"domain_coef.npy: shape {coef.shape}, expected ({d}, {self.embedder_dim})")
        intercept = spec.get("intercept")
        if not isinstance(intercept, list) or len(intercept) != d:
            raise ArtifactError(f"domains.json: intercept must be a list of {d} numbers")

        def table(key: str) -> npt.NDArray[np.float64]:
            rows = spec.get(key)
            if not isinstance(rows, list) or len(rows) != d or not all(
                isinstance(r, list) and len(r) == m for r in rows
            ):
                raise ArtifactError(f"domains.json: {key} must be {d} rows of {m} numbers (domains x models)")
            return np.array([[_finite(v, f"domains.json: {key}[{i}][{j}]") for j, v in enumerate(r)]
                             for i, r in enumerate(rows)])

        estimate, mean_cost = table("estimate"), table("mean_cost")
        if estimate.min() < 0 or estimate.max() > 1 or mean_cost.min() < 0:
            raise ArtifactError("domains.json: estimate must lie in [0, 1] and mean_cost be >= 0")
        weight = _finite(spec.get("weight"), "domains.json: weight")
        if not 0 <= weight <= 1:
            raise ArtifactError("domains.json: weight must lie in [0, 1]")
        self.domains = DomainLevel(
            names=list(names), coef=coef, weight=weight, estimate=estimate, mean_cost=mean_cost,
            intercept=np.array([_finite(v, f"domains.json: intercept[{i}]") for i, v in enumerate(intercept)]))
        self._load_cells(path, version, spec, self.domains)

    def _load_cells(self, path: Path, version: int, spec: dict[str, Any], level: DomainLevel) -> None:
        cells_file = path / "domain_cells.npy"
        if "cells" not in spec and not cells_file.exists():
            return
        if version < 5:
            raise ArtifactError("domains.json cells / domain_cells.npy need format_version 5")
        cells = spec.get("cells")
        if not isinstance(cells, dict):
            raise ArtifactError("domains.json: cells must be {strength, ...} with domain_cells.npy beside it")
        strength = _finite(cells.get("strength"), "domains.json: cells.strength")
        if strength <= 0:
            raise ArtifactError("domains.json: cells.strength must be > 0")
        shape = (2, len(level.names), self.k, len(self.models))
        array = _read_npy(cells_file, np.float64, ndim=4)
        if array.shape != shape:
            raise ArtifactError(f"domain_cells.npy: shape {array.shape}, expected {shape}")
        if array[0].min() < 0 or array[0].max() > 1 or array[1].min() < 0:
            raise ArtifactError("domain_cells.npy: estimates must lie in [0, 1] and costs be >= 0")
        level.cell_estimate, level.cell_cost, level.cell_strength = array[0], array[1], strength

    def _load_refine(self, path: Path) -> None:
        spec_file, ref_file = path / "refine.json", path / "refine_reference.npy"
        if not spec_file.exists() and not ref_file.exists():
            self.refine = None
            return
        spec = _read_json(spec_file)
        emb = spec.get("embedder") if isinstance(spec, dict) else None
        if not isinstance(emb, dict) or not isinstance(emb.get("name"), str) or not isinstance(emb.get("dim"), int):
            raise ArtifactError("refine.json: embedder must be {name: str, dim: int}")
        reference = _read_npy(ref_file)
        if reference.shape != (self.reference.shape[0], emb["dim"]):
            raise ArtifactError(f"refine_reference.npy: shape {reference.shape}, expected "
                                f"({self.reference.shape[0]}, {emb['dim']}): the reference queries, re-embedded")
        k_neighbors = spec.get("k_neighbors")
        if not isinstance(k_neighbors, int) or not 1 <= k_neighbors <= reference.shape[0]:
            raise ArtifactError("refine.json: k_neighbors must be an integer in [1, number of reference vectors]")

        def per_cluster(key: str) -> npt.NDArray[np.float64]:
            values = spec.get(key)
            if not isinstance(values, list) or len(values) != self.k:
                raise ArtifactError(f"refine.json: {key} must be a list of k={self.k} numbers")
            return np.array([_finite(v, f"refine.json: {key}[{c}]") for c, v in enumerate(values)])

        self.refine = RefineTier(
            embedder_name=emb["name"], embedder_dim=emb["dim"], reference=reference, ood_k=k_neighbors,
            threshold=_finite(spec.get("threshold"), "refine.json: threshold"),
            cluster_thresholds=per_cluster("cluster_thresholds"), refine_above=per_cluster("refine_above"))

    def _load_policy(self, policy: Any) -> None:
        if not isinstance(policy, dict):
            raise ArtifactError("manifest.json: policy must be an object")
        soft_top, knn_k = policy.get("soft_top"), policy.get("knn_k")
        if not isinstance(soft_top, int) or not 1 <= soft_top <= self.k:
            raise ArtifactError(f"manifest.json: policy.soft_top must be an integer in [1, k={self.k}]")
        if not isinstance(knn_k, int) or knn_k < 1:
            raise ArtifactError("manifest.json: policy.knn_k must be a positive integer")
        self.soft_top, self.knn_k = soft_top, knn_k
        self.normalisation = policy.get("normalisation", "query")
        if self.normalisation not in ("query", "global"):
            raise ArtifactError("manifest.json: policy.normalisation must be 'query' or 'global'")
        self.temperature = _finite(policy.get("temperature"), "manifest.json: policy.temperature")
        self.knn_weight = _finite(policy.get("knn_weight"), "manifest.json: policy.knn_weight")
        if self.temperature <= 0 or not 0 <= self.knn_weight <= 1:
            raise ArtifactError("manifest.json: policy.temperature must be > 0 and knn_weight in [0, 1]")

    def _load_arrays(self, path: Path) -> None:
        self.centroids = _read_npy(path / "centroids.npy")
        if self.centroids.shape != (self.k, self.embedder_dim):
            raise ArtifactError(
                f"centroids.npy: shape {self.centroids.shape}, expected ({self.k}, "
                f"{self.embedder_dim}) from manifest k and embedder dim"
            )
        self.reference = _read_npy(path / "reference.npy")
        if self.reference.shape[1:] != (self.embedder_dim,) or self.reference.shape[0] < 1:
            raise ArtifactError(
                f"reference.npy: shape {self.reference.shape}, expected (n, {self.embedder_dim})"
            )
        self.reference_scores = _read_npy(path / "reference_scores.npy")
        if self.reference_scores.shape != (self.reference.shape[0], len(self.models)):
            raise ArtifactError(
                f"reference_scores.npy: shape {self.reference_scores.shape}, expected "
                f"({self.reference.shape[0]}, {len(self.models)})"
            )

    def _load_table(self, table: Any) -> None:
        clusters = table.get("clusters") if isinstance(table, dict) else None
        if not isinstance(clusters, list) or len(clusters) != self.k:
            raise ArtifactError(f"table.json: clusters must be a list of k={self.k} entries")
        shape = (self.k, len(self.models))
        self.counts, self.accuracy, self.estimate, self.mean_cost = (np.zeros(shape) for _ in range(4))
        for c, entry in enumerate(clusters):
            per_model = entry.get("models") if isinstance(entry, dict) else None
            if not isinstance(per_model, dict):
                raise ArtifactError(f"table.json: cluster {c}: models must be an object")
            for j, model in enumerate(self.models):
                cell = per_model.get(model)
                if not isinstance(cell, dict):
                    raise ArtifactError(f"table.json: cluster {c}: model {model!r} is missing")
                where = f"table.json: cluster {c}, model {model!r}"
                self.counts[c, j] = _finite(cell.get("n"), f"{where}: n")
                self.accuracy[c, j] = _finite(cell.get("accuracy"), f"{where}: accuracy")
                self.estimate[c, j] = _finite(cell.get("estimate"), f"{where}: estimate")
                self.mean_cost[c, j] = _finite(cell.get("mean_cost"), f"{where}: mean_cost")
        for name, values in (("accuracy", self.accuracy), ("estimate", self.estimate)):
            if values.min() < 0 or values.max() > 1:
                raise ArtifactError(f"table.json: {name} must lie in [0, 1]")
        if self.mean_cost.min() < 0 or self.counts.min() < 0:
            raise ArtifactError("table.json: n and mean_cost must be >= 0")

    def _load_cliffs(self, cliffs: Any) -> None:
        if not isinstance(cliffs, dict):
            raise ArtifactError("cliffs.json: expected {model: [cluster ids]}")
        self.cliff = np.zeros((self.k, len(self.models)), dtype=bool)
        for model, clusters in cliffs.items():
            if model not in self.models:
                raise ArtifactError(f"cliffs.json: unknown model {model!r}")
            if model == self.generalist and clusters:
                raise ArtifactError("cliffs.json: the generalist cannot have a cliff")
            if not isinstance(clusters, list) or not all(
                isinstance(c, int) and 0 <= c < self.k for c in clusters
            ):
                raise ArtifactError(
                    f"cliffs.json: {model!r}: expected a list of cluster ids in [0, {self.k})"
                )
            self.cliff[clusters, self.models.index(model)] = True

    def _load_ood(self, ood: Any) -> None:
        if not isinstance(ood, dict) or ood.get("method") not in OOD_METHODS:
            raise ArtifactError(f"ood.json: method must be one of {', '.join(map(repr, OOD_METHODS))}")
        k_neighbors = ood.get("k_neighbors")
        if not isinstance(k_neighbors, int) or not 1 <= k_neighbors <= self.reference.shape[0]:
            raise ArtifactError(
                "ood.json: k_neighbors must be an integer in [1, number of reference vectors]"
            )
        self.ood_k = k_neighbors
        self.ood_threshold = _finite(ood.get("threshold"), "ood.json: threshold")
        per_cluster = ood.get("cluster_thresholds")
        if per_cluster is None:
            self.ood_cluster_thresholds = np.full(self.k, self.ood_threshold)
        else:
            if not isinstance(per_cluster, list) or len(per_cluster) != self.k:
                raise ArtifactError(f"ood.json: cluster_thresholds must be a list of k={self.k} numbers")
            self.ood_cluster_thresholds = np.array(
                [_finite(v, f"ood.json: cluster_thresholds[{c}]") for c, v in enumerate(per_cluster)]
            )
        if self.knn_k > self.reference.shape[0]:
            raise ArtifactError("manifest.json: policy.knn_k exceeds the number of reference vectors")
