"""Does model selection on five folds pick better settings than on one 20 % slice? Train rows only, nested.

    .venv/bin/python -m bench.selection_folds [--datasets routeprofile,llmrouter,routerdc,routellm]

Five outer folds of each dataset's train rows by sha256("outer:" + id). On each: ``fit()`` on the other four
folds twice, with ``selection_folds=1`` (one validation slice, the rule before) and with 5 (every fit row held
out once, sweeps pooled), each doing its own selection inside; then the outer fold routed by both. Prints the
objective on the outer fold (anchored AIQ, or knob-1 accuracy without a cost dimension), what each chose, and
the mean over the five folds. The figures in docs/results.md, "Selection on five folds", come from this command.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.devsplit import load
from calibration.fit import FitConfig, FitResult, quality, sweep


def chosen(r: FitResult) -> str:
    weight = r.domains.weight if r.domains is not None else 0.0
    return f"k {r.k}, soft {r.soft_top}, kNN {r.knn_weight:g}, domain {weight:g}, margin {r.cliff_margin:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selection_folds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="routeprofile,llmrouter,routerdc,routellm")
    args = parser.parse_args(argv)
    print("| dataset | outer fold | one slice | five folds | difference (points) | chosen (one slice) "
          "| chosen (five folds) | fit seconds (one / five) |\n|---|---|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        data = load(name)
        s, c = data.rows.scores, data.rows.costs
        outer = data.fold("outer:", 5)
        means: dict[int, list[float]] = {1: [], 5: []}
        for o in range(5):
            held = outer == o
            figures, choices, seconds = [], [], []
            for folds in (1, 5):
                started = time.monotonic()
                result, policy = data.fit(~held, FitConfig(selection_folds=folds))
                seconds.append(time.monotonic() - started)
                q = quality(sweep(policy, data.x[held], s[held], c[held]), s[held], c[held])
                means[folds].append(q)
                figures.append(q)
                choices.append(chosen(result))
            print(f"| {name} | {o} | {figures[0]:.4f} | {figures[1]:.4f} | {100 * (figures[1] - figures[0]):+.2f} "
                  f"| {choices[0]} | {choices[1]} | {seconds[0]:.0f} / {seconds[1]:.0f} |", flush=True)
        one, five = float(np.mean(means[1])), float(np.mean(means[5]))
        print(f"| {name} | mean | {one:.4f} | {five:.4f} | {100 * (five - one):+.2f} | | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
