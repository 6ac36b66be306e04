"""Out-of-domain scores: is a query like anything the fleet was measured on?

A query far from everything calibration saw has no accuracy evidence behind any specialist, so the policy sends
it to the generalist. Two detectors, each with thresholds calibrated on held-out in-domain queries (a quantile
of their scores), never on the reference points themselves, whose distance to their own neighbourhood is
optimistically small:

- ``knn``: mean cosine distance to the k nearest reference (calibration) embeddings. DESIGN.md measured AUROC
  0.98 for it with all-MiniLM-L6-v2. It needs nothing but the reference rows.
- ``DomainDetector`` (since 2026-12-02, the default when the calibration rows name at least two domains): a
  query is out of domain when it is far from every known domain's mean in the Mahalanobis sense (one covariance
  shared by the domains, Lee et al., 2018), *or* when the domain classifier's energy (``DomainLevel.energy``)
  says no known domain fits it. The two catch different things: distance catches another language or another
  format (RouterDC's cmmlu, humaneval held out of calibration), the classifier catches a task whose words look
  like the known ones but whose pattern is new (held-out gsm8k among ARC and MMLU). Measured on train rows only
  (docs/results.md, "The domain OOD detector"; ``python -m bench.ood_detector``): leave-one-domain-out on
  RouterDC, mean -2.81 -> -1.77 points against the generalist, in-domain accuracy unchanged.

The detector's line is a cliff; ``DomainDetector.margin`` makes its approach a slope (since the second session of
2026-12-02): between ``margin_from`` and the line a specialist has to beat the generalist's estimated accuracy by
a margin that grows linearly to ``margin_at_line``. Cluster and domain estimates are measured on in-domain queries;
the less a query fits them, the less a small estimated advantage is worth. The ramp reads the energy part by
default (``margin_score``): a query far from the means but plainly of a known domain keeps its estimates. Train
rows only (docs/results.md, "The OOD margin"; ``python -m bench.ood_detector --parts``): RouterDC
leave-one-domain-out -1.77 -> +0.48 points, the worst domain -16.01 -> -2.75, in-domain 0.6376 -> 0.6380.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router.domains import DomainLevel, energy_of

Matrix = npt.NDArray[np.float32]
MARGIN_SCORES = ("max", "energy")  # what DomainDetector.margin_score may name
CHUNK = 1024  # rows per block: bounds the (rows x n_ref) similarity matrix to a few tens of MB


def knn(
    embeddings: Matrix, reference: Matrix, k: int, exclude_self: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """(ood_score per row, indices (n, k) of the nearest references, their similarities (n, k)).

    ``exclude_self`` drops the single nearest neighbour (the point itself when scoring reference rows).
    """
    n = embeddings.shape[0]
    skip = 1 if exclude_self else 0
    k = min(k, reference.shape[0] - skip)
    scores = np.zeros(n)
    indices = np.zeros((n, k), dtype=np.intp)
    sims_out = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, CHUNK):
        block = np.asarray(embeddings[start : start + CHUNK] @ reference.T, dtype=np.float32)
        part = np.argpartition(-block, k + skip - 1, axis=1)[:, : k + skip]
        part_sims = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")[:, skip : k + skip]
        idx = np.take_along_axis(part, order, axis=1)
        sims = np.take_along_axis(part_sims, order, axis=1)
        indices[start : start + CHUNK] = idx
        sims_out[start : start + CHUNK] = sims
        scores[start : start + CHUNK] = 1.0 - sims.mean(axis=1)
    return scores, indices, sims_out


def ood_scores(embeddings: Matrix, reference: Matrix, k: int) -> npt.NDArray[np.float64]:
    return knn(embeddings, reference, k)[0]


@dataclass
class DomainDetector:
    """Mahalanobis distance to the nearest domain mean, or the domain classifier's energy: whichever is further
    past its own threshold. Scores are reported in units of the thresholds: ``(s - center) / (threshold -
    center)`` per part (center: the median held-out score), the larger of the two; 1.0 is the line."""

    means: npt.NDArray[np.float64]  # (D, dim) each calibration domain's mean embedding
    precision: npt.NDArray[np.float64]  # (dim, dim) inverse of the shared within-domain covariance (shrunk)
    mahalanobis_threshold: float
    mahalanobis_center: float
    energy_threshold: float
    energy_center: float
    margin_at_line: float = 0.0  # accuracy a specialist must gain over the generalist at score 1.0 (0: no slope)
    margin_from: float = 0.5  # the score where that margin starts (0: the held-out median)
    # which score the margin reads: "max" (the detector's score, the larger part) or "energy" (that part alone)
    margin_score: str = "max"

    def __post_init__(self) -> None:
        # (x - mu)' P (x - mu) = x'Px - 2 x'(P mu) + mu'P mu: one (dim x dim) product per query, then D dots.
        self._p_means = self.means @ self.precision
        self._mu_p_mu = np.einsum("ij,ij->i", self._p_means, self.means)

    def mahalanobis(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """(n,) squared Mahalanobis distance to the nearest domain mean."""
        x64 = np.asarray(x, dtype=np.float64)
        quad = np.einsum("ij,ij->i", x64 @ self.precision, x64)
        d2 = quad[:, None] - 2 * x64 @ self._p_means.T + self._mu_p_mu[None, :]
        out: npt.NDArray[np.float64] = np.maximum(d2.min(axis=1), 0.0)
        return out

    def score(self, x: npt.NDArray[np.float32], level: DomainLevel) -> npt.NDArray[np.float64]:
        """(n,) the larger of the two parts in threshold units; above 1.0 is out of domain."""
        return self.score_and_margin(x, level)[0]

    def score_and_margin(
        self, x: npt.NDArray[np.float32], level: DomainLevel, logits: npt.NDArray[np.float64] | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(score, margin) per row: the score as ``score``, the margin read from ``margin_score``'s part;
        ``logits``: ``level.logits(x)`` when the caller has them already."""
        m = units(self.mahalanobis(x), self.mahalanobis_center, self.mahalanobis_threshold)
        e = units(energy_of(level.logits(x) if logits is None else logits), self.energy_center, self.energy_threshold)
        score: npt.NDArray[np.float64] = np.maximum(m, e)
        return score, self.margin(e if self.margin_score == "energy" else score)

    def margin_spec(self) -> dict[str, float | str]:
        """ood.json's ``margin`` (docs/artifact.md, format version 4)."""
        return {"at_line": self.margin_at_line, "from": self.margin_from, "score": self.margin_score}

    def margin(self, score: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n,) the estimated accuracy a specialist must gain over the generalist at these scores: 0 up to
        ``margin_from``, rising linearly to ``margin_at_line`` at 1.0 and staying there."""
        ramp = np.clip((score - self.margin_from) / max(1.0 - self.margin_from, 1e-12), 0.0, 1.0)
        out: npt.NDArray[np.float64] = self.margin_at_line * ramp
        return out


def units(score: npt.NDArray[np.float64], center: float, threshold: float) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = (score - center) / max(threshold - center, 1e-12)
    return out


def joint_thresholds(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], quantile: float) -> tuple[float, float]:
    """Thresholds for two scores of the same held-out rows such that ``a > ta or b > tb`` flags ``1 - quantile``
    of them: each at the same quantile of its own scores, that quantile chosen on the rows' larger rank."""
    def rank(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = np.searchsorted(np.sort(v), v, side="right") / len(v)
        return out

    level = float(np.quantile(np.maximum(rank(a), rank(b)), quantile))
    return float(np.quantile(a, level)), float(np.quantile(b, level))
