"""PNG figures for the calibration and evaluation reports (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short(model: str) -> str:
    return model.split("/")[-1][:28]


def heatmap(
    path: Path,
    values: npt.NDArray[np.float64],
    models: list[str],
    title: str,
    cliff: npt.NDArray[np.bool_] | None = None,
    counts: npt.NDArray[np.float64] | None = None,
) -> None:
    """Accuracy per cluster (rows) and model (columns); 'x' marks a cliff."""
    plt = _plt()
    k = values.shape[0]
    fig, ax = plt.subplots(figsize=(1.2 * len(models) + 3, 0.32 * k + 2.5))
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(models)), [short(m) for m in models], rotation=35, ha="right", fontsize=8)
    labels = [f"{c} (n={int(counts[c])})" if counts is not None else str(c) for c in range(k)]
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_ylabel("cluster")
    if values.size <= 600:  # numbers in the cells while they still fit
        for (c, j), v in np.ndenumerate(values):
            ax.text(
                j,
                c,
                f"{100 * v:.0f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if v < 0.5 else "black",
            )
    if cliff is not None:
        ys, xs = np.nonzero(cliff)
        # In the cell's corner, so the accuracy printed in the cell stays readable.
        ax.scatter(xs + 0.33, ys - 0.25, marker="x", color="red", s=22, label="cliff (ineligible)")
        if len(xs):
            ax.legend(loc="upper right", fontsize=7, bbox_to_anchor=(1.0, 1.12))
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_bars(path: Path, result: dict[str, Any], title: str) -> None:
    """Equal prices: there is no cost axis, so compare accuracies as bars."""
    plt = _plt()
    best_av = max(result["avengers"], key=lambda p: p["accuracy"])
    bars = [
        ("oracle", result["oracle"]["accuracy"], "gold"),
        ("Triage knob 1", result["triage"][-1]["accuracy"], "C0"),
        (f"Avengers-Pro-style (alpha {best_av['alpha']:g})", best_av["accuracy"], "C1"),
    ]
    bars += [
        (short(m), v["accuracy"], "0.6")
        for m, v in sorted(result["single"].items(), key=lambda kv: -kv[1]["accuracy"])
    ]
    bars.append(("random", result["random"]["accuracy"], "0.3"))
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(bars) + 1.5))
    names, values, colours = zip(*bars, strict=True)
    ax.barh(range(len(bars)), values, color=colours)
    for i, v in enumerate(values):
        ax.text(v + 0.003, i, f"{100 * v:.2f} %", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), names, fontsize=8)
    ax.invert_yaxis()
    lo = min(values)
    ax.set_xlim(max(0.0, lo - 0.1), min(1.0, max(values) + 0.08))
    ax.set_xlabel("accuracy (all models priced equal: no cost axis)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontier_plot(path: Path, result: dict[str, Any], title: str) -> None:
    if not result["has_cost"]:
        accuracy_bars(path, result, title)
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    tri = result["triage"]
    ax.plot(
        [p["cost"] for p in tri], [p["accuracy"] for p in tri], "o-", color="C0", label="Triage (knob 0..1)"
    )
    for p in (tri[0], tri[-1]):
        ax.annotate(
            f"knob {p['knob']:g}",
            (p["cost"], p["accuracy"]),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    av = result["avengers"]
    ax.plot(
        [p["cost"] for p in av],
        [p["accuracy"] for p in av],
        "s--",
        color="C1",
        ms=4,
        label="Avengers-Pro-style clusters (alpha 0..1)",
    )
    for i, (m, v) in enumerate(result["single"].items()):
        ax.scatter(v["cost"], v["accuracy"], marker="^", color=f"C{(i + 3) % 10}", s=45, label=short(m))
    ax.scatter(
        result["oracle"]["cost"],
        result["oracle"]["accuracy"],
        marker="*",
        s=140,
        color="gold",
        edgecolor="k",
        label="oracle",
    )
    ax.scatter(
        result["random"]["cost"], result["random"]["accuracy"], marker="x", s=60, color="k", label="random"
    )
    ax.set_xlabel(
        "mean cost per query (USD)" if result["has_cost"] else "mean cost (all models priced equal)"
    )
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cliff_plot(
    path: Path,
    ood_scores: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    models: list[str],
    generalist: str,
    threshold: float,
    bins: int = 8,
) -> None:
    """Each model's accuracy against the OOD score (quantile bins): where a specialist falls off its cliff."""
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
    ax.axvline(threshold, color="red", ls=":", label="OOD threshold")
    ax.set_xlabel("out-of-domain score (mean cosine distance to 10 nearest calibration queries)")
    ax.set_ylabel("accuracy (queries binned by OOD score)")
    ax.set_title("Accuracy vs out-of-domain score: in-domain test + held-out domains", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def selection_plot(path: Path, selection: list[dict[str, Any]], metric: str) -> None:
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
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Model selection on the validation slice of the train split", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
