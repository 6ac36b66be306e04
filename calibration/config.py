"""The settings of a fit (``calibration/fit.py``), with the reasons for their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FitConfig:
    k_candidates: tuple[int, ...] = (4, 8, 12, 16, 24, 32, 48, 64)
    prior_strength: float = 10.0  # pseudo-queries of the model's global accuracy in every cluster
    cliff_confidence: float = 0.9  # P(specialist < generalist - margin) needed to mark a cliff
    # Cliff margin (absolute accuracy): a model is past its cliff only where it is *more than* this much below
    # the generalist with ``cliff_confidence``. A cheap model uniformly a little weaker than the generalist is
    # not a specialist out of its domain. Chosen on the validation slice among these (ties: the smaller);
    # ``cliff_margin`` set fixes it instead. 0.0 is the original rule.
    cliff_margins: tuple[float, ...] = (0.0, 0.05, 0.10, 0.15)
    cliff_margin: float | None = None
    ood_k: int = 10
    # Held-out in-domain queries above this quantile are flagged: 5 % false alarms by construction.
    ood_quantile: float = 0.95
    # One threshold per cluster (the quantile of the held-out rows nearest to it) instead of one global one:
    # a dense domain's neighbourhood is tight, so a query that is far *for that cluster* is flagged even when
    # it would pass the global threshold inflated by sparse domains.
    ood_per_cluster: bool = False  # measured on train-only leave-one-domain-out: no better (docs/results.md)
    # "knn": the distance to the nearest train queries flags a query. "domains": the domain detector
    # (router/ood.py ``DomainDetector``: Mahalanobis distance to the domain means, or the domain classifier's
    # energy), which needs rows from at least two domains. "auto": "domains" when the rows name two or more and
    # neither a refine tier nor per-cluster thresholds are asked for (those refine the kNN score), else "knn".
    ood_method: str = "auto"
    # The domain detector's OOD margin (router/ood.py ``DomainDetector.margin``): from score ``ood_margin_from``
    # (0 = the held-out median, 1 = the line) a specialist must beat the generalist's estimated accuracy by a
    # margin rising linearly to ``ood_margin`` at the line. Fixed, not chosen per dataset: an in-domain
    # validation slice cannot see what it protects against. Chosen on train rows only (docs/results.md, "The
    # OOD margin"): of the settings at which RouterDC's train-only
    # leave-one-domain-out was even with the generalist on average and within 3 points on every domain, the
    # one with the best in-domain objective.
    ood_margin: float = 0.1
    ood_margin_from: float = 0.5
    # The score the margin reads: "energy" (that part alone) or "max" (the detector's score, the larger part). The
    # energy says how well the query fits a *known* domain; a far but recognisable query (the spread-out MMLU) keeps
    # its domain's estimates. Chosen by the same rule on train rows (docs/results.md, "The OOD margin").
    ood_margin_score: str = "energy"
    min_cluster_validation: int = 20  # fewer held-out rows near a cluster: it uses the global threshold
    soft_options: tuple[tuple[int, float], ...] = ((1, 1.0), (3, 0.02), (3, 0.05))
    knn_weights: tuple[float, ...] = (0.0, 0.3, 0.6)
    # Share of the domain level's estimate (router/domains.py) in the blend with the cluster estimate; used
    # only when the train rows name at least two domains. 0 keeps the clusters alone.
    domain_weights: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0)
    domain_weight: float | None = None  # set: this weight, not chosen (``triage calibrate --domain-weight``)
    # The domain level per domain *and cluster* (router/domains.py ``cell_estimate``): each (domain, cluster) cell
    # is the Beta posterior of that domain's rows in that cluster with this many pseudo-queries of the domain's own
    # row as its prior. 0: the per-domain rows alone.
    domain_cell_strength: float = 40.0
    knn_k: int = 20
    validation_fraction: float = 0.2
    # Model selection on one held-out slice (``validation_fraction`` of the train rows, by hash) or, with
    # ``selection_folds`` > 1, on every train row once: that many folds by hash, each scored by a fit on the
    # others, the folds' knob sweeps pooled. One 20 % slice of RouterDC moves the objective by about a point
    # either way (docs/results.md); five folds see five times the rows, for five fits per candidate k. Not the
    # default: on train rows the gain was mixed (docs/results.md), and five
    # folds pick domain weight 1 more often, which leaves a domain nobody calibrated on entirely to the table of
    # whichever known domain the classifier names (RouterDC leave-one-domain-out, gsm8k: -23.75 vs -15.83).
    selection_folds: int = 1
    max_reference: int = 10_000
    seed: int = 0
    # With a refine tier (a fast embedder for the table, a better one for close OOD calls): held-out queries
    # whose fast score is at or above this quantile of their cluster's held-out scores are re-scored by the
    # refine embedder. 0.4: the largest quantile whose OOD AUROC stayed within 0.01 of MiniLM alone on every
    # RouterDC domain with >= 300 rows, in a leave-one-domain-out on train rows only (docs/results.md).
    refine_quantile: float = 0.4
