"""``triage calibrate`` and ``triage eval``: ``main(argv) -> int`` (0 ok, 2 bad input or usage).

    triage calibrate --data SCORES.jsonl --out DIR [--split train] [--generalist NAME] [--clusters K|auto]
                     [--prices PRICES.json] [--holdout-domains a,b]
    triage calibrate --live --config FILE --gold GOLD.jsonl --out DIR [--limit N] [--concurrency C]
    triage eval --artifact DIR --data SCORES.jsonl --out REPORT_DIR [--prices PRICES.json]
    triage eval --leave-one-domain-out --data SCORES.jsonl --out DIR [--generalist NAME]  (lodo.py)

Bad input (a row without a score, an unknown model, an empty query, a NaN cost, an unknown gold metric) stops
the run with a message naming the row and field, exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from calibration.data import DataError, ScoreMatrix
from calibration.embeddings import EmbeddingCache, Encoder
from calibration.fit import FitConfig, fit
from calibration.plots import OodAxis
from calibration.pricing import priced_scores, pricing_mismatch
from router.artifact import Artifact, ArtifactError
from router.embedding import weights_of
from router.ood import MARGIN_SCORES


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description="Calibrate and evaluate Triage routing.")
    sub = parser.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate", help="fit a routing artifact from a score matrix or live backends")
    cal.add_argument("--data", type=Path, help="score matrix JSONL (routing/ format)")
    cal.add_argument("--out", type=Path, required=True, help="artifact directory (replaced atomically)")
    cal.add_argument("--split", default="train", help="rows fitted on (default: train)")
    cal.add_argument("--generalist", help="default: the model with the best overall train accuracy")
    cal.add_argument("--clusters", default="auto", help="k, or 'auto' (chosen on a validation slice)")
    cal.add_argument("--prices", type=Path, help="{model: {input_price, output_price}} USD per 1M tokens (default: "
                     "the data set's *_prices.json beside it, if any; else every model costs the same)")
    cal.add_argument("--holdout-domains", default="", help="comma-separated domains left out of fitting")
    cal.add_argument("--ood-quantile", type=float, default=0.95)
    add_ood_method_option(cal)
    cal.add_argument("--live", action="store_true", help="measure the score matrix on running backends")
    cal.add_argument("--from-log", type=Path, nargs="+", help="fold feedback joined to decisions into --artifact: "
                     "decision logs, or directories of them (one per router replica)")
    cal.add_argument("--artifact", type=Path, help="--from-log: the artifact the logged decisions were made with")
    cal.add_argument("--config", type=Path, help="router config with backends (for --live)")
    cal.add_argument("--gold", type=Path, help="gold questions JSONL (for --live)")
    cal.add_argument("--limit", type=int, help="--live: first N gradable gold questions")
    cal.add_argument("--concurrency", type=int, default=4, help="--live: requests in flight")
    cal.add_argument("--max-tokens", type=int, default=512, help="--live: completion budget per answer")
    cal.add_argument("--cache-dir", type=Path, help="embedding cache (default ~/.cache/triage/embeddings)")
    cal.add_argument("--threads", type=int, default=2, help="torch threads for the embedder")
    add_embedder_options(cal)
    cal.add_argument("--refine-ood", action="store_true",
                     help="with --embedder static: add a refine tier (MiniLM re-scores close out-of-domain calls)")
    cal.add_argument("--refine-quantile", type=float, default=FitConfig.refine_quantile,
                     help="refine queries whose fast OOD score reaches this quantile of held-out in-domain ones")
    cal.add_argument("--no-domains", action="store_true",
                     help="fit without the domain level (a domain classifier's per-domain estimates, blended with "
                     "the clusters' when the validation slice measures it better)")
    add_domain_options(cal)
    cal.add_argument("--selection-folds", type=int, default=FitConfig.selection_folds,
                     help="model selection on this many folds of the train rows, by hash (1: one 20 %% slice)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("eval", help="evaluate an artifact on rows not used for fitting")
    ev.add_argument("--leave-one-domain-out", action="store_true",
                    help="fit each domain without its own train rows and route them (no --artifact; its own "
                    "options: triage eval --leave-one-domain-out --help)")
    ev.add_argument("--artifact", type=Path, help="required unless --leave-one-domain-out")
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--prices", type=Path, help="as for calibrate; a warning when they differ from the artifact's")
    ev.add_argument("--split", default="train", help="the split the artifact was fitted on (excluded)")
    ev.add_argument("--holdout-domains", default=None, help="default: those recorded in the artifact")
    ev.add_argument("--cache-dir", type=Path)
    ev.add_argument("--threads", type=int, default=2)
    add_embedder_options(ev)
    ev.add_argument("--no-progress", action="store_true")
    return parser


# Where scripts/setup-router.sh writes the embedders (relative to the repository root).
ONNX_MODEL = Path("models/minilm-onnx")
INT8_MODEL = Path("models/minilm-onnx-int8")
STATIC_MODEL = Path("models/minilm-static")


def add_embedder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedder", choices=("minilm", "openvino", "int8", "static"), default="minilm",
                        help="minilm: all-MiniLM-L6-v2 on torch (the router's torch/onnx backends); openvino: the "
                        "same model's ONNX export on OpenVINO, bfloat16 where the CPU has it (same name, vectors "
                        "within cosine 0.9999); int8: its dynamic-int8 ONNX copy (its own vectors); static: the "
                        "model2vec table distilled from it")
    parser.add_argument("--onnx-model", type=Path, default=ONNX_MODEL,
                        help="--embedder openvino: dir written by python -m router.embedding_tools.export")
    parser.add_argument("--static-model", type=Path, default=STATIC_MODEL,
                        help="--embedder static: dir written by python -m router.embedding_tools.distil")
    parser.add_argument("--int8-model", type=Path, default=INT8_MODEL,
                        help="--embedder int8: dir written by python -m router.embedding_tools.export --int8-out")


def encoder_from(args: argparse.Namespace) -> Encoder:
    """The encoder the embedder options (``add_embedder_options``) ask for."""
    return make_encoder(args.threads, args.embedder, args.static_model, args.int8_model, args.onnx_model)


def make_encoder(threads: int, kind: str = "minilm", static_model: Path | None = None,
                 int8_model: Path | None = None, onnx_model: Path | None = None) -> Encoder:
    """The embedder ``kind`` names; a model that cannot be loaded is the caller's ``UsageError``."""
    from calibration.embeddings import encoder_settings
    from router.embedding import EmbedderError, load_encoder

    try:
        settings = encoder_settings(kind, threads, onnx_model or ONNX_MODEL, int8_model or INT8_MODEL,
                                    static_model or STATIC_MODEL)
        # Every registered encoder also takes calibration's ``progress=``.
        return cast("Encoder", load_encoder(settings))
    except EmbedderError as exc:
        raise UsageError(str(exc)) from None


def main(argv: list[str], encoder: Encoder | None = None, client: Any = None,
         refine_encoder: Encoder | None = None) -> int:
    """``encoder``, ``refine_encoder`` (MiniLM for a refine tier) and ``client`` (an ``httpx.AsyncClient`` for
    --live) are injectable for tests."""
    if argv[:1] == ["eval"] and "--leave-one-domain-out" in argv:
        from calibration import lodo

        return lodo.main([a for a in argv[1:] if a != "--leave-one-domain-out"], encoder=encoder,
                         refine_encoder=refine_encoder)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code or 0) if exc.code in (0, None) else 2
    try:
        if args.command == "calibrate":
            return calibrate(args, encoder, client, refine_encoder)
        return evaluate(args, encoder, refine_encoder)
    except (DataError, ArtifactError, UsageError) as exc:
        print(f"triage {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _domains(text: str | None) -> set[str]:
    return {d.strip() for d in (text or "").split(",") if d.strip()}


def domain_best(train: ScoreMatrix, domains: list[str]) -> dict[str, int]:
    """Per domain, the model with the best accuracy on the fitted rows of that domain (the cheaper on a tie);
    a domain with no fitted rows gets the best model over all of them."""

    def best(rows: npt.NDArray[np.bool_]) -> int:
        acc, cost = train.scores[rows].mean(axis=0), train.costs[rows].mean(axis=0)
        return int(np.lexsort((cost, -acc))[0])

    everything = best(np.ones(len(train), dtype=bool))
    present = set(train.domains)
    return {d: best(train.mask_domains({d})) if d in present else everything for d in set(domains)}


def fit_rows(data: ScoreMatrix, split: str, holdout: set[str]) -> ScoreMatrix:
    rows = data.subset(data.mask_split(split) & ~data.mask_domains(holdout))
    if len(rows) == 0:
        raise UsageError(f"no rows with split {split!r} outside the held-out domains")
    return rows


def calibrate(args: argparse.Namespace, encoder: Encoder | None, client: Any = None,
              refine_encoder: Encoder | None = None) -> int:
    started = time.monotonic()
    command = "triage " + shlex.join(args.argv)
    if args.from_log:
        from calibration.feedback import from_log

        if not args.artifact:
            raise UsageError("--from-log needs --artifact (the artifact the logged decisions were made with)")
        print(f"{from_log(args.from_log, args.artifact, args.out)}; artifact written: {args.out}")
        return 0
    if args.live:
        from calibration.live import run_live

        if not args.config or not args.gold:
            raise UsageError("--live needs --config and --gold")
        data_path = run_live(args, client)
        args.data = data_path
    elif args.data is None:
        raise UsageError("--data is required (or --live with --config and --gold)")
    data, pricing = priced_scores(args.data, args.prices, "calibrate")
    holdout = _domains(args.holdout_domains)
    train = fit_rows(data, args.split, holdout)
    generalist, reason = choose_generalist(train, args.generalist)
    k_fixed = None
    if args.clusters != "auto":
        if not args.clusters.isdigit() or int(args.clusters) < 1:
            raise UsageError(f"--clusters must be a positive integer or 'auto', got {args.clusters!r}")
        k_fixed = int(args.clusters)
    domain = domain_options(args)
    if not 0 < args.ood_quantile < 1:
        raise UsageError("--ood-quantile must lie in (0, 1)")
    if args.refine_ood and args.embedder != "static":
        raise UsageError("--refine-ood refines a fast embedder's calls: use it with --embedder static")
    if not 0 < args.refine_quantile < args.ood_quantile:
        raise UsageError("--refine-quantile must lie in (0, --ood-quantile)")
    encoder = encoder or encoder_from(args)
    x = EmbeddingCache(encoder, args.cache_dir).embed(train.queries, progress=not args.no_progress)
    x_refine = None
    if args.refine_ood:
        refine_encoder = refine_encoder or make_encoder(args.threads)
        x_refine = EmbeddingCache(refine_encoder, args.cache_dir).embed(train.queries, progress=not args.no_progress)
    check_selection_folds(args.selection_folds)
    config = FitConfig(ood_quantile=args.ood_quantile, seed=args.seed, refine_quantile=args.refine_quantile,
                       selection_folds=args.selection_folds, **domain, **ood_options(args))
    try:
        result = fit(
            train.ids,
            x,
            train.scores,
            train.costs,
            data.models,
            generalist,
            config,
            k_fixed,
            progress=not args.no_progress,
            refine_embeddings=x_refine,
            domains=None if args.no_domains else train.domains,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    info = {
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
        "domain_level": "off (--no-domains)" if args.no_domains else (
            f"weight {result.domains.weight} over {len(result.domains.names)} domains"
            + (f", per domain and cluster (cell strength {result.domains.cell_strength:g})"
               if result.domains.cell_estimate is not None else ", per domain")
            if result.domains is not None
            else "not used (fewer than 2 domains, or weight 0 measured best)"),
    }

    def human(directory: Path) -> None:
        from calibration.plots import heatmap, selection_plot
        from calibration.report import calibration_report

        t = result.table
        heatmap(
            directory / "clusters.png",
            t.estimate,
            data.models,
            "Shrunk accuracy per cluster (train); outlined = cliff",
            t.cliff,
            t.counts[:, 0],
        )
        selection_plot(directory / "selection.png", result.selection, info["objective"], result.k)
        (directory / "report.md").write_text(
            calibration_report(result, data.models, generalist, info, command)
        )

    data_info = {
        k: info[k]
        for k in (
            "source",
            "sha256",
            "rows",
            "train_rows",
            "split",
            "split_method",
            "holdout_domains",
            "cost_source",
            "prices",
            "prices_sha256",
        )
    }
    write_artifact_from(args.out, data, generalist, encoder, result, data_info, config, human,
                        refine_encoder.name if refine_encoder is not None and x_refine is not None else None)
    print(
        f"artifact written: {args.out} (k={result.k}, generalist {generalist}, "
        f"{time.monotonic() - started:.0f} s)"
    )
    return 0


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


def add_ood_method_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ood-method", choices=("auto", "knn", "domains"), default="auto",
        help="out-of-domain detector: 'domains' (distance to the calibration domains' means, or the domain "
             "classifier's energy; needs rows from >= 2 domains), 'knn' (distance to the nearest train queries), "
             "'auto' (domains where the rows name >= 2 and no refine tier is asked for; default)")
    parser.add_argument(
        "--ood-margin", type=float, default=FitConfig.ood_margin,
        help="with the domain detector: the estimated accuracy a specialist must gain over the generalist at the "
             "OOD line, in [0, 1] (0: the line alone; default %(default)s)")
    parser.add_argument(
        "--ood-margin-from", type=float, default=FitConfig.ood_margin_from,
        help="the OOD score (threshold units: 0 = held-out median, 1 = the line) where that margin starts rising, "
             "in [0, 1) (default %(default)s)")
    parser.add_argument(
        "--ood-margin-score", choices=MARGIN_SCORES, default=FitConfig.ood_margin_score,
        help="the score the margin reads: the detector's ('max', its larger part) or the energy part alone "
             "(default %(default)s)")


def add_domain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain-weight", default="auto",
                        help="share of the domain level in the blend, in [0, 1], or 'auto' (chosen on a validation "
                        "slice)")
    parser.add_argument("--domain-cells", type=float, default=FitConfig.domain_cell_strength,
                        help="the domain level per domain and cluster, each cell shrunk toward its domain's row by "
                        "this many pseudo-queries; 0: per domain alone, as before format 5 (default %(default)g)")


def domain_options(args: argparse.Namespace) -> dict[str, Any]:
    """``FitConfig``'s ``domain_weight`` (None: 'auto') and ``domain_cell_strength`` from ``--domain-weight`` and
    ``--domain-cells``; ``UsageError`` outside their ranges."""
    weight: float | None = None
    if args.domain_weight != "auto":
        try:
            weight = float(args.domain_weight)
        except ValueError:
            weight = -1.0
        if not 0 <= weight <= 1:
            raise UsageError(f"--domain-weight must be a number in [0, 1] or 'auto', got {args.domain_weight!r}")
    if not 0 <= args.domain_cells < float("inf"):
        raise UsageError(f"--domain-cells must be a number >= 0, got {args.domain_cells!r}")
    return {"domain_weight": weight, "domain_cell_strength": args.domain_cells}


def ood_options(args: argparse.Namespace) -> dict[str, Any]:
    """``FitConfig`` fields from the options ``add_ood_method_option`` adds (calibrate and leave-one-domain-out)."""
    return {"ood_method": args.ood_method, "ood_margin": args.ood_margin, "ood_margin_from": args.ood_margin_from,
            "ood_margin_score": args.ood_margin_score}


def check_selection_folds(folds: int) -> None:
    """``--selection-folds`` of ``calibrate`` and of ``eval --leave-one-domain-out``."""
    if not 1 <= folds <= 20:
        raise UsageError(f"--selection-folds must be an integer from 1 to 20, got {folds}")


def choose_generalist(train: ScoreMatrix, name: str | None) -> tuple[str, str]:
    if name is not None:
        if name not in train.models:
            raise UsageError(f"--generalist {name!r} is not one of the models: {', '.join(train.models)}")
        return name, "named with --generalist"
    return train.best_model(), "best overall train accuracy"


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


def evaluate(args: argparse.Namespace, encoder: Encoder | None, refine_encoder: Encoder | None = None) -> int:
    from calibration.evaluation import AvengersBaseline
    from calibration.evaluation import evaluate as run_eval
    from calibration.plots import cliff_plot, frontier_plot, heatmap
    from calibration.report import eval_report
    from router.policy import Policy

    command = "triage " + shlex.join(args.argv)
    if args.artifact is None:
        raise UsageError("--artifact is required (or --leave-one-domain-out)")
    encoder = encoder or encoder_from(args)
    artifact = Artifact.load(args.artifact, embedder_name=encoder.name, embedder_dim=encoder.dim,
                             embedder_weights=weights_of(encoder))
    if artifact.refine is not None:
        refine_encoder = refine_encoder or make_encoder(args.threads)
        if refine_encoder.name != artifact.refine.embedder_name:
            raise UsageError(f"the artifact's refine tier needs {artifact.refine.embedder_name!r}")
    data, pricing = priced_scores(args.data, args.prices, "eval")
    if data.models != artifact.models:
        raise UsageError(
            f"the data's models differ from the artifact's: {sorted(set(data.models) ^ set(artifact.models))}"
        )
    recorded = artifact.manifest.get("data", {})
    if recorded.get("sha256") not in (None, data.fingerprint):
        print(
            "triage eval: warning: the data file differs from the one the artifact was fitted on",
            file=sys.stderr,
        )
    cost_mismatch = pricing_mismatch(artifact.manifest, data.cost_source, pricing)
    if cost_mismatch is not None:
        print(f"triage eval: WARNING: {cost_mismatch}", file=sys.stderr)
    holdout = (
        _domains(args.holdout_domains)
        if args.holdout_domains is not None
        else set(recorded.get("holdout_domains", []))
    )
    not_fit = ~data.mask_split(args.split)
    ood_mask = data.mask_domains(holdout) | data.mask_split("ood_or_unsplit")
    test = data.subset(not_fit & ~ood_mask)
    ood = data.subset(ood_mask)
    train = fit_rows(data, args.split, holdout)
    if len(test) == 0:
        raise UsageError("no in-domain rows outside the fitted split to evaluate on")
    cache = EmbeddingCache(encoder, args.cache_dir)
    progress = not args.no_progress
    train_x = cache.embed(train.queries, progress=progress)
    test_x = cache.embed(test.queries, progress=progress)
    ood_x = cache.embed(ood.queries, progress=progress) if len(ood) else None
    test_x2 = ood_x2 = None
    if artifact.refine is not None and refine_encoder is not None:
        refine_cache = EmbeddingCache(refine_encoder, args.cache_dir)
        test_x2 = refine_cache.embed(test.queries, progress=progress)
        ood_x2 = refine_cache.embed(ood.queries, progress=progress) if len(ood) else None
    baseline = AvengersBaseline.fit(train_x, train.scores, train.costs, artifact.k)
    policy = Policy(artifact)
    result = run_eval(
        policy,
        data.models,
        test_x,
        test.scores,
        test.costs,
        baseline,
        ood_x,
        ood.scores if len(ood) else None,
        ood.costs if len(ood) else None,
        test_refine=test_x2,
        ood_refine=ood_x2,
        test_domains=test.domains,
        domain_best=domain_best(train, test.domains),
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    frontier_plot(
        out / "frontier.png", result, f"{data.source_name}: accuracy vs cost on {len(test)} test rows"
    )
    clusters = result["clusters"]
    per_cluster = np.array(
        [
            test.scores[clusters == c].mean(axis=0)
            if (clusters == c).any()
            else np.full(len(data.models), np.nan)
            for c in range(artifact.k)
        ]
    )
    counts = np.array([(clusters == c).sum() for c in range(artifact.k)], dtype=float)
    heatmap(
        out / "cluster_accuracy.png",
        per_cluster,  # a cluster no test row fell in stays NaN: drawn empty, not as 0 %
        data.models,
        "Test accuracy per cluster (outlined = cliff from calibration)",
        artifact.cliff,
        counts,
    )
    all_ood = result["in_domain_ood_scores"]
    all_scores = test.scores
    if "ood_scores" in result:
        all_ood = np.concatenate([all_ood, result["ood_scores"]])
        all_scores = np.concatenate([test.scores, ood.scores])
    cliff_plot(out / "cliff.png", all_ood, all_scores, data.models, artifact.generalist, ood_axis(artifact),
               sorted(set(ood.domains)))
    info = {
        "k": artifact.k,
        "generalist": artifact.generalist,
        "embedder": artifact.embedder_name + (f" (refine tier: {artifact.refine.embedder_name})"
                                              if artifact.refine is not None else ""),
        "rows": f"split != {args.split!r}, excluding held-out domains",
        "cost_source": data.cost_source + (f" ({pricing.describe()})" if pricing.path is not None else ""),
        "ood_rows": ", ".join(sorted(set(ood.domains))) or "none",
    }
    if cost_mismatch is not None:
        info["cost_mismatch"] = cost_mismatch
    (out / "report.md").write_text(eval_report(result, command, info))
    public = {k: v for k, v in result.items() if k not in ("in_domain_ood_scores", "ood_scores", "clusters")}
    public["info"] = info
    (out / "report.json").write_text(json.dumps(public, indent=1, default=float) + "\n")
    summary = (
        f"knob1 {result['triage'][-1]['accuracy']:.4f} vs best single {result['best_single']} "
        f"{result['single'][result['best_single']]['accuracy']:.4f}"
    )
    if "aiq" in result:
        summary += f"; AIQ triage {result['aiq']['triage']:.4f} vs avengers {result['aiq']['avengers']:.4f}"
    if "ood" in result:
        summary += f"; OOD AUROC {result['ood']['auroc']:.4f}"
    print(summary)
    return 0
