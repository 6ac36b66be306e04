"""The command-line options ``triage calibrate``, ``triage eval`` and ``eval --leave-one-domain-out`` share, and
what they build: the encoder, ``FitConfig``'s fields, the generalist and the fitted rows.

A value outside its range is a ``UsageError`` (exit code 2, nothing written).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, cast

from calibration.data import ScoreMatrix
from calibration.embeddings import Encoder
from calibration.fit import FitConfig
from router.ood import MARGIN_SCORES


class UsageError(Exception):
    pass


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
    parser.add_argument("--window", type=int, default=None, metavar="TOKENS",
                        help="the routing window: embed only the first TOKENS tokens of each query ([CLS] and [SEP] "
                        "included; the MiniLM backends); the artifact records it and a router must read the same "
                        "(embedder.window). Default: the router's default window; triage eval: the artifact's")
    parser.add_argument("--onnx-model", type=Path, default=ONNX_MODEL,
                        help="--embedder openvino: dir written by python -m router.embedding_tools.export")
    parser.add_argument("--static-model", type=Path, default=STATIC_MODEL,
                        help="--embedder static: dir written by python -m router.embedding_tools.distil")
    parser.add_argument("--int8-model", type=Path, default=INT8_MODEL,
                        help="--embedder int8: dir written by python -m router.embedding_tools.export --int8-out")


def encoder_from(args: argparse.Namespace) -> Encoder:
    """The encoder the embedder options (``add_embedder_options``) ask for."""
    return make_encoder(args.threads, args.embedder, args.static_model, args.int8_model, args.onnx_model,
                        window=args.window)


def make_encoder(threads: int, kind: str = "minilm", static_model: Path | None = None,
                 int8_model: Path | None = None, onnx_model: Path | None = None,
                 window: int | None = None) -> Encoder:
    """The embedder ``kind`` names, reading ``window`` tokens of a query (None: the router's default window); a
    model that cannot be loaded is the caller's ``UsageError``."""
    from calibration.embeddings import encoder_settings
    from router.embedding import EmbedderError, load_encoder

    if window is not None and window < 8:
        raise UsageError("--window must be at least 8 tokens")
    try:
        settings = encoder_settings(kind, threads, onnx_model or ONNX_MODEL, int8_model or INT8_MODEL,
                                    static_model or STATIC_MODEL, window)
        # Every registered encoder also takes calibration's ``progress=``.
        return cast("Encoder", load_encoder(settings))
    except EmbedderError as exc:
        raise UsageError(str(exc)) from None


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


def clusters_option(text: str) -> int | None:
    """``--clusters``: a positive k, or None for 'auto'."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--clusters must be a positive integer or 'auto', got {text!r}")
    return int(text)


def domains_option(text: str | None) -> set[str]:
    """A comma-separated list of domains (``--holdout-domains``)."""
    return {d.strip() for d in (text or "").split(",") if d.strip()}


def fit_rows(data: ScoreMatrix, split: str, holdout: set[str]) -> ScoreMatrix:
    """The rows a fit reads: ``split``'s, outside the held-out domains."""
    rows = data.subset(data.mask_split(split) & ~data.mask_domains(holdout))
    if len(rows) == 0:
        raise UsageError(f"no rows with split {split!r} outside the held-out domains")
    return rows
