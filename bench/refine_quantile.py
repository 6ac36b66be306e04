"""How the refine tier's quantile was chosen, on train rows only: leave-one-domain-out OOD AUROC.

    .venv/bin/python -m bench.refine_quantile [--quantiles 0.3,0.4,0.5,0.6]

RouterDC's train rows only (no test row is read). For each train domain d: the other domains' train rows are
split by a seeded draw into reference (60 %), validation (20 %) and inner test (20 %); d's train rows play the
unseen domain. Scores as the router computes them: mean cosine distance to the 10 nearest reference rows,
each in units of its own embedder's 0.95 validation quantile. The tiered score is the static one below the
refine line (that quantile of the static validation scores) and MiniLM's above it. Printed per domain:
AUROC (unseen domain vs inner test) of MiniLM alone, static alone and tiered at each quantile, and the share
of inner-test (in-domain) rows refined. ``FitConfig.refine_quantile`` is the largest quantile whose AUROC
stays within 0.01 of MiniLM's on every domain with at least 300 rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.stack import DATA
from calibration.data import load_scores
from calibration.embeddings import EmbeddingCache
from calibration.metrics import auroc
from router.ood import ood_scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.refine_quantile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quantiles", default="0.3,0.4,0.5,0.6")
    parser.add_argument("--static-model", type=Path, default=Path("models/minilm-static"))
    parser.add_argument("--min-rows", type=int, default=300)
    args = parser.parse_args(argv)
    from calibration.cli import make_encoder

    quantiles = [float(q) for q in args.quantiles.split(",")]
    data = load_scores(Path(DATA))
    train = data.subset(data.mask_split("train"))
    x_fine = EmbeddingCache(make_encoder(2)).embed(train.queries, progress=False)
    x_fast = EmbeddingCache(make_encoder(2, "static", args.static_model)).embed(train.queries, progress=False)
    draw = np.random.default_rng(0).random(len(train))
    val, inner = draw < 0.2, (draw >= 0.2) & (draw < 0.4)
    domains = np.array(train.domains)
    header = ["domain", "rows", "minilm", "static"] + [f"tiered@{q}" for q in quantiles] + [
        f"refined@{q}" for q in quantiles]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    worst = dict.fromkeys(quantiles, 0.0)
    for domain in sorted(set(domains)):
        others = domains != domain
        ref, v, test, unseen = others & ~val & ~inner, others & val, others & inner, domains == domain
        scored = {}
        for name, x in (("fine", x_fine), ("fast", x_fast)):
            val_scores = ood_scores(x[v], x[ref], 10)
            line = np.quantile(val_scores, 0.95)
            scored[name] = (ood_scores(x[test], x[ref], 10) / line, ood_scores(x[unseen], x[ref], 10) / line,
                            val_scores / line)
        row = [domain, str(int(unseen.sum())), f"{auroc(*scored['fine'][:2]):.4f}", f"{auroc(*scored['fast'][:2]):.4f}"]
        shares = []
        for q in quantiles:
            cut = np.quantile(scored["fast"][2], q)
            tiered = [np.where(scored["fast"][i] >= cut, scored["fine"][i], scored["fast"][i]) for i in (0, 1)]
            value = auroc(*tiered)
            row.append(f"{value:.4f}")
            shares.append(f"{(scored['fast'][0] >= cut).mean() * 100:.0f} %")
            if unseen.sum() >= args.min_rows:
                worst[q] = min(worst[q], value - auroc(*scored["fine"][:2]))
        print("| " + " | ".join(row + shares) + " |")
    print("\nworst AUROC change against MiniLM on domains with >= "
          f"{args.min_rows} rows: " + ", ".join(f"{q}: {worst[q]:+.4f}" for q in quantiles))
    kept = [q for q in quantiles if worst[q] >= -0.01]
    print(f"largest quantile within 0.01: {max(kept) if kept else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
