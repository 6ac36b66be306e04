"""A static embedding model distilled from the packaged MiniLM: a table lookup and a mean per query.

The table is written by ``python -m router.embedding_tools.distil --out models/minilm-static`` (model2vec:
every vocabulary token passed through the transformer once, reduced by PCA, weighted by token frequency).
Serving it is a tokenizer call and a mean of table rows, ~50x faster than the transformer; it routes as well
on the clusters and separates out-of-domain queries less well, which is why an artifact fitted on it can carry
a refine tier (router/decider.py, docs/artifact.md).

Its vectors are not MiniLM's: it has its own ``name`` (``all-MiniLM-L6-v2-static<dims>``) and dimension,
and an artifact must be calibrated with it (``triage calibrate --embedder static``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from router.embedding.base import EmbedderError, Vectors, clip
from router.settings import EmbedderSettings

META_FILE = "triage.json"
DISTIL_HINT = "run: python -m router.embedding_tools.distil --out <dir>"


def static_name(base: str, dims: int) -> str:
    return f"{base}-static{dims}"


class StaticEmbedder:
    """A model2vec static model on numpy; unit-norm float32 vectors."""

    def __init__(self, settings: EmbedderSettings) -> None:
        from model2vec import StaticModel  # imported only when a model is built

        if settings.static_path is None:
            raise EmbedderError(f"the static embedder backend needs static_path ({DISTIL_HINT})")
        path = Path(settings.static_path)
        if not (path / META_FILE).is_file():
            raise EmbedderError(f"no static embedding model in {path.name!r} ({DISTIL_HINT})")
        try:
            meta: dict[str, Any] = json.loads((path / META_FILE).read_text())
            self.name: str = str(meta["name"])
            self.dim: int = int(meta["dim"])
        except (ValueError, KeyError, TypeError):
            raise EmbedderError(f"{META_FILE} in {path.name!r} is not valid ({DISTIL_HINT})") from None
        self._model: Any = StaticModel.from_pretrained(str(path))
        self.max_tokens: int = settings.static_max_tokens

    def encode(self, texts: list[str], batch_size: int = 1024, progress: bool = False) -> Vectors:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = np.asarray(
            self._model.encode([clip(text, self.max_tokens) for text in texts], batch_size=batch_size,
                               max_length=self.max_tokens, show_progress_bar=progress, use_multiprocessing=False),
            dtype=np.float32,
        ).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # A text of unknown tokens only is the zero vector: it stays zero rather than becoming NaN.
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
