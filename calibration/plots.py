"""PNG figures for the calibration and evaluation reports (matplotlib, Agg backend, no display).

Legends sit outside the data (right of the axes, or under a heat map), every marker a reader must find is drawn
so that others do not hide it, and a cell or bin without rows is drawn empty, never as 0 %.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.eval_result import EvalResult, KnobPoint

SINGLE_MARKERS = ("^", "v", "D", "<", ">", "P", "X", "h", "p", "8")
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}


@dataclass(frozen=True)
class OodAxis:
    """What an artifact's out-of-domain scores measure: the cliff plot's x-axis and its threshold line."""

    label: str
    threshold: float
    threshold_label: str = "OOD threshold"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short(model: str) -> str:
    """A model's name without its organisation (``meta-math/MetaMath-Mistral-7B`` -> ``MetaMath-Mistral-7B``)."""
    return model.split("/")[-1]


def _save(fig: Any, path: Path) -> None:
    # bbox "tight" grows the canvas to whatever sits outside the axes (legends, long tick labels).
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)


def empty_cells(
    values: npt.NDArray[np.float64], counts: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.bool_]:
    """(k, m) True where a heat map has nothing to show: no value, or a cluster with no rows."""
    empty = ~np.isfinite(values)
    if counts is not None:
        empty |= (np.asarray(counts) == 0)[:, None]
    return empty


def heatmap(
    path: Path,
    values: npt.NDArray[np.float64],
    models: list[str],
    title: str,
    cliff: npt.NDArray[np.bool_] | None = None,
    counts: npt.NDArray[np.float64] | None = None,
) -> None:
    """Accuracy per cluster (rows) and model (columns); a red outline marks a cliff, hatching a cluster without
    rows (NaN values or ``counts`` 0)."""
    plt = _plt()
    from matplotlib.patches import Patch, Rectangle

    k = values.shape[0]
    empty = empty_cells(values, counts)
    fig, ax = plt.subplots(figsize=(1.2 * len(models) + 3, 0.32 * k + 2.9))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_where(empty, values), aspect="auto", cmap=cmap, vmin=0, vmax=1)
    ax.set_xticks(range(len(models)), [short(m) for m in models], rotation=35, ha="right", fontsize=8)
    labels = [f"{c} (n={int(counts[c])})" if counts is not None else str(c) for c in range(k)]
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_ylabel("cluster")
    for c, j in zip(*np.nonzero(empty), strict=True):
        ax.add_patch(Rectangle((j - 0.5, c - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.75", lw=0))
    if values.size <= 600:  # numbers in the cells while they still fit
        for (c, j), v in np.ndenumerate(values):
            if not empty[c, j]:
                ax.text(j, c, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.5 else "black")
    handles = []
    if cliff is not None and cliff.any():
        # An outline inside the cell, so the accuracy printed in it stays readable.
        for c, j in zip(*np.nonzero(cliff), strict=True):
            ax.add_patch(Rectangle((j - 0.44, c - 0.42), 0.88, 0.84, fill=False, edgecolor="red", lw=1.4))
        handles.append(Patch(facecolor="none", edgecolor="red", lw=1.4, label="cliff: the model is ineligible"))
    if empty.any():
        handles.append(Patch(facecolor="white", edgecolor="0.75", hatch="///", label="no rows in the cluster"))
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title, fontsize=10, loc="left", pad=16 if handles else 6)
    if handles:  # above the cells, right-aligned, on the title's line: it covers nothing
        ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(handles), fontsize=7,
                  frameon=False, borderaxespad=0.2)
    fig.tight_layout()
    _save(fig, path)


def accuracy_bars(path: Path, result: EvalResult, title: str) -> None:
    """Equal prices: there is no cost axis, so compare accuracies as bars from 0."""
    plt = _plt()
    best_av = max(result.avengers, key=lambda p: p.accuracy)
    bars = [
        ("oracle", result.oracle.accuracy, "gold"),
        ("Triage knob 1", result.triage[-1].accuracy, "C0"),
        (f"Avengers-Pro-style (alpha {best_av.alpha:g})", best_av.accuracy, "C1"),
    ]
    bars += [
        (short(m), v.accuracy, "0.6")
        for m, v in sorted(result.single.items(), key=lambda kv: -kv[1].accuracy)
    ]
    bars.append(("random", result.random.accuracy, "0.3"))
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(bars) + 1.5))
    names, values, colours = zip(*bars, strict=True)
    ax.barh(range(len(bars)), values, color=colours)
    for i, v in enumerate(values):
        ax.text(v + 0.005, i, f"{100 * v:.2f} %", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, min(1.0, max(values) + 0.12))  # bars start at 0: their lengths compare
    ax.set_xlabel("accuracy (all models priced equal: no cost axis)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def knob_labels(points: list[KnobPoint], min_gap: float = 0.04) -> list[tuple[str, float, float]]:
    """(label, cost, accuracy) for the knob sweep's operating points: knobs that land on one point share a label
    ("0.3-0.5"), and a point closer than ``min_gap`` (a fraction of the sweep's extent on each axis) to the last
    labelled one is left unlabelled, so labels do not print over each other; the last point is always labelled."""
    groups: list[tuple[list[float], float, float]] = []
    for p in points:
        if groups and np.isclose(groups[-1][1], p.cost) and np.isclose(groups[-1][2], p.accuracy):
            groups[-1][0].append(p.knob)
        else:
            groups.append(([p.knob], p.cost, p.accuracy))
    span = [max(np.ptp([g[i] for g in groups]), 1e-12) for i in (1, 2)]

    def far(a: tuple[list[float], float, float], b: tuple[list[float], float, float]) -> bool:
        return bool(max(abs(a[1] - b[1]) / span[0], abs(a[2] - b[2]) / span[1]) >= min_gap)

    kept: list[tuple[list[float], float, float]] = []
    for i, g in enumerate(groups):
        if not kept or far(g, kept[-1]):
            kept.append(g)
        elif i == len(groups) - 1:
            kept[-1] = g  # the dearest point keeps its label; the one it crowds gives way
    return [(f"{k[0]:g}" if len(k) == 1 else f"{k[0]:g}-{k[-1]:g}", c, a) for k, c, a in kept]


def frontier_plot(path: Path, result: EvalResult, title: str) -> None:
    if not result.has_cost:
        accuracy_bars(path, result, title)
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    tri = result.triage
    ax.plot([p.cost for p in tri], [p.accuracy for p in tri], "o-", color="C0", ms=4, zorder=4,
            label="Triage (labels: knob, 0..1)")
    for i, (label, cost, accuracy) in enumerate(knob_labels(tri)):
        ax.annotate(label, (cost, accuracy), fontsize=6, color="C0", textcoords="offset points",
                    xytext=(5, -11) if i % 2 else (5, 5))
    av = result.avengers
    ax.plot([p.cost for p in av], [p.accuracy for p in av], "s--", color="C1", ms=3, alpha=0.8, zorder=3,
            label="Avengers-Pro-style clusters (alpha 0..1)")
    for i, (m, v) in enumerate(result.single.items()):
        # Hollow markers of distinct shapes: two models at nearly one point both stay visible.
        ax.scatter(v.cost, v.accuracy, marker=SINGLE_MARKERS[i % len(SINGLE_MARKERS)], s=55, zorder=5,
                   facecolors="none", edgecolors=f"C{(i + 2) % 10}", linewidths=1.4, label=short(m))
    ax.scatter(result.oracle.cost, result.oracle.accuracy, marker="*", s=140, color="gold",
               edgecolor="k", zorder=6, label="oracle")
    ax.scatter(result.random.cost, result.random.accuracy, marker="x", s=60, color="k", zorder=6,
               label="random")
    ax.set_xlabel("mean cost per query (USD)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, **LEGEND_OUTSIDE)
    fig.tight_layout()
    _save(fig, path)


def cliff_title(held_out: list[str]) -> str:
    rows = "in-domain test rows" + (f" + held-out domains ({', '.join(held_out)})" if held_out else "")
    return f"Accuracy vs out-of-domain score: {rows}"


def cliff_plot(
    path: Path,
    ood_scores: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    models: list[str],
    generalist: str,
    axis: OodAxis,
    held_out: list[str],
    bins: int = 8,
) -> None:
    """Each model's accuracy against the OOD score (quantile bins): where a specialist falls off its cliff.
    ``held_out``: the domains left out of fitting among the rows (none: in-domain test rows alone)."""
    plt = _plt()
    edges = np.unique(np.quantile(ood_scores, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, ood_scores, side="right") - 1, 0, len(edges) - 2)
    centres = [
        (ood_scores[which == b].mean() if (which == b).any() else np.nan) for b in range(len(edges) - 1)
    ]
    fig, ax = plt.subplots(figsize=(8, 5))
    for j, m in enumerate(models):
        acc = [scores[which == b, j].mean() if (which == b).any() else np.nan for b in range(len(edges) - 1)]
        style = dict(lw=3, color="k") if m == generalist else dict(lw=1.3)
        ax.plot(centres, acc, "o-", label=short(m) + (" (generalist)" if m == generalist else ""), **style)
    ax.axvline(axis.threshold, color="red", ls=":", label=axis.threshold_label)
    ax.set_xlabel("\n".join(textwrap.fill(line, 95) for line in axis.label.split("\n")), fontsize=8)
    ax.set_ylabel("accuracy (queries binned by OOD score)")
    ax.set_title(cliff_title(held_out), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, **LEGEND_OUTSIDE)
    fig.tight_layout()
    _save(fig, path)


def selection_plot(path: Path, selection: list[dict[str, Any]], metric: str, chosen_k: int) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    ks = sorted({s["k"] for s in selection})
    best = [max(s["validation_quality"] for s in selection if s["k"] == k) for k in ks]
    hard = [
        max(
            (
                s["validation_quality"]
                for s in selection
                if s["k"] == k and s["soft_top"] == 1 and s["knn_weight"] == 0
            ),
            default=np.nan,
        )
        for k in ks
    ]
    ax.plot(ks, best, "o-", label="best soft/kNN setting")
    ax.plot(ks, hard, "s--", label="hard clusters, no kNN")
    ax.axvline(chosen_k, color="red", ls=":", lw=1.2, label=f"chosen: k = {chosen_k}")
    if chosen_k in ks:
        ax.scatter([chosen_k], [best[ks.index(chosen_k)]], marker="*", s=160, color="red", zorder=5)
    ax.set_xticks(ks)
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Model selection on the validation slice of the train split", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, **LEGEND_OUTSIDE)
    fig.tight_layout()
    _save(fig, path)
