"""Where RouterDC's in-domain gap to the *domain router* is, and whether reading the domain level alone closes it.
Train rows only.

    .venv/bin/python -m bench.routerdc_gap [--tables estimators,protection,variants]

The domain router (``triage eval``'s baseline told each query's domain, docs/results.md) is the only router in
the reports that clears the issue's RouterDC target of best single + 3 points. Three tables:

- **Estimators, five disjoint outer folds** (sha256("outer:" + id); each fold routed at knob 1 by the default fit
  on the other four, pooled so that every train row counts once; the paired standard error against the router):
  the router as it runs; the same estimates with the out-of-domain protection off (no fallback, no margin); the
  argmax of the domain level's per-domain rows alone, of the clusters alone; the classifier's likeliest domain
  sent to that domain's best model on the fit rows; and the domain router, told the domain. The last three and
  "OOD off" ignore the cliffs and the OOD protection.
- **Protection**: the fit that reads the domain level's per-domain rows alone (the first variant below), on the same
  folds, with each part of the out-of-domain protection switched off in turn (the OOD margin, the fallback past the
  line, the clusters' cliffs) and all three: which part costs the in-domain points.
- **Variants**: fits that read the domain level alone (``--domain-weight 1``), per domain rows
  (``--domain-cells 0``) or cells, without the kNN blend, one with the OOD margin at 0.15; each on the same outer
  folds and on RouterDC's train-only leave-one-domain-out, whose held-out gsm8k is what the domain level alone
  endangers.

The figures in docs/results.md, "RouterDC's in-domain gap (2026-12-05)", come from this command.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
from collections.abc import Callable

import numpy as np

from bench.devsplit import TrainRows, load
from bench.domain_cells import held_out, outer, pooled
from calibration.fit import FitConfig
from router.clusters import soft_weights
from router.domains import softmax

DOMAIN_ALONE = FitConfig(domain_weight=1.0, domain_cell_strength=0.0, knn_weights=(0.0,))
VARIANTS = {
    "default": FitConfig(),
    "weight 1, per domain, no kNN": DOMAIN_ALONE,
    "the same, margin 0.15": dataclasses.replace(DOMAIN_ALONE, ood_margin=0.15),
    "weight 1, cells, no kNN": dataclasses.replace(DOMAIN_ALONE, domain_cell_strength=FitConfig.domain_cell_strength),
}


def estimators(data: TrainRows) -> None:
    scores, domains = data.rows.scores, np.array(data.rows.domains)
    fold = data.fold("outer:", 5)
    correct: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for f in range(5):
        held = fold == f
        _, policy = data.fit(~held, FitConfig())
        a, x, s = policy.artifact, data.x[held], scores[held]
        assert a.domains is not None
        n = len(s)
        row = np.arange(n)
        est = policy.estimate(x)
        picks: dict[str, np.ndarray] = {}
        picks["the router (knob 1)"], _ = policy.choose(est, np.ones(n))
        unprotected = dataclasses.replace(est, is_ood=np.zeros(n, dtype=bool), margin=None)
        picks["OOD protection off"] = unprotected.accuracy.argmax(1)
        p = softmax(a.domains.logits(x))
        picks["domain level's rows alone"] = (p @ a.domains.estimate).argmax(1)
        _, weights = soft_weights(x, a.centroids, a.soft_top, a.temperature)
        picks["clusters alone"] = (weights @ a.estimate).argmax(1)
        fitted = ~held
        best = {d: int(scores[fitted & (domains == d)].mean(0).argmax()) for d in set(domains[fitted].tolist())}
        picks["likeliest domain's best model"] = np.array([best[a.domains.names[j]] for j in p.argmax(1)])
        picks["domain router (told the domain)"] = np.array([best[d] for d in domains[held]])
        for label, chosen in picks.items():
            correct[label].append(s[row, chosen])
        print(f"fold {f}: " + ", ".join(f"{label} {100 * v[-1].mean():.2f}" for label, v in correct.items()),
              flush=True)
    print(f"\nBest single model on these rows: {100 * scores.mean(0).max():.2f} %")
    pooled(correct)


def protection(data: TrainRows) -> None:
    scores = data.rows.scores
    fold = data.fold("outer:", 5)
    correct: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for f in range(5):
        held = fold == f
        _, policy = data.fit(~held, DOMAIN_ALONE)
        a, s = policy.artifact, scores[held]
        n = len(s)
        est = policy.estimate(data.x[held])
        no_margin = dataclasses.replace(est, margin=None)
        no_fallback = dataclasses.replace(est, is_ood=np.zeros(n, dtype=bool))
        cliff = a.cliff.copy()
        for label, e, cliffs in (("full protection", est, True), ("no OOD margin", no_margin, True),
                                 ("no fallback past the line", no_fallback, True), ("no cliffs", est, False),
                                 ("none", dataclasses.replace(no_margin, is_ood=no_fallback.is_ood), False)):
            a.cliff[:] = cliff if cliffs else False
            chosen, _ = policy.choose(e, np.ones(n))
            correct[label].append(s[np.arange(n), chosen])
        a.cliff[:] = cliff
        print(f"fold {f}: " + ", ".join(f"{label} {100 * v[-1].mean():.2f}" for label, v in correct.items()),
              flush=True)
    pooled(correct)


def variants(data: TrainRows) -> None:
    outer(data, VARIANTS)
    held_out(data, VARIANTS)


TABLES: dict[str, Callable[[TrainRows], None]] = {"estimators": estimators, "protection": protection,
                                                  "variants": variants}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routerdc_gap")
    parser.add_argument("--tables", default=",".join(TABLES), help="which tables, comma-separated")
    args = parser.parse_args()
    data = load("routerdc")
    for table in args.tables.split(","):
        print(f"\n## routerdc: {table} (five disjoint outer folds, knob-1 accuracy, every train row once)\n")
        TABLES[table](data)


if __name__ == "__main__":
    main()
