"""Query embeddings with sentence-transformers on torch: the reference for the other MiniLM backends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from router.embedding.base import EmbedderError, Vectors, clip, default_model_path, window, window_variant
from router.settings import EmbedderSettings

# The packaged MiniLM's checkpoint carries ``embeddings.position_ids``, a buffer that transformers 5 computes
# instead of loading; its load report calls that key UNEXPECTED, in a table, on every load. Nothing is wrong,
# so that report (and only one naming no other key) is dropped.
BENIGN_KEYS = frozenset({"embeddings.position_ids"})
REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")  # who logs the report


class _BenignLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        keys = {line.split("|")[0].strip() for line in message.splitlines() if "|" in line and "Status" not in line}
        return not keys <= BENIGN_KEYS


def quiet_model_loads() -> None:
    """No progress bar and no benign load report when transformers loads a model (idempotent)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # "Loading weights": a log is no terminal
    for name in REPORT_LOGGERS:
        report = logging.getLogger(name)
        if not any(isinstance(f, _BenignLoadReport) for f in report.filters):
            report.addFilter(_BenignLoadReport())


def load_sentence_transformer(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    quiet_model_loads()
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class Embedder:
    """A sentence-transformers model on the CPU; unit-norm float32 vectors."""

    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        settings = settings or EmbedderSettings()
        import torch  # heavy: imported only when a model is built

        # Co-located with CPU model servers, torch's default threads fight them for the cores.
        torch.set_num_threads(settings.threads)
        path = Path(settings.path) if settings.path else default_model_path()
        if not path.is_dir():
            raise EmbedderError(f"embedding model directory not found for {settings.name!r}")
        self.name = settings.name
        self._model: Any = load_sentence_transformer(path)
        # sentence-transformers 6 renamed the accessor; older versions only have the long name.
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise EmbedderError(f"{settings.name!r} does not report an embedding dimension")
        self.dim = int(dim)
        self.model_tokens = int(self._model.max_seq_length)
        self.max_tokens = window(self.model_tokens, settings.window)
        self._model.max_seq_length = self.max_tokens
        self.variant = window_variant(self.max_tokens, self.model_tokens)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> Vectors:
        vectors = self._model.encode(
            [clip(text, self.max_tokens) for text in texts],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
