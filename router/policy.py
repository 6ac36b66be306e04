"""The routing policy: which backend answers a query at a given knob.

For each query: soft cluster weights give every model an expected accuracy (the clusters' shrunk estimates,
blended with the per-domain estimates weighted by the query's domain probabilities, and with the accuracy of
the query's nearest reference neighbours, each when the artifact says so) and an expected cost. Among eligible
models the policy maximises

    utility = knob * accuracy_norm - (1 - knob) * cost_norm

with both divided by their spread over the available models (knob 1: most accurate; knob 0: the cheapest
eligible): the range of the models' overall accuracy and mean cost in the artifact's table, so one knob is one
exchange rate between accuracy and cost for every query, as an aggregate cost/accuracy trade-off needs.

The expected accuracy and cost are composed from the artifact's parts, each read by its own step: the cluster
table (always), the domain level's blend (``router/domains.py``, when the artifact has one), and the kNN blend
with the nearest reference queries' measured correctness (``knn_weight`` > 0). The out-of-domain call is one
``OodScorer`` (router/ood.py): the kNN distance (with its refine tier, if any) or the domain detector (with its
margin).

Eligible = available, and not past its cliff in the query's nearest cluster. A query whose out-of-domain score
exceeds the calibrated threshold goes to the generalist ("ood_fallback"); the score is the distance to the
nearest calibration queries, or, in artifacts with a domain detector (router/ood.py), the detector's score in
units of its thresholds. Below the line, a detector with an OOD margin (``DomainDetector.margin``) lowers every
specialist's expected accuracy by a margin that grows as the score (by default its energy part) nears the line,
so a specialist must beat the generalist by that much to answer ("ood_margin" when that sends the query to the
generalist). Ties go to the more accurate model (expected accuracy as the utility reads it), then to the cheaper,
then to the generalist, then to the artifact's model order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from router.artifact import Artifact
from router.clusters import soft_weights
from router.ood import DomainScorer, KnnScorer, OodScorer, Refiner, knn

__all__ = ["TIE", "Candidate", "Decision", "Estimates", "Policy", "Refiner"]

TIE = 1e-9  # utilities this close are a tie: float noise must not decide it
ACCURACY_TIE = 1e-12  # expected accuracies this close are equal: then the cheaper model


@dataclass(frozen=True)
class Candidate:
    model: str
    expected_accuracy: float
    expected_cost: float
    utility: float
    eligible: bool
    excluded_by: str | None  # None | "cliff" | "ood" | "unavailable"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "expected_accuracy": self.expected_accuracy,
            "expected_cost": self.expected_cost,
            "utility": self.utility,
            "eligible": self.eligible,
            "excluded_by": self.excluded_by,
        }


@dataclass(frozen=True)
class Decision:
    model: str
    cluster: int
    ood_score: float
    is_ood: bool
    knob: float
    reason: str  # "best" | "backend_down" | "ood_fallback" | "ood_margin" | "cliff"
    candidates: tuple[Candidate, ...]
    generalist: str = ""
    ood_refined: bool = False  # the OOD call came from the artifact's refine embedder
    domain: str = ""  # the calibration domain the query looks most like ("" without a domain level)
    ood_margin: float = 0.0  # expected accuracy taken off each specialist near the OOD line

    def fallbacks(self) -> list[str]:
        """Eligible models after ``model`` by utility, then the generalist (always last resort)."""
        chain = [c.model for c in self.candidates if c.eligible and c.model != self.model]
        if self.generalist and self.generalist != self.model and self.generalist not in chain:
            chain.append(self.generalist)
        return chain

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cluster": self.cluster,
            "ood_score": self.ood_score,
            "is_ood": self.is_ood,
            "ood_refined": self.ood_refined,
            "domain": self.domain,
            "ood_margin": self.ood_margin,
            "knob": self.knob,
            "reason": self.reason,
            "candidates": [c.to_dict() for c in self.candidates],
        }


@dataclass
class Estimates:
    """Per-query arrays the decision is made from (also what ``triage eval`` sweeps knobs over)."""

    cluster: npt.NDArray[np.intp]  # (n,) nearest cluster
    ood_score: npt.NDArray[np.float64]  # (n,)
    is_ood: npt.NDArray[np.bool_]  # (n,)
    accuracy: npt.NDArray[np.float64]  # (n, m) expected accuracy
    cost: npt.NDArray[np.float64]  # (n, m) expected cost
    refined: npt.NDArray[np.bool_]  # (n,) OOD call made by the refine embedder (all False without a tier)
    domain: npt.NDArray[np.intp] | None = None  # (n,) likeliest calibration domain (None without a domain level)
    margin: npt.NDArray[np.float64] | None = None  # (n,) accuracy taken off the specialists (None: no OOD margin)


class Policy:
    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.models = artifact.models
        self.generalist_index = artifact.models.index(artifact.generalist)
        # Each model's accuracy and mean cost over all calibration queries (cluster sizes as weights): the scale
        # of the global normalisation.
        size = artifact.counts.max(axis=1, keepdims=True)
        total = max(float(size.sum()), 1e-12)
        self.overall_accuracy = (size * artifact.estimate).sum(axis=0) / total
        self.overall_cost = (size * artifact.mean_cost).sum(axis=0) / total
        self.ood: OodScorer = (
            DomainScorer(artifact.ood_detector, artifact.domains)
            if artifact.ood_detector is not None and artifact.domains is not None
            else KnnScorer(artifact.thresholds, artifact.ood_k, artifact.refine)
        )

    def estimate(self, embeddings: npt.ArrayLike, refine: Refiner | None = None,
                 neighbours: tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]] | None = None) -> Estimates:
        """``neighbours``: these rows' (indices, similarities) among the artifact's reference rows, nearest first,
        at least ``max(ood_k, knn_k)`` columns, when the caller already has them (model selection scores
        hundreds of candidate artifacts on the same rows and reference)."""
        a = self.artifact
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != a.embedder_dim:
            raise ValueError(f"embeddings must have shape (n, {a.embedder_dim}), got {x.shape}")
        cluster, weights = soft_weights(x, a.centroids, a.soft_top, a.temperature)
        accuracy = weights @ a.estimate
        cost = weights @ a.mean_cost
        domain = logits = None
        if a.domains is not None:
            logits = a.domains.logits(x)  # once: the blend and the detector's energy both read them
            accuracy, cost, domain = a.domains.blend(logits, accuracy, cost, weights)
        nearest = sims = None
        if self.ood.needs_neighbours or a.knn_weight > 0:
            k = max(a.ood_k, a.knn_k)
            if neighbours is None or neighbours[0].shape != (len(x), k):
                _, nearest, sims = knn(x, a.reference, k)
            else:
                nearest, sims = neighbours
        call = self.ood.score(x, cluster, logits, sims, refine)
        if a.knn_weight > 0:
            assert nearest is not None
            # The neighbours' measured correctness, shrunk toward the cluster estimate (knn_k pseudo-counts of
            # prior each side): a lone lucky neighbour cannot crown a model.
            neighbour_mean = a.reference_scores[nearest[:, : a.knn_k]].astype(np.float64).mean(axis=1)
            accuracy = (1 - a.knn_weight) * accuracy + a.knn_weight * neighbour_mean
        return Estimates(
            cluster=cluster,
            ood_score=call.score,
            is_ood=call.is_ood,
            accuracy=accuracy,
            cost=cost,
            refined=call.refined,
            domain=domain,
            margin=call.margin,
        )

    def _mask(
        self, est: Estimates, available: Collection[str] | None
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """(available (m,), eligible (n, m))."""
        avail = np.array([available is None or m in available for m in self.models], dtype=bool)
        eligible = avail[None, :] & ~self.artifact.cliff[est.cluster]
        return avail, eligible

    def utilities(
        self, est: Estimates, knobs: npt.NDArray[np.float64], avail: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float64]:
        """(n, m) utility per row and model, with the OOD margin taken off the specialists' accuracy."""
        return self._utility(self._accuracy(est), est.cost, knobs, avail)

    def _accuracy(self, est: Estimates) -> npt.NDArray[np.float64]:
        """(n, m) expected accuracy as the utility reads it: the OOD margin taken off the specialists."""
        if est.margin is None:
            return est.accuracy
        specialist = np.arange(est.accuracy.shape[1]) != self.generalist_index
        out: npt.NDArray[np.float64] = est.accuracy - est.margin[:, None] * specialist[None, :]
        return out

    def _utility(
        self, accuracy: npt.NDArray[np.float64], cost: npt.NDArray[np.float64], knobs: npt.NDArray[np.float64],
        avail: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.float64]:
        if not avail.any():
            return np.zeros_like(accuracy)
        k = knobs[:, None]
        acc_span = float(np.ptp(self.overall_accuracy[avail]))
        cost_span = float(np.ptp(self.overall_cost[avail]))
        # Equal overall accuracy: no scale to compare with cost, so accuracy counts in its own units; equal
        # cost: cost cannot separate the models.
        accuracy = accuracy / (acc_span if acc_span > 1e-9 else 1.0)
        scaled_cost = cost / cost_span if cost_span > 0 else np.zeros_like(cost)
        out: npt.NDArray[np.float64] = k * accuracy - (1 - k) * scaled_cost
        return out

    def _argmax(
        self, utility: npt.NDArray[np.float64], accuracy: npt.NDArray[np.float64], cost: npt.NDArray[np.float64],
        mask: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.intp]:
        """Best masked column per row; ties: more accurate, then cheaper, then the generalist, then model order.
        (With equal prices every utility at knob 0 ties: the most accurate model costs nothing more.)"""
        u = np.where(mask, utility, -np.inf)
        best = u.max(axis=1, keepdims=True)
        tied = mask & (u >= best - TIE)
        a = np.where(tied, accuracy, -np.inf)
        tied &= a >= a.max(axis=1, keepdims=True) - ACCURACY_TIE
        # Among those: lowest cost; among equal cost the generalist; else the first in model order.
        c = np.where(tied, cost, np.inf)
        cheapest = tied & (c <= c.min(axis=1, keepdims=True) + 1e-15)
        g = self.generalist_index
        m = utility.shape[1]
        rank = np.where(cheapest, np.arange(m)[None, :] + m, 3 * m)
        rank[:, g] = np.where(cheapest[:, g], 0, 3 * m)
        choice = np.argmin(rank, axis=1)
        return np.where(mask.any(axis=1), choice, g).astype(np.intp)

    def choose(
        self, est: Estimates, knobs: npt.NDArray[np.float64], available: Collection[str] | None = None
    ) -> tuple[npt.NDArray[np.intp], list[str]]:
        """Vectorised decision: (model index per row, reason per row)."""
        avail, eligible = self._mask(est, available)
        return self._choose(est, avail, eligible, knobs, self.utilities(est, knobs, avail))

    def _choose(
        self,
        est: Estimates,
        avail: npt.NDArray[np.bool_],
        eligible: npt.NDArray[np.bool_],
        knobs: npt.NDArray[np.float64],
        utility: npt.NDArray[np.float64],
    ) -> tuple[npt.NDArray[np.intp], list[str]]:
        g = self.generalist_index
        accuracy = self._accuracy(est)
        chosen = self._argmax(utility, accuracy, est.cost, eligible)
        unconstrained = self._argmax(utility, accuracy, est.cost, np.broadcast_to(avail, eligible.shape))
        # The margin's doing: the generalist now, another model without the margin.
        margined = np.zeros(len(chosen), dtype=bool)
        if est.margin is not None:
            rows = np.flatnonzero((chosen == g) & (est.margin > 0))
            if len(rows):  # those rows' choice without the margin
                plain = self._utility(est.accuracy[rows], est.cost[rows], knobs[rows], avail)
                margined[rows] = self._argmax(plain, est.accuracy[rows], est.cost[rows], eligible[rows]) != g
        chosen = np.where(est.is_ood, g, chosen)
        reasons = [
            "ood_fallback" if o else ("ood_margin" if mg else ("cliff" if self.artifact.cliff[c, u] else "best"))
            for o, mg, c, u in zip(est.is_ood, margined, est.cluster, unconstrained, strict=True)
        ]
        if not avail.all():  # a model that is down now, and not past its cliff here, would have beaten the choice
            rows = np.arange(len(chosen))
            better = utility > utility[rows, chosen][:, None] + TIE
            down: npt.NDArray[np.bool_] = np.any(better & ~avail[None, :] & ~self.artifact.cliff[est.cluster], axis=1)
            reasons = ["backend_down" if r == "best" and d else r for r, d in zip(reasons, down, strict=True)]
        return chosen.astype(np.intp), reasons

    def decide(
        self,
        embeddings: npt.ArrayLike,
        knobs: float | Sequence[float] | npt.ArrayLike,
        available: Collection[str] | None = None,
        refine: Refiner | None = None,
    ) -> list[Decision]:
        """One decision per row. ``refine(rows) -> vectors`` embeds those rows with the artifact's refine
        encoder (only asked for when the artifact has a refine tier and a row's OOD call is close)."""
        est = self.estimate(embeddings, refine)
        n = est.accuracy.shape[0]
        knob_arr = np.broadcast_to(np.asarray(knobs, dtype=np.float64), (n,)).copy()
        if np.any(~np.isfinite(knob_arr)) or knob_arr.min(initial=0) < 0 or knob_arr.max(initial=1) > 1:
            raise ValueError("knobs must lie in [0, 1]")
        # Mask and utilities once: the per-candidate detail below reuses what the choice was made from.
        avail, eligible = self._mask(est, available)
        utility = self.utilities(est, knob_arr, avail)
        chosen, reasons = self._choose(est, avail, eligible, knob_arr, utility)
        domain_names = self.artifact.domains.names if self.artifact.domains is not None else []
        decisions = []
        for i in range(n):
            candidates = []
            for j, model in enumerate(self.models):
                if not avail[j]:
                    excluded: str | None = "unavailable"
                elif not eligible[i, j]:
                    excluded = "cliff"
                elif est.is_ood[i] and j != self.generalist_index:
                    excluded = "ood"
                else:
                    excluded = None
                candidates.append(
                    Candidate(
                        model,
                        float(est.accuracy[i, j]),
                        float(est.cost[i, j]),
                        float(utility[i, j]),
                        excluded is None,
                        excluded,
                    )
                )
            first = self.models[int(chosen[i])]
            candidates.sort(
                key=lambda c: (
                    c.model != first,
                    -c.utility,
                    -c.expected_accuracy,
                    c.expected_cost,
                    c.model != self.artifact.generalist,
                )
            )
            decisions.append(
                Decision(
                    model=first,
                    cluster=int(est.cluster[i]),
                    ood_score=float(est.ood_score[i]),
                    is_ood=bool(est.is_ood[i]),
                    knob=float(knob_arr[i]),
                    reason=reasons[i],
                    candidates=tuple(candidates),
                    generalist=self.artifact.generalist,
                    ood_refined=bool(est.refined[i]),
                    domain=domain_names[int(est.domain[i])] if est.domain is not None else "",
                    ood_margin=float(est.margin[i]) if est.margin is not None else 0.0,
                )
            )
        return decisions
