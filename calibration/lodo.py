"""Leave-one-domain-out: is routing safe on a domain the calibration never saw?

For each domain that has train rows: fit on the train rows of every other domain (same ``fit`` as
``triage calibrate``, validation slice and all), then route that domain's non-train rows at knob 1 and compare
with the generalist. Domains that have no train rows at all (RouterDC's ``ood_or_unsplit``) are routed by
the fit on all domains. Run as ``triage eval --leave-one-domain-out --data F --out DIR [--generalist G]`` or
``python -m calibration.lodo ...`` (same options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from calibration.data import DataError, ScoreMatrix
from calibration.embeddings import EmbeddingCache, Encoder
from calibration.evaluation import rows_of
from calibration.fit import FitConfig, FitResult, fit
from calibration.metrics import auroc, paired_se
from calibration.options import (
    UsageError,
    add_domain_options,
    add_embedder_options,
    add_ood_method_option,
    check_selection_folds,
    domain_options,
    encoder_from,
    make_encoder,
    ood_options,
)
from calibration.pricing import priced_scores
from router.policy import Policy


def policy_from(result: FitResult, models: list[str], generalist: str, refine_name: str = "refine") -> Policy:
    return Policy(result.to_artifact(models, generalist, refine_name=refine_name))


def route_domain(policy: Policy, x: np.ndarray, s: np.ndarray, ref_ood: np.ndarray | None,
                 x2: np.ndarray | None = None) -> dict[str, Any]:
    est = policy.estimate(x, rows_of(x2))
    chosen, reasons = policy.choose(est, np.ones(len(x)))
    g = policy.generalist_index
    rows = np.arange(len(x))
    out = {
        "n": len(x),
        "routed_accuracy": float(s[rows, chosen].mean()),
        "generalist_accuracy": float(s[:, g].mean()),
        "best_single_accuracy": float(s.mean(axis=0).max()),
        "flagged_ood": float(est.is_ood.mean()),
        "ood_margin": float(np.mean([r == "ood_margin" for r in reasons])),  # sent to the generalist by it
    }
    if policy.artifact.refine is not None:
        out["refined"] = float(est.refined.mean())
    out["delta_vs_generalist"] = out["routed_accuracy"] - out["generalist_accuracy"]
    out["delta_se"] = paired_se(s[rows, chosen], s[:, g])  # paired over the domain's rows
    if ref_ood is not None:
        out["auroc"] = auroc(ref_ood, est.ood_score)
    return out


def run(
    data: ScoreMatrix,
    generalist: str,
    encoder: Encoder,
    cache_dir: Path | None,
    split: str = "train",
    min_test: int = 300,
    progress: bool = True,
    refine_encoder: Encoder | None = None,
    use_domains: bool = True,
    config: FitConfig | None = None,
) -> dict[str, Any]:
    """``refine_encoder``: fit and route with a refine tier (``encoder`` is then the fast embedder);
    ``use_domains``: let each fold fit a domain level (from the domains it was shown); ``config``: each fit's
    settings, as ``triage calibrate``'s (``--selection-folds``, ``--ood-method``, ``--ood-margin`` ...)."""
    cache = EmbeddingCache(encoder, cache_dir)
    x_all = cache.embed(data.queries, progress=progress)
    x2_all = (EmbeddingCache(refine_encoder, cache_dir).embed(data.queries, progress=progress)
              if refine_encoder is not None else None)

    def refine_rows(mask: np.ndarray) -> np.ndarray | None:
        return None if x2_all is None else x2_all[mask]
    is_train = data.mask_split(split)
    domains = np.array(data.domains)
    results: dict[str, Any] = {}
    trained = sorted(set(domains[is_train]))

    config = config or FitConfig()

    def fit_on(mask: np.ndarray) -> FitResult:
        return fit([data.ids[i] for i in np.flatnonzero(mask)], x_all[mask], data.scores[mask], data.costs[mask],
                   data.models, generalist, config, progress=False, refine_embeddings=refine_rows(mask),
                   domains=[data.domains[i] for i in np.flatnonzero(mask)] if use_domains else None)

    for domain in tqdm(trained, desc="leave one domain out", disable=not progress):
        fit_mask = is_train & (domains != domain)
        test_mask = ~is_train & (domains == domain)
        if not test_mask.any():
            continue
        result = fit_on(fit_mask)
        policy = policy_from(result, data.models, generalist)
        # In-domain reference for AUROC: the other domains' non-train rows (a sample keeps it quick).
        others = np.flatnonzero(~is_train & (domains != domain) & np.isin(domains, trained))[:3000]
        ref_ood = policy.estimate(x_all[others], rows_of(refine_rows(others))).ood_score if len(others) else None
        results[domain] = {
            **route_domain(policy, x_all[test_mask], data.scores[test_mask], ref_ood, refine_rows(test_mask)),
            "k": result.k,
            "domain_weight": result.domains.weight if result.domains is not None else 0.0,
            "ood_method": "domains" if result.ood_detector is not None else "knn",
            "counts_toward_target": int(test_mask.sum()) >= min_test,
        }
    unseen = sorted(set(domains[~is_train]) - set(trained))
    if unseen:
        full = fit_on(is_train)
        policy = policy_from(full, data.models, generalist)
        in_dom = np.flatnonzero(~is_train & np.isin(domains, trained))[:3000]
        ref_ood = policy.estimate(x_all[in_dom], rows_of(refine_rows(in_dom))).ood_score
        for domain in unseen:
            mask = domains == domain
            results[domain] = {
                **route_domain(policy, x_all[mask], data.scores[mask], ref_ood, refine_rows(mask)),
                "k": full.k,
                "domain_weight": full.domains.weight if full.domains is not None else 0.0,
                "ood_method": "domains" if full.ood_detector is not None else "knn",
                "counts_toward_target": int(mask.sum()) >= min_test,
                "never_in_train": True,
            }
    held = [r for r in results.values() if not r.get("never_in_train")]
    summary = {
        "mean_delta_vs_generalist": float(np.mean([r["delta_vs_generalist"] for r in held]))
        if held
        else None,
        "worst_delta_counted": min(
            (r["delta_vs_generalist"] for r in held if r["counts_toward_target"]), default=None
        ),
        "min_test": min_test,
    }
    return {"generalist": generalist, "source": data.source_name, "domains": results, "summary": summary}


def markdown(report: dict[str, Any], command: str) -> str:
    lines = [
        "# Leave-one-domain-out",
        "",
        f"Command: `{command}`",
        "",
        f"Generalist `{report['generalist']}`; knob 1; a domain is fitted without its own train rows.",
        "",
        "| domain | n | routed % | generalist % | delta pts (SE) | best single % | flagged OOD % | OOD margin % "
        "| AUROC | k | domain weight | OOD method |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for domain, r in report["domains"].items():
        name = domain + (" (never in train)" if r.get("never_in_train") else "")
        lines.append(
            f"| {name} | {r['n']} | {100 * r['routed_accuracy']:.2f} | {100 * r['generalist_accuracy']:.2f}"
            f" | {100 * r['delta_vs_generalist']:+.2f} ({100 * r['delta_se']:.2f})"
            f" | {100 * r['best_single_accuracy']:.2f} | "
            f"{100 * r['flagged_ood']:.1f} | {100 * r.get('ood_margin', 0.0):.1f} | "
            f"{r.get('auroc', float('nan')):.3f} | {r['k']} | "
            f"{r.get('domain_weight', 0.0):g} | {r.get('ood_method', 'knn')} |"
        )
    s = report["summary"]
    if s["mean_delta_vs_generalist"] is not None:
        lines += [
            "",
            f"Mean delta over held-out domains: {100 * s['mean_delta_vs_generalist']:+.2f} pts; worst on a "
            f"domain with >= {s['min_test']} test rows: "
            + (
                f"{100 * s['worst_delta_counted']:+.2f} pts"
                if s["worst_delta_counted"] is not None
                else "n/a"
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str], encoder: Encoder | None = None, refine_encoder: Encoder | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage eval --leave-one-domain-out")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generalist")
    parser.add_argument("--prices", type=Path, help="as for triage calibrate (default: the prices beside the data)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--min-test", type=int, default=300)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--refine-ood", action="store_true", help="fit each fold with a MiniLM refine tier")
    parser.add_argument("--no-domains", action="store_true", help="fit each fold without the domain level")
    parser.add_argument("--selection-folds", type=int, default=FitConfig.selection_folds,
                        help="each fold's model selection on this many folds of its train rows (1: one 20 %% slice)")
    parser.add_argument("--no-progress", action="store_true")
    add_domain_options(parser)
    add_ood_method_option(parser)
    add_embedder_options(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 2
    try:
        check_selection_folds(args.selection_folds)
        domain = domain_options(args)
    except UsageError as exc:
        print(f"triage eval: error: {exc}", file=sys.stderr)
        return 2
    try:
        data, _ = priced_scores(args.data, args.prices, "eval --leave-one-domain-out")
    except DataError as exc:
        print(f"triage eval: error: {exc}", file=sys.stderr)
        return 2
    train = data.subset(data.mask_split(args.split))
    generalist = args.generalist or train.best_model()
    if generalist not in data.models:
        print(f"triage eval: error: --generalist {generalist!r} is not one of the models", file=sys.stderr)
        return 2
    try:
        encoder = encoder or encoder_from(args)
    except UsageError as exc:
        print(f"triage eval: error: {exc}", file=sys.stderr)
        return 2
    if args.refine_ood:
        refine_encoder = refine_encoder or make_encoder(args.threads)
    try:
        report = run(
            data,
            generalist,
            encoder,
            args.cache_dir,
            args.split,
            args.min_test,
            not args.no_progress,
            refine_encoder if args.refine_ood else None,
            not args.no_domains,
            FitConfig(selection_folds=args.selection_folds, **domain, **ood_options(args)),
        )
    except ValueError as exc:  # e.g. --ood-method domains with --refine-ood
        print(f"triage eval: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lodo.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "lodo.md").write_text(
        markdown(report, "triage eval --leave-one-domain-out " + " ".join(argv))
    )
    print(markdown(report, "")[-400:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
