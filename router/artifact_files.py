"""The artifact's files, read one section at a time (router/artifact.py builds the ``Artifact`` from them).

Each reader parses one file or optional part and refuses what it cannot parse (missing, not JSON or ``.npy``, wrong
types, NaN or infinite values) with an ``ArtifactError`` naming the file; how the parts fit together (shapes
against ``k`` and the model list, ranges) is the ``Artifact`` constructor's to check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.domains import DomainLevel
from router.ood import DomainDetector, RefineTier

Floats = npt.NDArray[np.float64]


class ArtifactError(Exception):
    """The artifact is missing, malformed or made for another embedder; the message is safe to show."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"artifact file {path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"artifact file {path.name} is not valid JSON ({type(exc).__name__})") from None


def read_object(path: Path) -> dict[str, Any]:
    value = read_json(path)
    if not isinstance(value, dict):
        raise ArtifactError(f"{path.name}: the top level must be an object")
    return value


def read_npy(path: Path, dtype: type[np.floating[Any]] = np.float32, ndim: int = 2) -> Any:
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


def finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArtifactError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArtifactError(f"{where} must be an integer, got {value!r}")
    return value


def numbers(values: Any, n: int, where: str, count: str = "") -> Floats:
    """``count``: how the message names ``n`` ("k=" for one number per cluster)."""
    if not isinstance(values, list) or len(values) != n:
        raise ArtifactError(f"{where} must be a list of {count}{n} numbers")
    return np.array([finite(v, f"{where}[{i}]") for i, v in enumerate(values)], dtype=np.float64)


def present(spec: Path, data: Path) -> bool:
    """Whether an optional part is there; one of its two files alone is read as there (and found missing)."""
    return spec.exists() or data.exists()


def read_table(table: Any, k: int, models: list[str]) -> tuple[Floats, Floats, Floats, Floats]:
    """(counts, accuracy, estimate, mean_cost), each (k, m)."""
    clusters = table.get("clusters") if isinstance(table, dict) else None
    if not isinstance(clusters, list) or len(clusters) != k:
        raise ArtifactError(f"table.json: clusters must be a list of k={k} entries")
    out = np.zeros((4, k, len(models)))
    for c, entry in enumerate(clusters):
        per_model = entry.get("models") if isinstance(entry, dict) else None
        if not isinstance(per_model, dict):
            raise ArtifactError(f"table.json: cluster {c}: models must be an object")
        for j, model in enumerate(models):
            cell = per_model.get(model)
            if not isinstance(cell, dict):
                raise ArtifactError(f"table.json: cluster {c}: model {model!r} is missing")
            for i, key in enumerate(("n", "accuracy", "estimate", "mean_cost")):
                out[i, c, j] = finite(cell.get(key), f"table.json: cluster {c}, model {model!r}: {key}")
    return out[0], out[1], out[2], out[3]


def read_cliffs(cliffs: Any, k: int, models: list[str]) -> npt.NDArray[np.bool_]:
    if not isinstance(cliffs, dict):
        raise ArtifactError("cliffs.json: expected {model: [cluster ids]}")
    cliff = np.zeros((k, len(models)), dtype=bool)
    for model, clusters in cliffs.items():
        if model not in models:
            raise ArtifactError(f"cliffs.json: unknown model {model!r}")
        if not isinstance(clusters, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < k for c in clusters
        ):
            raise ArtifactError(f"cliffs.json: {model!r}: expected a list of cluster ids in [0, {k})")
        cliff[clusters, models.index(model)] = True
    return cliff


def read_refine(path: Path, k: int) -> RefineTier | None:
    spec_file, ref_file = path / "refine.json", path / "refine_reference.npy"
    if not present(spec_file, ref_file):
        return None
    spec = read_object(spec_file)
    emb = spec.get("embedder")
    if not isinstance(emb, dict) or not isinstance(emb.get("name"), str) or not isinstance(emb.get("dim"), int):
        raise ArtifactError("refine.json: embedder must be {name: str, dim: int}")
    return RefineTier(
        embedder_name=emb["name"], embedder_dim=emb["dim"], reference=read_npy(ref_file),
        ood_k=integer(spec.get("k_neighbors"), "refine.json: k_neighbors"),
        threshold=finite(spec.get("threshold"), "refine.json: threshold"),
        cluster_thresholds=numbers(spec.get("cluster_thresholds"), k, "refine.json: cluster_thresholds", "k="),
        refine_above=numbers(spec.get("refine_above"), k, "refine.json: refine_above", "k="))


def read_domains(path: Path, k: int, m: int) -> DomainLevel | None:
    spec_file, coef_file = path / "domains.json", path / "domain_coef.npy"
    if not present(spec_file, coef_file):
        return None
    spec = read_object(spec_file)
    names = spec.get("names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise ArtifactError("domains.json: names must be a list of at least 2 domain names")
    d = len(names)

    def table(key: str) -> Floats:
        rows = spec.get(key)
        if not isinstance(rows, list) or len(rows) != d or not all(isinstance(r, list) and len(r) == m for r in rows):
            raise ArtifactError(f"domains.json: {key} must be {d} rows of {m} numbers (domains x models)")
        return np.array([[finite(v, f"domains.json: {key}[{i}][{j}]") for j, v in enumerate(r)]
                         for i, r in enumerate(rows)])

    level = DomainLevel(names=list(names), coef=read_npy(coef_file),
                        intercept=numbers(spec.get("intercept"), d, "domains.json: intercept"),
                        estimate=table("estimate"), mean_cost=table("mean_cost"),
                        weight=finite(spec.get("weight"), "domains.json: weight"))
    cells_file = path / "domain_cells.npy"
    if "cells" not in spec and not cells_file.exists():
        return level
    cells = spec.get("cells")
    if not isinstance(cells, dict):
        raise ArtifactError("domains.json: cells must be {strength, ...} with domain_cells.npy beside it")
    array = read_npy(cells_file, np.float64, ndim=4)
    if array.shape != (2, d, k, m):
        raise ArtifactError(f"domain_cells.npy: shape {array.shape}, expected {(2, d, k, m)}")
    level.cell_estimate, level.cell_cost = array[0], array[1]
    level.cell_strength = finite(cells.get("strength"), "domains.json: cells.strength")
    return level


def read_detector(path: Path, ood: dict[str, Any], domains: DomainLevel | None) -> DomainDetector | None:
    files = (path / "ood_means.npy", path / "ood_precision.npy")
    if ood["method"] != "domain_mahalanobis_energy":
        if any(f.exists() for f in files):
            raise ArtifactError("ood_means.npy / ood_precision.npy belong to ood.json method "
                                "'domain_mahalanobis_energy'")
        return None
    if domains is None:
        raise ArtifactError("ood.json: method 'domain_mahalanobis_energy' needs the domain level "
                            "(domains.json, domain_coef.npy)")

    def part(key: str) -> tuple[float, float]:
        spec = ood.get(key)
        if not isinstance(spec, dict):
            raise ArtifactError(f"ood.json: {key} must be {{threshold, center}}")
        return finite(spec.get("threshold"), f"ood.json: {key}.threshold"), \
            finite(spec.get("center"), f"ood.json: {key}.center")

    margin = ood.get("margin")
    if not isinstance(margin, dict):
        raise ArtifactError("ood.json: margin must be {at_line, from[, score]}")
    (tm, cm), (te, ce) = part("mahalanobis"), part("energy")
    return DomainDetector(read_npy(files[0], np.float64), read_npy(files[1], np.float64), tm, cm, te, ce,
                          finite(margin.get("at_line"), "ood.json: margin.at_line"),
                          finite(margin.get("from"), "ood.json: margin.from"), str(margin.get("score", "max")))
