"""Would a per-query cost estimate route better than the clusters' mean cost? Train rows only.

    .venv/bin/python -m bench.cost_estimate [--datasets routeprofile,llmrouter,routellm]

The issue's idea: predict each query's cost from its length and each model's verbosity. On three dev slices
per dataset (20 % of the train rows by sha256("dev:" + id), "dev2:", "dev3:"), ``fit()`` on the rest (domain
level on, defaults otherwise), then the slice routed with three cost estimates in the policy: the table's
(what the router does: soft cluster weights over per-cluster mean costs, blended with the domain level's),
``linear`` (per model, least squares of cost on the query's character count over the fit rows) and ``oracle``
(the slice's own true costs: no estimate can do better). Prints the anchored AIQ of each (the objective
``triage eval`` reports). The figures in docs/results.md, "Per-query cost", come from this command.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import numpy.typing as npt

from bench.devsplit import load
from calibration.fit import KNOBS, FitConfig, quality

Floats = npt.NDArray[np.float64]


def linear_cost(length_fit: Floats, cost_fit: Floats, length: Floats) -> Floats:
    """Per model: cost ≈ a + b · characters, least squares on the fit rows; never below zero."""
    design = np.c_[np.ones(len(length_fit)), length_fit]
    coef, *_ = np.linalg.lstsq(design, cost_fit, rcond=None)  # (2, m): one column per model
    return np.asarray(np.maximum(np.c_[np.ones(len(length)), length] @ coef, 0.0), dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost_estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="routeprofile,llmrouter,routellm")
    args = parser.parse_args(argv)
    print("| dataset | dev slice | k | table | linear | oracle |\n|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        data = load(name)
        s_all, c_all = data.rows.scores, data.rows.costs
        length = np.array([len(q) for q in data.rows.queries], dtype=np.float64)
        for salt in ("dev:", "dev2:", "dev3:"):
            dev = data.fold(salt, 5) == 0
            result, policy = data.fit(~dev, FitConfig())
            est = policy.estimate(data.x[dev])
            s, c = s_all[dev], c_all[dev]
            rows = np.arange(len(s))
            figures = []
            for cost in (est.cost.copy(), linear_cost(length[~dev], c_all[~dev], length[dev]), c.copy()):
                est.cost = cost
                points = []
                for knob in KNOBS:
                    chosen, _ = policy.choose(est, np.full(len(s), knob))
                    points.append((float(knob), float(s[rows, chosen].mean()), float(c[rows, chosen].mean())))
                figures.append(f"{quality(points, s, c):.4f}")
            print(f"| {name} | {salt[:-1]} | {result.k} | " + " | ".join(figures) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
