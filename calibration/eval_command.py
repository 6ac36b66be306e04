"""``triage eval --artifact DIR --data SCORES.jsonl --out REPORT_DIR``: route the rows the artifact was not fitted
on, compare with every single model and the baselines (calibration/evaluation.py), and write report.md,
report.json and the figures.

Rows: in-domain test rows are those outside the fitted split and the held-out domains; rows of held-out domains
(and RouterDC's ``ood_or_unsplit``) are the out-of-domain set.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.data import ScoreMatrix
from calibration.embeddings import EmbeddingCache, Encoder
from calibration.eval_result import EvalResult
from calibration.options import UsageError, domains_option, encoder_from, fit_rows, make_encoder
from calibration.plots import OodAxis
from calibration.pricing import Pricing, priced_scores, pricing_mismatch
from router.artifact import Artifact, recorded_window
from router.embedding import identity

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EvalRows:
    """The data split for an evaluation: rows fitted on, in-domain test rows, held-out-domain rows."""

    train: ScoreMatrix
    test: ScoreMatrix
    ood: ScoreMatrix


def evaluate_artifact(args: argparse.Namespace, encoder: Encoder | None, refine_encoder: Encoder | None = None) -> int:
    from calibration.evaluation import AvengersBaseline, evaluate
    from router.policy import Policy

    if args.artifact is None:
        raise UsageError("--artifact is required (or --leave-one-domain-out)")
    if getattr(args, "window", None) is None:
        args.window = recorded_window(args.artifact)  # embed the test queries as the artifact's were
    encoder = encoder or encoder_from(args)
    artifact, refine_encoder = load_artifact(args, encoder, refine_encoder)
    data, pricing = priced_scores(args.data, args.prices, "eval")
    cost_mismatch = check_data(artifact, data, pricing)
    rows = split_rows(args, artifact, data)
    cache = EmbeddingCache(encoder, args.cache_dir)
    progress = not args.no_progress
    train_x = cache.embed(rows.train.queries, progress=progress)
    test_x = cache.embed(rows.test.queries, progress=progress)
    ood_x = cache.embed(rows.ood.queries, progress=progress) if len(rows.ood) else None
    test_x2 = ood_x2 = None
    if artifact.refine is not None and refine_encoder is not None:
        refine_cache = EmbeddingCache(refine_encoder, args.cache_dir)
        test_x2 = refine_cache.embed(rows.test.queries, progress=progress)
        ood_x2 = refine_cache.embed(rows.ood.queries, progress=progress) if len(rows.ood) else None
    baseline = AvengersBaseline.fit(train_x, rows.train.scores, rows.train.costs, artifact.k)
    has_ood = len(rows.ood) > 0
    result = evaluate(
        Policy(artifact),
        data.models,
        test_x,
        rows.test.scores,
        rows.test.costs,
        baseline,
        ood_x,
        rows.ood.scores if has_ood else None,
        rows.ood.costs if has_ood else None,
        test_refine=test_x2,
        ood_refine=ood_x2,
        test_domains=rows.test.domains,
        domain_best=domain_best(rows.train, rows.test.domains),
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    figures(out, result, artifact, data, rows)
    info = report_info(args, artifact, data, rows, pricing, cost_mismatch)
    write_reports(out, result, info, "triage " + shlex.join(args.argv))
    print(result.summary())
    return 0


def load_artifact(
    args: argparse.Namespace, encoder: Encoder, refine_encoder: Encoder | None
) -> tuple[Artifact, Encoder | None]:
    """The artifact, checked against the encoder, and the refine encoder its refine tier needs (if any)."""
    artifact = Artifact.load(args.artifact, **identity(encoder))
    if artifact.refine is not None:
        refine_encoder = refine_encoder or make_encoder(args.threads)
        if refine_encoder.name != artifact.refine.embedder_name:
            raise UsageError(f"the artifact's refine tier needs {artifact.refine.embedder_name!r}")
    return artifact, refine_encoder


def check_data(artifact: Artifact, data: ScoreMatrix, pricing: Pricing) -> str | None:
    """Refuse data for other models; warn when the data file or its costs are not the ones fitted on. Returns
    the cost warning for the report (None: the costs agree)."""
    if data.models != artifact.models:
        raise UsageError(
            f"the data's models differ from the artifact's: {sorted(set(data.models) ^ set(artifact.models))}"
        )
    if artifact.manifest.get("data", {}).get("sha256") not in (None, data.fingerprint):
        print("triage eval: warning: the data file differs from the one the artifact was fitted on", file=sys.stderr)
    cost_mismatch = pricing_mismatch(artifact.manifest, data.cost_source, pricing)
    if cost_mismatch is not None:
        print(f"triage eval: WARNING: {cost_mismatch}", file=sys.stderr)
    return cost_mismatch


def split_rows(args: argparse.Namespace, artifact: Artifact, data: ScoreMatrix) -> EvalRows:
    recorded = artifact.manifest.get("data", {})
    holdout = (domains_option(args.holdout_domains) if args.holdout_domains is not None
               else set(recorded.get("holdout_domains", [])))
    not_fit = ~data.mask_split(args.split)
    ood_mask = data.mask_domains(holdout) | data.mask_split("ood_or_unsplit")
    test = data.subset(not_fit & ~ood_mask)
    if len(test) == 0:
        raise UsageError("no in-domain rows outside the fitted split to evaluate on")
    return EvalRows(train=fit_rows(data, args.split, holdout), test=test, ood=data.subset(ood_mask))


def domain_best(train: ScoreMatrix, domains: list[str]) -> dict[str, int]:
    """Per domain, the model with the best accuracy on the fitted rows of that domain (the cheaper on a tie);
    a domain with no fitted rows gets the best model over all of them."""

    def best(rows: npt.NDArray[np.bool_]) -> int:
        acc, cost = train.scores[rows].mean(axis=0), train.costs[rows].mean(axis=0)
        return int(np.lexsort((cost, -acc))[0])

    everything = best(np.ones(len(train), dtype=bool))
    present = set(train.domains)
    return {d: best(train.mask_domains({d})) if d in present else everything for d in set(domains)}


def figures(out: Path, result: EvalResult, artifact: Artifact, data: ScoreMatrix, rows: EvalRows) -> None:
    from calibration.plots import cliff_plot, frontier_plot, heatmap

    test, ood = rows.test, rows.ood
    frontier_plot(out / "frontier.png", result, f"{data.source_name}: accuracy vs cost on {len(test)} test rows")
    clusters = result.clusters
    per_cluster = np.array([
        test.scores[clusters == c].mean(axis=0) if (clusters == c).any() else np.full(len(data.models), np.nan)
        for c in range(artifact.k)
    ])
    counts = np.array([(clusters == c).sum() for c in range(artifact.k)], dtype=float)
    heatmap(
        out / "cluster_accuracy.png",
        per_cluster,  # a cluster no test row fell in stays NaN: drawn empty, not as 0 %
        data.models,
        "Test accuracy per cluster (outlined = cliff from calibration)",
        artifact.cliff,
        counts,
    )
    all_ood, all_scores = result.in_domain_ood_scores, test.scores
    if result.ood_scores is not None:
        all_ood = np.concatenate([all_ood, result.ood_scores])
        all_scores = np.concatenate([test.scores, ood.scores])
    cliff_plot(out / "cliff.png", all_ood, all_scores, data.models, artifact.generalist, ood_axis(artifact),
               sorted(set(ood.domains)))


def ood_axis(artifact: Artifact) -> OodAxis:
    """What the artifact's OOD scores measure, for the cliff plot's x-axis."""
    if artifact.refine is not None:
        return OodAxis(f"out-of-domain score: mean cosine distance to the {artifact.ood_k} nearest calibration "
                       "queries, in units of its cluster's threshold (1 = the line; close calls re-scored by "
                       f"{artifact.refine.embedder_name})", 1.0, "OOD threshold")
    if artifact.ood_detector is not None and artifact.domains is not None:
        return OodAxis("out-of-domain score: domain detector, the larger of the Mahalanobis distance to the nearest "
                       "calibration domain and the domain classifier's energy\n(threshold units: 0 = median of "
                       "held-out in-domain queries, 1 = the line)", 1.0, "OOD threshold")
    thresholds = artifact.ood_cluster_thresholds
    varies = thresholds is not None and bool(np.ptp(thresholds) > 0)
    return OodAxis(f"out-of-domain score: mean cosine distance to the {artifact.ood_k} nearest calibration queries",
                   artifact.ood_threshold, "OOD threshold" + (" (global; each cluster has its own)" if varies else ""))


def report_info(args: argparse.Namespace, artifact: Artifact, data: ScoreMatrix, rows: EvalRows, pricing: Pricing,
                cost_mismatch: str | None) -> dict[str, Any]:
    """report.json's ``info`` and report.md's header: what was evaluated, how."""
    info = {
        "k": artifact.k,
        "generalist": artifact.generalist,
        "embedder": artifact.embedder_name + (f" (refine tier: {artifact.refine.embedder_name})"
                                              if artifact.refine is not None else ""),
        "rows": f"split != {args.split!r}, excluding held-out domains",
        "cost_source": data.cost_source + (f" ({pricing.describe()})" if pricing.path is not None else ""),
        "ood_rows": ", ".join(sorted(set(rows.ood.domains))) or "none",
    }
    if cost_mismatch is not None:
        info["cost_mismatch"] = cost_mismatch
    return info


def write_reports(out: Path, result: EvalResult, info: dict[str, Any], command: str) -> None:
    from calibration.report import eval_report

    (out / "report.md").write_text(eval_report(result, command, info))
    (out / "report.json").write_text(json.dumps({**result.to_json(), "info": info}, indent=1, default=float) + "\n")
