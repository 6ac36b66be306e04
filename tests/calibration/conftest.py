"""Fixtures for calibration tests: a synthetic score matrix with a real cliff, and a fake encoder.

The fake encoder places each query near its domain's centre (domain = the text before ':'), so clusters,
OOD distances and cliffs are known by construction and tests run in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

MODELS = ["general", "mathy", "cheap"]


class FakeEncoder:
    name = "fake-encoder"
    dim = 16
    max_tokens = 256  # the routing window the artifact records

    def __init__(self) -> None:
        self.calls = 0

    def encode(
        self, texts: list[str], batch_size: int = 64, progress: bool = False
    ) -> npt.NDArray[np.float32]:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            domain = text.split(":", 1)[0]
            centre = np.random.default_rng(int(hashlib.sha256(domain.encode()).hexdigest()[:8], 16))
            noise = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
            v = centre.normal(size=self.dim) * 3 + noise.normal(size=self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


# Accuracy of each model per domain: "mathy" is a specialist that falls off a cliff outside math.
ACCURACY = {"math": (0.5, 0.9, 0.3), "history": (0.7, 0.2, 0.5), "code": (0.6, 0.25, 0.55)}
PRICE = {"general": 1e-3, "mathy": 5e-4, "cheap": 1e-4}


def synthetic_rows(
    n_per_domain: int = 120,
    seed: int = 0,
    domains: dict[str, tuple[float, ...]] | None = None,
    with_cost: bool = True,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for domain, accs in (domains or ACCURACY).items():
        for i in range(n_per_domain):
            row: dict[str, Any] = {
                "id": f"{domain}-{i}",
                "query": f"{domain}: question {i}",
                "domain": domain,
                "split": "train" if i < n_per_domain * 2 // 3 else "test",
                "scores": {m: float(rng.random() < a) for m, a in zip(MODELS, accs, strict=True)},
            }
            if with_cost:
                row["cost"] = {m: PRICE[m] for m in MODELS}
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def synthetic_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "scores.jsonl", synthetic_rows())
