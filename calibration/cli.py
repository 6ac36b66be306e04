"""``triage calibrate`` and ``triage eval``: ``main(argv) -> int`` (0 ok, 2 bad input or usage).

    triage calibrate --data SCORES.jsonl --out DIR [--split train] [--generalist NAME] [--clusters K|auto]
                     [--prices PRICES.json] [--holdout-domains a,b]
    triage calibrate --live --config FILE --gold GOLD.jsonl --out DIR [--limit N] [--concurrency C]
    triage eval --artifact DIR --data SCORES.jsonl --out REPORT_DIR [--prices PRICES.json]
    triage eval --leave-one-domain-out --data SCORES.jsonl --out DIR [--generalist NAME]  (lodo.py)

Bad input (a row without a score, an unknown model, an empty query, a NaN cost, an unknown gold metric) stops
the run with a message naming the row and field, exit code 2, and nothing written.

The commands live beside it: calibrate_command.py, eval_command.py, lodo.py; the options they share,
options.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from calibration import lodo
from calibration.calibrate_command import calibrate
from calibration.data import DataError
from calibration.embeddings import Encoder
from calibration.eval_command import evaluate_artifact
from calibration.fit import FitConfig
from calibration.options import UsageError, add_domain_options, add_embedder_options, add_ood_method_option
from router.artifact import ArtifactError


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


def main(argv: list[str], encoder: Encoder | None = None, client: Any = None,
         refine_encoder: Encoder | None = None) -> int:
    """``encoder``, ``refine_encoder`` (MiniLM for a refine tier) and ``client`` (an ``httpx.AsyncClient`` for
    --live) are injectable for tests."""
    if argv[:1] == ["eval"] and "--leave-one-domain-out" in argv:
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
        return evaluate_artifact(args, encoder, refine_encoder)
    except (DataError, ArtifactError, UsageError) as exc:
        print(f"triage {args.command}: error: {exc}", file=sys.stderr)
        return 2
