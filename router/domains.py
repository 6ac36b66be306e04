"""The domain level of the policy: which calibration domain a query looks like, and what each model scored there.

k-means clusters group queries by topic, and a topic can span domains whose best models differ (MMLU's science
questions sit between ARC's). Calibration data carries each query's domain, so calibration also fits a
multinomial logistic regression from the embedding to the domain, and measures every model's (shrunk) accuracy
and mean cost per domain. For a query, the domain probabilities weight that table into a second estimate, which
the policy blends with the cluster estimate (``weight``, chosen on the validation slice like every other
setting). The classifier knows only the domains it was shown: queries from anywhere else are the out-of-domain
detector's job, not this level's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass
class DomainLevel:
    names: list[str]  # (D,) calibration domains
    coef: npt.NDArray[np.float32]  # (D, dim) multinomial logistic regression weights
    intercept: Floats  # (D,)
    estimate: Floats  # (D, m) shrunk accuracy per domain and model
    mean_cost: Floats  # (D, m) USD per query
    weight: float  # share of the domain estimate in the blend with the cluster estimate
    # Format 5: per domain *and cluster* (D, k, m), each cell shrunk toward its domain's row (``cell_strength``
    # pseudo-queries of it), so that a cluster that mixes domains (MMLU's science questions among ARC's) is read
    # with the rows of the query's own domain. None: the per-domain rows alone (formats 2-4).
    cell_estimate: Floats | None = None
    cell_cost: Floats | None = None
    cell_strength: float = 0.0

    def logits(self, x: npt.NDArray[np.float32]) -> Floats:
        """(n, D) the classifier's linear score of each domain for each query."""
        z: Floats = (x @ self.coef.T).astype(np.float64) + self.intercept[None, :]
        return z

    def proba(self, x: npt.NDArray[np.float32]) -> Floats:
        """(n, D) probability of each domain for each query (a softmax over the linear scores)."""
        return softmax(self.logits(x))

    def energy(self, x: npt.NDArray[np.float32]) -> Floats:
        """(n,) ``-logsumexp(logits)``: high where no known domain's score is high (Liu et al., 2020, "Energy-based
        out-of-distribution detection"). Unlike the softmax's largest probability it keeps the scale of the
        scores, so a query that is weakly like every domain is not mistaken for one that is strongly like one."""
        return energy_of(self.logits(x))

    def blend(self, logits: Floats, accuracy: Floats, cost: Floats,
              cluster_weights: Floats) -> tuple[Floats, Floats, npt.NDArray[np.intp]]:
        """(accuracy, cost) blended ``(1 - weight) : weight`` with the domain estimate, and the likeliest domain,
        from the queries' ``logits`` (the policy computes them once: the OOD detector's energy reads them too).
        ``cluster_weights`` (n, k), the queries' cluster assignment, reads the per-(domain, cluster) cells where the
        level has them."""
        p = softmax(logits)
        w = self.weight
        if w == 0:  # kept for the out-of-domain detector only: the clusters' estimate alone
            return accuracy, cost, p.argmax(1)
        acc, cst = self.estimates(p, cluster_weights)
        return (1 - w) * accuracy + w * acc, (1 - w) * cost + w * cst, p.argmax(1)

    def estimates(self, p: Floats, cluster_weights: Floats) -> tuple[Floats, Floats]:
        """(n, m) accuracy and cost of the domain level for queries with domain probabilities ``p``:
        ``sum_d p_d * row_d``, or with cells ``sum_d p_d * sum_c w_c * cell_dc``."""
        if self.cell_estimate is None or self.cell_cost is None:
            return p @ self.estimate, p @ self.mean_cost
        w = cluster_weights
        return _through_cells(p, w, self.cell_estimate), _through_cells(p, w, self.cell_cost)


def _through_cells(p: Floats, cluster_weights: Floats, cells: Floats) -> Floats:
    """(n, m) ``sum_d p[n, d] * sum_c w[n, c] * cells[d, c, m]`` in two products (no loop over D: RouteLLM's 58
    domains would cost 0.3 ms a query)."""
    d, k, m = cells.shape
    per_cluster = (p @ cells.reshape(d, k * m)).reshape(len(p), k, m)  # (n, k, m): the domain mix of each cluster
    out: Floats = np.einsum("nk,nkm->nm", cluster_weights, per_cluster)
    return out


def softmax(logits: Floats) -> Floats:
    """(n, D) per-row softmax of ``logits``."""
    z = logits - logits.max(axis=1, keepdims=True)
    e: Floats = np.exp(z)
    p: Floats = e / e.sum(axis=1, keepdims=True)
    return p


def energy_of(logits: Floats) -> Floats:
    """(n,) ``-logsumexp`` per row of ``logits``."""
    top = logits.max(axis=1)
    out: Floats = -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))
    return out


def from_classifier(
    names: list[str], coef: npt.ArrayLike, intercept: npt.ArrayLike, estimate: Floats, mean_cost: Floats,
    weight: float,
) -> DomainLevel:
    """From scikit-learn's ``LogisticRegression`` attributes; a two-class model has one row of weights (the
    second class's log-odds), which becomes the softmax pair (0, z)."""
    c = np.asarray(coef, dtype=np.float32)
    b = np.asarray(intercept, dtype=np.float64)
    if len(names) == 2 and c.shape[0] == 1:
        c = np.vstack([np.zeros_like(c), c])
        b = np.concatenate([[0.0], b])
    return DomainLevel(list(names), c, b, estimate, mean_cost, float(weight))
