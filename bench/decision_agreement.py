"""How often OpenVINO's bfloat16 vectors change a routing decision: every test query of every shared dataset,
decided on the same artifact from the torch (fp32) vectors and from OpenVINO's, at knobs 0, 0.5 and 1.

    .venv/bin/python -m bench.decision_agreement [--artifacts var/bench/quality]

The artifacts are the ``minilm`` ones ``python -m bench.embedder_quality`` writes (``<dataset>-minilm-art``,
calibrated on the torch vectors, as ``make run`` does); both sets of vectors go through calibration's embedding
cache. Prints the share of identical decisions (backend and reason) and of identical clusters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.embedder_quality import DATASETS, ROOT
from calibration.cli import ONNX_MODEL, make_encoder

KNOBS = (0.0, 0.5, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decision_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("var/bench/quality"))
    parser.add_argument("--onnx-model", type=Path, default=ONNX_MODEL)
    args = parser.parse_args(argv)
    from calibration.data import load_scores
    from calibration.embeddings import EmbeddingCache
    from router.artifact import Artifact
    from router.policy import Policy

    # Calibration's own encoders (one thread each, as the router runs them).
    fp32 = EmbeddingCache(make_encoder(1))
    bf16 = EmbeddingCache(make_encoder(1, "openvino", onnx_model=args.onnx_model))
    print(f"OpenVINO precision on this CPU: {bf16.encoder.variant}")  # type: ignore[attr-defined]
    print(f"{'dataset':<14}{'knob':>6}{'queries':>9}{'same decision':>15}{'same cluster':>14}")
    for name, spec in DATASETS.items():
        artifact = args.artifacts / f"{name}-minilm-art"
        if not (artifact / "manifest.json").exists():
            print(f"{name}: no artifact in {artifact} (run python -m bench.embedder_quality first)", file=sys.stderr)
            return 2
        policy = Policy(Artifact.load(artifact))
        scores = load_scores(ROOT / spec["data"])
        queries = [q for q, split in zip(scores.queries, scores.splits, strict=True) if split != "train"]
        x32, x16 = fp32.embed(queries, progress=False), bf16.embed(queries, progress=False)
        for knob in KNOBS:
            a, b = policy.decide(x32, knob), policy.decide(x16, knob)
            same = sum((p.model, p.reason) == (q.model, q.reason) for p, q in zip(a, b, strict=True))
            cluster = sum(p.cluster == q.cluster for p, q in zip(a, b, strict=True))
            print(f"{name:<14}{knob:>6.1f}{len(queries):>9}{100 * same / len(queries):>14.2f}%"
                  f"{100 * cluster / len(queries):>13.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
