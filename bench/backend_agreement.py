"""Does an artifact calibrated on torch's vectors decide the same when served on OpenVINO (bfloat16)?

    .venv/bin/python -m bench.backend_agreement --artifact DIR [--data FILE] [--knobs 0,0.5,1]

Embeds the data file's rows not used for fitting (test and out-of-domain) with the torch encoder and with the
OpenVINO one, both at the artifact's routing window (vectors cached as calibration caches them), and prints the
lowest cosine between the two and the share of identical decisions at each knob.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.harness.stack import DATA


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backend_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", required=True, type=Path)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--knobs", default="0,0.5,1")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from calibration.embeddings import EmbeddingCache
    from calibration.options import make_encoder
    from router.artifact import Artifact, recorded_window
    from router.embedding import identity
    from router.policy import Policy

    rows = [json.loads(line) for line in Path(args.data).read_text().split("\n") if line.strip()]
    queries = [r["query"] for r in rows if r.get("split") != "train"]
    window = recorded_window(args.artifact)
    torch = make_encoder(args.threads, window=window)
    openvino = make_encoder(args.threads, kind="openvino", window=window)
    policy = Policy(Artifact.load(args.artifact, **identity(torch)))
    reference = EmbeddingCache(torch).embed(queries, progress=False)
    served = EmbeddingCache(openvino).embed(queries, progress=False)
    print(f"{len(queries)} rows, window {torch.max_tokens}; lowest cosine torch vs OpenVINO "
          f"({getattr(openvino, 'precision', '?')}): {float(np.min(np.sum(reference * served, axis=1))):.5f}")
    for knob in (float(k) for k in args.knobs.split(",")):
        same = [a.model == b.model for a, b in zip(policy.decide(reference, knob), policy.decide(served, knob),
                                                   strict=True)]
        print(f"knob {knob:g}: {np.mean(same):.2%} of decisions identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
