"""What ``triage eval`` measures, as values: ``EvalResult`` and its parts.

``EvalResult.to_json`` is report.json's body (fields in declaration order; a section that was not measured is
left out); the per-row arrays the figures read stay out of it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Point:
    """A router's accuracy and mean cost (USD per query) over the evaluated rows."""

    accuracy: float
    cost: float


@dataclass(frozen=True)
class KnobPoint:
    """Triage at one knob: accuracy, mean cost, why queries went where they went, and each model's share."""

    knob: float
    accuracy: float
    cost: float
    ood_fallback_rate: float
    ood_margin_rate: float
    cliff_rate: float
    share: dict[str, float]


@dataclass(frozen=True)
class AlphaPoint:
    """The Avengers-Pro-style baseline at one alpha."""

    alpha: float
    accuracy: float
    cost: float


@dataclass(frozen=True)
class KnobChoice:
    knob: float
    accuracy: float
    cost: float


@dataclass(frozen=True)
class AiqComparison:
    """AIQ of Triage and of the baseline over the single models' cost range, with the 95 % paired bootstrap
    interval of their difference."""

    triage: float
    avengers: float
    cost_range: list[float]
    difference_interval_95: tuple[float, float]


@dataclass(frozen=True)
class DomainRow:
    """Triage at knob 1 on one domain's rows, beside the domain's best model on the fitted rows."""

    domain: str
    n: int
    triage_knob1: float
    ood_flagged_rate: float
    ood_margin_rate: float  # sent to the generalist by the OOD margin, knob 1
    train_best: str
    train_best_accuracy: float
    test_best_accuracy: float


@dataclass(frozen=True)
class OodSummary:
    """Rows of domains held out of fitting: how well the OOD score separates them and what routing did."""

    n: int
    auroc: float
    flagged_rate: float
    in_domain_flagged_rate: float
    ood_margin_rate: float  # at knob 1
    in_domain_ood_margin_rate: float
    routed_accuracy_knob1: float
    generalist_accuracy: float
    best_single_accuracy: float


OPTIONAL = ("aiq", "domain_router", "per_domain", "refined_rate", "ood")  # left out of report.json when None
PER_ROW = ("in_domain_ood_scores", "clusters", "ood_scores")  # for the figures, not for report.json


@dataclass(frozen=True)
class EvalResult:
    n: int
    has_cost: bool
    triage: list[KnobPoint]
    avengers: list[AlphaPoint]
    single: dict[str, Point]
    oracle: Point
    random: Point
    best_single: str
    best: KnobChoice
    cheapest_knob_matching_best_single: KnobChoice | None
    knob1_minus_best_single: float
    knob1_minus_best_single_se: float  # paired over the same rows
    triage_frontier: list[tuple[float, float]]
    aiq: AiqComparison | None  # None: every model costs the same
    domain_router: Point | None  # None: no domain labels given
    per_domain: list[DomainRow] | None
    refined_rate: float | None  # in-domain rows the refine embedder re-scored; None: no refine tier
    ood: OodSummary | None  # None: no held-out rows
    in_domain_ood_scores: Floats
    clusters: npt.NDArray[np.intp]
    ood_scores: Floats | None

    @property
    def knob1(self) -> KnobPoint:
        return self.triage[-1]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in PER_ROW or (f.name in OPTIONAL and value is None):
                continue
            out[f.name] = plain(value)
        return out

    def summary(self) -> str:
        """The line ``triage eval`` prints."""
        best = self.single[self.best_single]
        line = f"knob1 {self.knob1.accuracy:.4f} vs best single {self.best_single} {best.accuracy:.4f}"
        if self.aiq is not None:
            line += f"; AIQ triage {self.aiq.triage:.4f} vs avengers {self.aiq.avengers:.4f}"
        if self.ood is not None:
            line += f"; OOD AUROC {self.ood.auroc:.4f}"
        return line


def plain(value: Any) -> Any:
    """Dataclasses, dicts, lists and tuples as JSON-ready dicts and lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
