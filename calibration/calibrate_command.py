"""``triage calibrate``: score matrix in (a file, live backends, or a decision log's feedback), artifact out.

Reads top to bottom: the rows, the options checked, the embeddings, ``fit``, then the artifact with its human
report (report.md, clusters.png, selection.png) written atomically by calibration/bundle.py.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calibration.data import ScoreMatrix
from calibration.embeddings import EmbeddingCache, Encoder
from calibration.fit import FitConfig, FitResult, fit
from calibration.options import (
    UsageError,
    check_selection_folds,
    choose_generalist,
    clusters_option,
    domain_options,
    domains_option,
    encoder_from,
    fit_rows,
    make_encoder,
    ood_options,
)
from calibration.pricing import Pricing, priced_scores
from router.artifact import Artifact
from router.embedding import weights_of

# What the manifest's "data" section records of the rows fitted on (the rest of ``fit_info`` is for report.md).
DATA_KEYS = ("source", "sha256", "rows", "train_rows", "split", "split_method", "holdout_domains", "cost_source",
             "prices", "prices_sha256")


def calibrate(args: argparse.Namespace, encoder: Encoder | None, client: Any = None,
              refine_encoder: Encoder | None = None) -> int:
    started = time.monotonic()
    if args.from_log:
        return fold_feedback(args)
    if args.live:
        from calibration.live import run_live

        if not args.config or not args.gold:
            raise UsageError("--live needs --config and --gold")
        args.data = run_live(args, client)
    elif args.data is None:
        raise UsageError("--data is required (or --live with --config and --gold)")
    data, pricing = priced_scores(args.data, args.prices, "calibrate")
    holdout = domains_option(args.holdout_domains)
    train = fit_rows(data, args.split, holdout)
    generalist, reason = choose_generalist(train, args.generalist)
    k_fixed, config = fit_config(args)
    encoder = encoder or encoder_from(args)
    x = EmbeddingCache(encoder, args.cache_dir).embed(train.queries, progress=not args.no_progress)
    x_refine = None
    if args.refine_ood:
        refine_encoder = refine_encoder or make_encoder(args.threads)
        x_refine = EmbeddingCache(refine_encoder, args.cache_dir).embed(train.queries, progress=not args.no_progress)
    try:
        result = fit(train.ids, x, train.scores, train.costs, data.models, generalist, config, k_fixed,
                     progress=not args.no_progress, refine_embeddings=x_refine,
                     domains=None if args.no_domains else train.domains)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    info = fit_info(args, data, train, holdout, pricing, reason, config, result)
    human = human_report(result, data.models, generalist, info, "triage " + shlex.join(args.argv))
    write_artifact_from(args.out, data, generalist, encoder, result, {k: info[k] for k in DATA_KEYS}, config, human,
                        refine_encoder.name if refine_encoder is not None and x_refine is not None else None)
    print(f"artifact written: {args.out} (k={result.k}, generalist {generalist}, "
          f"{time.monotonic() - started:.0f} s)")
    return 0


def fold_feedback(args: argparse.Namespace) -> int:
    """``--from-log``: feedback joined to the logged decisions, folded into ``--artifact``."""
    from calibration.feedback import from_log

    if not args.artifact:
        raise UsageError("--from-log needs --artifact (the artifact the logged decisions were made with)")
    print(f"{from_log(args.from_log, args.artifact, args.out)}; artifact written: {args.out}")
    return 0


def fit_config(args: argparse.Namespace) -> tuple[int | None, FitConfig]:
    """(``--clusters`` k or None for 'auto', the fit's settings); ``UsageError`` for a value out of range."""
    k_fixed = clusters_option(args.clusters)
    domain = domain_options(args)
    if not 0 < args.ood_quantile < 1:
        raise UsageError("--ood-quantile must lie in (0, 1)")
    if args.refine_ood and args.embedder != "static":
        raise UsageError("--refine-ood refines a fast embedder's calls: use it with --embedder static")
    if not 0 < args.refine_quantile < args.ood_quantile:
        raise UsageError("--refine-quantile must lie in (0, --ood-quantile)")
    check_selection_folds(args.selection_folds)
    return k_fixed, FitConfig(ood_quantile=args.ood_quantile, seed=args.seed, refine_quantile=args.refine_quantile,
                              selection_folds=args.selection_folds, **domain, **ood_options(args))


def fit_info(args: argparse.Namespace, data: ScoreMatrix, train: ScoreMatrix, holdout: set[str], pricing: Pricing,
             reason: str, config: FitConfig, result: FitResult) -> dict[str, Any]:
    """What the fit read and chose: the manifest's ``DATA_KEYS`` and report.md's header."""
    return {
        "source": data.source_name,
        "sha256": data.fingerprint,
        "rows": len(data),
        "train_rows": len(train),
        "split": args.split,
        "split_method": data.notes[0] if data.hash_split else f"rows with split == {args.split!r}",
        "holdout_domains": sorted(holdout),
        "cost_source": data.cost_source,
        "prices": pricing.path.name if pricing.path is not None else None,
        "prices_sha256": pricing.digest,
        "prices_found_beside": pricing.found_beside,
        "generalist_reason": reason,
        "objective": "AIQ over the knob sweep" if train.has_cost else "accuracy at knob 1",
        "selection_folds": config.selection_folds,
        "prior_strength": config.prior_strength,
        "cliff_confidence": config.cliff_confidence,
        "cliff_margin": result.cliff_margin,
        "cliff_margin_selection": result.margin_selection,
        "ood_quantile": config.ood_quantile,
        "ood_method": config.ood_method,
        "ood_margin": result.ood_detector.margin_spec() if result.ood_detector is not None else None,
        "domain_level": domain_level(args, result),
    }


def domain_level(args: argparse.Namespace, result: FitResult) -> str:
    if args.no_domains:
        return "off (--no-domains)"
    if result.domains is None:
        return "not used (fewer than 2 domains, or weight 0 measured best)"
    return (f"weight {result.domains.weight} over {len(result.domains.names)} domains"
            + (f", per domain and cluster (cell strength {result.domains.cell_strength:g})"
               if result.domains.cell_estimate is not None else ", per domain"))


def human_report(result: FitResult, models: list[str], generalist: str, info: dict[str, Any],
                 command: str) -> Callable[[Path], None]:
    """Writes report.md and its figures into the artifact directory before it is renamed into place."""

    def write(directory: Path) -> None:
        from calibration.plots import heatmap, selection_plot
        from calibration.report import calibration_report

        t = result.table
        heatmap(directory / "clusters.png", t.estimate, models, "Shrunk accuracy per cluster (train); outlined = cliff",
                t.cliff, t.counts[:, 0])
        selection_plot(directory / "selection.png", result.selection, info["objective"], result.k)
        (directory / "report.md").write_text(calibration_report(result, models, generalist, info, command))

    return write


def write_artifact_from(
    out: Path,
    data: ScoreMatrix,
    generalist: str,
    encoder: Encoder,
    result: Any,
    data_info: dict[str, Any],
    config: FitConfig,
    human: Any,
    refine_embedder_name: str | None = None,
) -> Artifact:
    from calibration.bundle import write_artifact

    return write_artifact(
        out,
        models=data.models,
        generalist=generalist,
        embedder_name=encoder.name,
        embedder_dim=encoder.dim,
        embedder_weights=weights_of(encoder),
        embedder_window=encoder.max_tokens,
        fit=result,
        data_info=data_info,
        extra={
            "ood_quantile": config.ood_quantile,
            "ood_method": config.ood_method,
            "ood_margin": result.ood_detector.margin_spec() if result.ood_detector is not None else None,
            "selection_folds": config.selection_folds,
            "refine_quantile": config.refine_quantile if refine_embedder_name else None,
            "shrinkage": {
                "prior_strength": config.prior_strength,
                "cliff_confidence": config.cliff_confidence,
                "cliff_margin": float(result.cliff_margin),
            },
        },
        write_human=human,
        refine_embedder_name=refine_embedder_name,
    )
