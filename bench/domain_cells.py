"""The domain level per domain and cluster (artifact format 5) against the per-domain rows alone (format 4).
Train rows only.

    .venv/bin/python -m bench.domain_cells [--datasets routerdc,llmrouter,routeprofile,routellm] [--strength 40]

For each dataset, two fits that differ only in ``FitConfig.domain_cell_strength`` (0: per domain alone, as
``triage calibrate --domain-cells 0``; the default strength), each doing its own model selection:

- **In domain**: three dev slices (20 % of the train rows by sha256("dev:" + id), "dev2:", "dev3:"), each routed
  by a fit on the rest; the validation objective (anchored AIQ, or knob-1 accuracy without a cost dimension).
- **Five disjoint outer folds** (RouterDC only; sha256("outer:" + id)): each fold routed at knob 1 by fits on the
  other four, pooled so that every train row counts once; the paired difference and its standard error. The dev
  slices above overlap (each fit shares most of its rows with the others), so they can agree by chance.
- **Leave one domain out** (RouterDC only, the dataset with the issue's target; each of the 6 largest train
  domains): ``fit()`` on the other domains' train rows, then that domain's rows routed at knob 1; the difference
  to the generalist's accuracy on them, in points.

The figures in docs/results.md, "The domain level per domain and cluster", come from this command.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from bench.devsplit import TrainRows, load
from calibration.fit import KNOBS, FitConfig, quality
from calibration.metrics import paired_se
from router.policy import Policy

SALTS = ("dev:", "dev2:", "dev3:")


def objective(policy: Policy, data: TrainRows, rows: np.ndarray) -> float:
    x, s, c = data.x[rows], data.rows.scores[rows], data.rows.costs[rows]
    est, index = policy.estimate(x), np.arange(len(x))
    points = []
    for knob in KNOBS:
        chosen, _ = policy.choose(est, np.full(len(x), knob))
        points.append((float(knob), float(s[index, chosen].mean()), float(c[index, chosen].mean())))
    return quality(points, s, c)


def describe(policy: Policy, k: int) -> str:
    a = policy.artifact
    return f"k {k}, weight {a.domains.weight if a.domains is not None else 0:g}, kNN {a.knn_weight:g}"


def knob1(policy: Policy, data: TrainRows, rows: np.ndarray) -> np.ndarray:
    """Each row's score at knob 1."""
    s = data.rows.scores[rows]
    chosen, _ = policy.choose(policy.estimate(data.x[rows]), np.ones(len(s)))
    out: np.ndarray = s[np.arange(len(s)), chosen]
    return out


def header(title: str, first: list[str], configs: dict[str, FitConfig]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join([*first, *configs]) + " |")
    print("|" + "---|" * (len(first) + len(configs)))


def in_domain(name: str, data: TrainRows, configs: dict[str, FitConfig]) -> None:
    header(f"{name}: in domain, three dev slices (objective; chosen k, domain weight, kNN blend)", ["slice"], configs)
    means: dict[str, list[float]] = collections.defaultdict(list)
    for salt in SALTS:
        dev = data.fold(salt, 5) == 0
        cells = []
        for label, config in configs.items():
            result, policy = data.fit(~dev, config)
            value = objective(policy, data, dev)
            means[label].append(value)
            cells.append(f"{value:.4f} ({describe(policy, result.k)})")
        print(f"| {salt} | " + " | ".join(cells) + " |", flush=True)
    print("| **mean** | " + " | ".join(f"**{np.mean(v):.4f}**" for v in means.values()) + " |")


def outer(data: TrainRows, configs: dict[str, FitConfig]) -> None:
    header("routerdc: five disjoint outer folds (knob-1 accuracy, every train row once)", ["fold", "rows"], configs)
    fold = data.fold("outer:", 5)
    correct: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for f in range(5):
        held = fold == f
        cells = []
        for label, config in configs.items():
            result, policy = data.fit(~held, config)
            correct[label].append(knob1(policy, data, held))
            cells.append(f"{correct[label][-1].mean():.4f} ({describe(policy, result.k)})")
        print(f"| {f} | {int(held.sum()):,} | " + " | ".join(cells) + " |", flush=True)
    pooled(correct)


def pooled(correct: dict[str, list[np.ndarray]]) -> None:
    """Each later entry's pooled knob-1 accuracy against the first's: the difference and its paired standard error."""
    (a_label, a), *rest = ((k, np.concatenate(v)) for k, v in correct.items())
    print()
    for b_label, b in rest:
        print(f"Pooled over {len(a):,} rows: {a_label} {a.mean():.4f}, {b_label} {b.mean():.4f}, difference "
              f"{100 * (b - a).mean():+.2f} points (paired standard error {100 * paired_se(b, a):.2f})")


def held_out(data: TrainRows, configs: dict[str, FitConfig]) -> None:
    header("routerdc: leave one domain out (train rows, knob 1, points against the generalist)",
           ["held-out domain", "rows"], configs)
    domains = np.array(data.rows.domains)
    g = data.rows.models.index(data.generalist)
    deltas: dict[str, list[float]] = collections.defaultdict(list)
    for held, n in collections.Counter(domains.tolist()).most_common(6):
        mask = domains == held
        cells = []
        for label, config in configs.items():
            _, policy = data.fit(~mask, config)
            delta = 100 * float(knob1(policy, data, mask).mean() - data.rows.scores[mask, g].mean())
            deltas[label].append(delta)
            level = policy.artifact.domains
            cells.append(f"{delta:+.2f} (weight {level.weight if level is not None else 0:g})")
        print(f"| {held} | {n:,} | " + " | ".join(cells) + " |", flush=True)
    print("| **mean / worst** | | " + " | ".join(f"**{np.mean(v):+.2f} / {min(v):+.2f}**"
                                                for v in deltas.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.domain_cells")
    parser.add_argument("--datasets", default="routerdc,llmrouter,routeprofile,routellm")
    parser.add_argument("--strength", type=float, default=FitConfig.domain_cell_strength)
    args = parser.parse_args()
    configs = {"per domain": FitConfig(domain_cell_strength=0.0),
               f"cells {args.strength:g}": FitConfig(domain_cell_strength=args.strength)}
    for name in args.datasets.split(","):
        data = load(name)
        in_domain(name, data, configs)
        if name == "routerdc":  # the dataset with the targets
            outer(data, configs)
            held_out(data, configs)


if __name__ == "__main__":
    main()
