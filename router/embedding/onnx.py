"""Query embeddings on onnxruntime: the same vectors as the torch encoder (``router.embedding.torch``), no torch.

``OnnxEmbedder`` loads a directory written by ``python -m router.embedding_tools.export`` (``model.onnx``, the
tokenizer, ``export.json``); ``read_meta`` is that format's one reader. The graph is the whole
sentence-transformers pipeline (transformer, mean pooling, L2 normalisation) of the same weights, so its
vectors match the torch encoder's to float error (tests/router/test_onnx_embedder.py checks < 1e-4 on real
routing queries) and it carries the same ``name``: a calibration artifact made with either backend serves
with the other.

Tokenisation matches sentence-transformers: lower-cased WordPiece, ``[CLS] ... [SEP]``, truncated to the
model's ``max_seq_length`` (256 tokens for all-MiniLM-L6-v2), each batch padded to its longest text; which
texts share a batch is ``router.embedding.batching.plan``'s choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.embedding.base import EmbedderError, Vectors, clip, window, window_variant
from router.embedding.batching import padded, plan
from router.settings import EmbedderSettings

FORMAT = 1
MODEL_FILE = "model.onnx"
META_FILE = "export.json"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_HINT = "run: python -m router.embedding_tools.export --out <dir>"


def read_meta(directory: Path) -> dict[str, Any] | None:
    """An export's ``export.json``, or None when the directory is not a complete export."""
    try:
        meta: dict[str, Any] = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not (directory / MODEL_FILE).is_file():
        return None
    return meta


class OnnxEmbedder:
    """An exported sentence-transformers model on onnxruntime (CPU); unit-norm float32 vectors."""

    # Each batch is padded to a multiple of this many tokens (1: to its longest text).
    pad_multiple = 1

    def __init__(self, settings: EmbedderSettings) -> None:
        from tokenizers import Tokenizer

        if settings.onnx_path is None:
            raise EmbedderError(f"the {settings.backend} embedder backend needs onnx_path, an exported model "
                                f"directory ({EXPORT_HINT})")
        path = Path(settings.onnx_path)
        meta = read_meta(path)
        if meta is None:
            raise EmbedderError(f"no ONNX embedding model in {path.name!r} ({EXPORT_HINT})")
        if meta.get("name") != settings.name:
            # The name is the artifact's compatibility key: only the weights it names may carry it.
            raise EmbedderError(f"the ONNX model in {path.name!r} is {meta.get('name')!r}, not {settings.name!r}")
        self.name: str = settings.name
        self.dim: int = int(meta["dim"])
        self.model_tokens: int = int(meta["max_seq_length"])
        self.max_tokens: int = window(self.model_tokens, settings.window)
        self._batch_tokens = settings.batch_tokens

        # A quantised copy's vectors change with its quantisation: its file hash names them, in calibration's
        # embedding cache (name + variant) and in the artifact (router.embedding.weights_of), so an artifact
        # fitted on one copy is refused by a router with another. An fp32 export shares torch's (same vectors).
        self.weights: str = str(meta["onnx_sha256"])[:12] if "quantized_from" in meta else ""
        # A routing window shorter than the model's changes the vectors of longer texts: its own cache entries.
        self.variant: str = "-".join(filter(None, (self.weights, window_variant(self.max_tokens, self.model_tokens))))

        self._open(path / MODEL_FILE, settings)

        tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        tokenizer.no_padding()  # tokenizer.json pads to a fixed 128; we pad each batch to its longest text
        tokenizer.enable_truncation(max_length=self.max_tokens)
        self._tokenizer: Any = tokenizer

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> Vectors:
        """Unit-norm vectors, shape (len(texts), dim); at most ``batch_size`` texts per model call.
        ``progress`` is accepted for the torch encoder's signature."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # One text at a time: encode_batch would start tokenizers' own thread pool beside the capped model.
        ids = [self._tokenizer.encode(clip(text, self.max_tokens)).ids for text in texts]
        for batch in plan([len(row) for row in ids], self._batch_tokens, batch_size, self.pad_multiple):
            out[batch] = self._run([ids[i] for i in batch])
        return out

    def _open(self, model_file: Path, settings: EmbedderSettings) -> None:
        import onnxruntime as ort  # heavy: imported only when a model is built

        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Shapes change with every batch, so the arena would only keep the largest batch's buffers for good.
        options.enable_cpu_mem_arena = False
        # Idle workers must not spin: on a machine shared with CPU model servers they would steal its cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def _infer(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        (vectors,) = self._session.run(["sentence_embedding"], feeds)
        return np.asarray(vectors, dtype=np.float32)

    def _run(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        width = padded(max(len(ids) for ids in batch), self.pad_multiple)  # [PAD] is masked out of the vector
        input_ids = np.zeros((len(batch), width), dtype=np.int64)  # [PAD] is id 0
        attention_mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": np.zeros_like(input_ids)}
        return self._infer(feeds)
