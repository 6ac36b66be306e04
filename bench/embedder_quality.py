"""What a faster embedder costs in routing quality: ``triage calibrate`` + ``triage eval`` on every shared
dataset with each embedder, and leave-one-domain-out on RouterDC, side by side.

    .venv/bin/python -m bench.embedder_quality [--out var/bench/quality] [--datasets routerdc,llmrouter,...]

Embedders: ``minilm`` (all-MiniLM-L6-v2: the torch and ONNX backends, same vectors), ``openvino`` (the
same model on OpenVINO in bfloat16, calibrated and evaluated on its own vectors), ``openvino-serving`` (the
deployed combination: the artifact calibrated with ``minilm``, the test queries embedded by OpenVINO), ``int8`` (its
dynamic-int8 ONNX copy, calibrated on its own vectors), ``static`` (the model2vec
table distilled from it; OOD by the static vectors alone) and ``tiered`` (static for clusters, table and most
OOD calls; MiniLM re-scores the queries whose static OOD score is in the upper half of held-out in-domain
ones). Prints AIQ (datasets with a cost dimension), accuracy at knob 1, OOD AUROC where the eval has
held-out domains, the share of in-domain test queries the tiered router refined, and the differences to
MiniLM. The issue's rule: a change that alters routing keeps AIQ and accuracy within 0.5 points and OOD
AUROC within 0.01. Needs ``models/minilm-static`` (``python -m router.embedding_tools.distil --out ...``) and
``models/minilm-onnx-int8`` (``python -m router.embedding_tools.export --int8-out ...``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.harness.datasets import DATASETS, ROOT, ROUTERDC_GENERALIST
from bench.harness.stack import CALIBRATE_FLAGS, DATA

# Configurations that serve another configuration's artifact: name -> (artifact's configuration, eval flags).
SERVING: dict[str, tuple[str, tuple[str, ...]]] = {"openvino-serving": ("minilm", ("--embedder", "openvino"))}
CONFIGS = (*CALIBRATE_FLAGS, *SERVING)


def run_one(name: str, spec: dict[str, Any], embedder: str, out: Path, generalist: str | None = None) -> dict[str, Any]:
    from calibration.cli import main as triage

    data = str(ROOT / spec["data"])
    prices = ["--prices", spec["prices"]] if "prices" in spec else []
    calibrated, eval_flags = SERVING.get(embedder, (embedder, ()))
    art, ev = out / f"{name}-{calibrated}-art", out / f"{name}-{embedder}-eval"
    flags = CALIBRATE_FLAGS[calibrated]
    eval_flags = eval_flags or tuple(f for f in flags if f != "--refine-ood")
    if embedder in SERVING:
        if not (art / "manifest.json").exists():
            raise RuntimeError(f"{embedder} serves the {calibrated} artifact: list {calibrated} before it")
    elif triage(["calibrate", "--data", data, "--out", str(art), "--no-progress", *prices,
                 *(["--generalist", generalist] if generalist else []), *flags]):
        raise RuntimeError(f"calibrate {name} {embedder} failed")
    if triage(["eval", "--artifact", str(art), "--data", data, "--out", str(ev), "--no-progress", *prices,
               *eval_flags]):
        raise RuntimeError(f"eval {name} {embedder} failed")
    report = json.loads((ev / "report.json").read_text())
    row = {"knob1": report["triage"][-1]["accuracy"] * 100, "aiq": None, "auroc": None,
           "refined": report.get("refined_rate")}
    if "aiq" in report:
        row["aiq"] = report["aiq"]["triage"] * 100
    if "ood" in report:
        row["auroc"] = report["ood"]["auroc"]
    return row


def run_lodo(embedder: str, out: Path, generalist: str) -> dict[str, dict[str, Any]]:
    from calibration.lodo import main as lodo

    flags = CALIBRATE_FLAGS[embedder]
    target = out / f"lodo-{embedder}"
    if lodo(["--data", DATA, "--out", str(target), "--generalist", generalist,
             "--no-progress", *flags]):
        raise RuntimeError(f"lodo {embedder} failed")
    report = json.loads((target / "lodo.json").read_text())
    return {d: r for d, r in report["domains"].items() if "auroc" in r}


def fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedder_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("var/bench/quality"))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--embedders", default=",".join(CONFIGS))
    parser.add_argument("--no-lodo", action="store_true")
    parser.add_argument("--routerdc-generalist", default=ROUTERDC_GENERALIST,
                        help="RouterDC's generalist, in its calibrations and its leave-one-domain-out")
    args = parser.parse_args(argv)
    embedders = args.embedders.split(",")
    lines = ["| dataset | embedder | AIQ | Δ AIQ | acc knob 1 | Δ acc | OOD AUROC | Δ AUROC | refined |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in args.datasets.split(","):
        generalist = args.routerdc_generalist if name == "routerdc" else None
        rows = {e: run_one(name, DATASETS[name], e, args.out, generalist) for e in embedders}
        base = rows.get("minilm")
        for e, row in rows.items():
            def delta(key: str, digits: int, row: dict[str, Any] = row, e: str = e,
                      base: dict[str, Any] | None = base) -> str:
                if base is None or row[key] is None or base[key] is None or e == "minilm":
                    return ""
                return f"{row[key] - base[key]:+.{digits}f}"
            lines.append(f"| {name} | {e} | {fmt(row['aiq'], 2)} | {delta('aiq', 2)} | {row['knob1']:.2f} | "
                         f"{delta('knob1', 2)} | {fmt(row['auroc'], 4)} | {delta('auroc', 4)} | "
                         f"{fmt(row['refined'] and row['refined'] * 100, 0)}{'%' if row['refined'] else ''} |")
        print("\n".join(lines[-len(rows):]), flush=True)
    if not args.no_lodo:
        lodo = {e: run_lodo(e, args.out, args.routerdc_generalist) for e in embedders if e not in SERVING}
        lines += ["", "Leave-one-domain-out on RouterDC: OOD AUROC of each held-out domain against the others",
                  "", "| domain | " + " | ".join(lodo)
                  + " | routed − generalist (" + " / ".join(lodo) + ") |",
                  "|---|" + "---|" * (len(lodo) + 1)]
        for domain in lodo[next(iter(lodo))]:
            aurocs = " | ".join(f"{lodo[e][domain]['auroc']:.4f}" for e in lodo)
            deltas = " / ".join(f"{lodo[e][domain]['delta_vs_generalist'] * 100:+.2f}" for e in lodo)
            lines.append(f"| {domain} | {aurocs} | {deltas} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
