"""Train-only development checks: the shared datasets' train rows, their vectors, and routing a slice of them
with a fit on the rest. No test row is read: these decide what becomes a default before any test run.

Used by ``bench.ood_detector``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.harness.datasets import DATASETS, ROOT, ROUTERDC_GENERALIST
from calibration.data import ScoreMatrix, hash_fraction, load_scores
from calibration.embeddings import EmbeddingCache
from calibration.fit import FitConfig, FitResult, fit
from calibration.lodo import policy_from
from router.policy import Policy

# The generalist each dataset's published figures use (docs/results.md): RouterDC's train-chosen one.
GENERALIST = {"routerdc": ROUTERDC_GENERALIST}


@dataclass
class TrainRows:
    name: str
    rows: ScoreMatrix
    x: npt.NDArray[np.float32]
    generalist: str

    def fold(self, salt: str, parts: int) -> npt.NDArray[np.intp]:
        """Each row's fold in ``range(parts)``, by sha256(salt + id)."""
        return np.array([int(hash_fraction(salt + i) * parts) for i in self.rows.ids])

    def fit(self, rows: npt.NDArray[np.bool_], config: FitConfig) -> tuple[FitResult, Policy]:
        """``fit()`` on these rows (with the domain level), and the policy the router would run from it."""
        idx = np.flatnonzero(rows)
        r = self.rows
        result = fit([r.ids[i] for i in idx], self.x[rows], r.scores[rows], r.costs[rows], r.models,
                     self.generalist, config, progress=False, domains=[r.domains[i] for i in idx])
        return result, policy_from(result, r.models, self.generalist)


def load(name: str) -> TrainRows:
    from calibration.options import choose_generalist, make_encoder

    spec = DATASETS[name]
    data = load_scores(ROOT / spec["data"], Path(spec["prices"]) if "prices" in spec else None)
    train = data.subset(data.mask_split("train"))
    generalist, _ = choose_generalist(train, GENERALIST.get(name))
    x = EmbeddingCache(make_encoder(2)).embed(train.queries, progress=False)
    return TrainRows(name, train, x, generalist)
