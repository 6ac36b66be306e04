"""Out-of-domain scores: is a query like anything the fleet was measured on?

A query far from everything calibration saw has no accuracy evidence behind any specialist, so the policy sends
it to the generalist. Two detectors, each with thresholds calibrated on held-out in-domain queries (a quantile
of their scores), never on the reference points themselves, whose distance to their own neighbourhood is
optimistically small:

- ``knn``: mean cosine distance to the k nearest reference (calibration) embeddings. It needs nothing but the
  reference rows.
- ``DomainDetector`` (the default when the calibration rows name at least two domains): a
  query is out of domain when it is far from every known domain's mean in the Mahalanobis sense (one covariance
  shared by the domains, Lee et al., 2018), *or* when the domain classifier's energy (``DomainLevel.energy``)
  says no known domain fits it. The two catch different things: distance catches another language or another
  format (RouterDC's cmmlu, humaneval held out of calibration), the classifier catches a task whose words look
  like the known ones but whose pattern is new (held-out gsm8k among ARC and MMLU). Measured: docs/results.md,
  "The domain OOD detector".

The detector's line is a cliff; ``DomainDetector.margin`` makes its approach a slope: between ``margin_from`` and the
line a specialist has to beat the generalist's estimated accuracy by a margin that grows linearly to
``margin_at_line``. Cluster and domain estimates are measured on in-domain queries; the less a query fits them, the
less a small estimated advantage is worth. The ramp reads the energy part by default (``margin_score``): a query
far from the means but plainly of a known domain keeps its estimates. Measured on train rows only:
docs/results.md, "The OOD margin".

The policy calls one ``OodScorer``: ``KnnScorer`` (the kNN distance, with an artifact's refine tier) or
``DomainScorer`` (the domain detector, with its margin).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from router.domains import DomainLevel, energy_of

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Refiner = Callable[[npt.NDArray[np.intp]], Matrix]  # rows -> their vectors from a refine tier's embedder
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


@dataclass(frozen=True, eq=False)
class RefineTier:
    """Out-of-domain calls near the threshold, re-made with a better (slower) embedder."""

    embedder_name: str
    embedder_dim: int
    reference: Matrix  # (n_ref, refine dim): the artifact's reference queries in the refine embedder's space
    ood_k: int
    threshold: float
    cluster_thresholds: Floats  # (k,)
    refine_above: Floats  # (k,) fast OOD score from which a query is refined



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


@dataclass(frozen=True)
class OodCall:
    """The out-of-domain call on a batch of rows, as the policy reads it."""

    score: Floats  # (n,) in the scorer's units (its ``is_ood`` line)
    is_ood: Bools  # (n,)
    refined: Bools  # (n,) made by a refine tier's embedder
    margin: Floats | None  # (n,) accuracy taken off the specialists near the line (None: no margin)


class OodScorer(Protocol):
    """One way of calling queries out of domain; ``sims`` are the rows' similarities to their nearest reference
    rows (nearest first), computed only where ``needs_neighbours``; ``logits`` the domain level's, if any."""

    needs_neighbours: bool

    def score(self, x: Matrix, cluster: npt.NDArray[np.intp], logits: Floats | None, sims: Matrix | None,
              refine: Refiner | None) -> OodCall: ...


class KnnScorer:
    """The mean cosine distance to the ``k`` nearest reference rows against the nearest cluster's line. With a
    refine tier, rows whose fast score reaches ``refine_above`` are scored again by the refine embedder, and every
    score is reported in units of its own threshold (1.0 is the line), so one scale ranks them."""

    needs_neighbours = True

    def __init__(self, thresholds: Floats, k: int, tier: RefineTier | None) -> None:
        self.thresholds, self.k, self.tier = thresholds, k, tier

    def score(self, x: Matrix, cluster: npt.NDArray[np.intp], logits: Floats | None, sims: Matrix | None,
              refine: Refiner | None) -> OodCall:
        assert sims is not None
        score: Floats = 1.0 - sims[:, : self.k].astype(np.float64).mean(axis=1)
        thresholds = self.thresholds[cluster]
        tier = self.tier
        if tier is None:
            return OodCall(score, score > thresholds, np.zeros(len(score), dtype=bool), None)
        if refine is None:
            raise ValueError(f"this artifact has a refine tier: vectors from {tier.embedder_name!r} are needed")
        refined = score >= tier.refine_above[cluster]
        score = score / np.maximum(thresholds, 1e-9)
        rows = np.flatnonzero(refined)
        if len(rows):
            x2 = np.asarray(refine(rows), dtype=np.float32)
            if x2.shape != (len(rows), tier.embedder_dim):
                raise ValueError(f"refine vectors must have shape ({len(rows)}, {tier.embedder_dim}), got {x2.shape}")
            fine = knn(x2, tier.reference, tier.ood_k)[0]
            score[rows] = fine / np.maximum(tier.cluster_thresholds[cluster[rows]], 1e-9)
        return OodCall(score, score > 1.0, refined, None)


class DomainScorer:
    """The domain detector over the domain level's classifier: threshold units, 1.0 the line; its margin where it
    has one (``margin_at_line`` > 0)."""

    needs_neighbours = False

    def __init__(self, detector: DomainDetector, level: DomainLevel) -> None:
        self.detector, self.level = detector, level

    def score(self, x: Matrix, cluster: npt.NDArray[np.intp], logits: Floats | None, sims: Matrix | None,
              refine: Refiner | None) -> OodCall:
        score, ramp = self.detector.score_and_margin(x, self.level, logits)
        margin = ramp if self.detector.margin_at_line > 0 else None
        return OodCall(score, score > 1.0, np.zeros(len(score), dtype=bool), margin)
