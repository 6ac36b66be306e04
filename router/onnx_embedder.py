"""Query embeddings on onnxruntime: the same vectors as ``router.embedder.Embedder``, without torch.

``OnnxEmbedder`` loads a directory written by ``python -m router.onnx_export`` (``model.onnx``, the
tokenizer, ``export.json``). The graph is the whole sentence-transformers pipeline (transformer, mean
pooling, L2 normalisation) of the same weights, so its vectors match the torch embedder's to float error
(tests/router/test_onnx_embedder.py checks < 1e-4 on real routing queries) and it carries the same
``name``: a calibration artifact made with either backend serves with the other.

Tokenisation matches sentence-transformers: lower-cased WordPiece, ``[CLS] ... [SEP]``, truncated to the
model's ``max_seq_length`` (256 tokens for all-MiniLM-L6-v2), padded per batch. Texts are sorted by length
before batching so that a batch pads little.

``load_encoder(settings, backend, onnx_path)`` picks the backend for the app's lifespan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from router.embedder import Embedder, EmbedderError, TextEncoder, Vectors
from router.settings import EmbedderSettings

MODEL_FILE = "model.onnx"
META_FILE = "export.json"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_HINT = "run: python -m router.onnx_export --out <dir>"
# Attention memory grows with batch * width^2: a batch of long texts is cut down to this many cells per head
# (64 texts of 128 tokens), which bounds the peak (and so the RSS, which glibc never gives back) near 200 MiB.
MAX_ATTENTION_CELLS = 64 * 128 * 128


class OnnxEmbedder:
    """An exported sentence-transformers model on onnxruntime (CPU); unit-norm float32 vectors."""

    # Each batch is padded to a multiple of this many tokens (1: to its longest text).
    pad_multiple = 1

    def __init__(self, path: str | Path, settings: EmbedderSettings | None = None) -> None:
        settings = settings or EmbedderSettings()
        import json

        from tokenizers import Tokenizer

        path = Path(path)
        if not (path / MODEL_FILE).is_file() or not (path / META_FILE).is_file():
            raise EmbedderError(f"no ONNX embedding model in {path.name!r} ({EXPORT_HINT})")
        try:
            meta: dict[str, Any] = json.loads((path / META_FILE).read_text())
        except ValueError:
            raise EmbedderError(f"{META_FILE} in {path.name!r} is not valid JSON ({EXPORT_HINT})") from None
        if meta.get("name") != settings.name:
            # The name is the artifact's compatibility key: only the weights it names may carry it.
            raise EmbedderError(f"the ONNX model in {path.name!r} is {meta.get('name')!r}, not {settings.name!r}")
        self.name: str = settings.name
        self.dim: int = int(meta["dim"])
        self.max_seq_length: int = int(meta["max_seq_length"])

        # A quantised copy's vectors change with its quantisation: its file hash names them, in calibration's
        # embedding cache (name + variant) and in the artifact (router.embedder.weights_of), so an artifact
        # fitted on one copy is refused by a router with another. An fp32 export shares torch's (same vectors).
        self.weights: str = str(meta["onnx_sha256"])[:12] if "quantized_from" in meta else ""
        self.variant: str = self.weights

        self._open(path / MODEL_FILE, settings)

        tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        tokenizer.no_padding()  # tokenizer.json pads to a fixed 128; we pad each batch to its longest text
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        self._tokenizer: Any = tokenizer

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> Vectors:
        """Unit-norm vectors, shape (len(texts), dim). ``progress`` is accepted for ``Embedder``'s signature."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # One text at a time: encode_batch would start tokenizers' own thread pool beside the capped model.
        ids = [self._tokenizer.encode(text).ids for text in texts]
        chunk: list[int] = []
        for i in sorted(range(len(texts)), key=lambda i: len(ids[i])):  # by length: a batch pads little
            if chunk and (len(chunk) == batch_size or (len(chunk) + 1) * len(ids[i]) ** 2 > MAX_ATTENTION_CELLS):
                out[chunk] = self._run([ids[j] for j in chunk])
                chunk = []
            chunk.append(i)
        out[chunk] = self._run([ids[j] for j in chunk])
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
        width = max(len(ids) for ids in batch)
        width = -(-width // self.pad_multiple) * self.pad_multiple  # [PAD] tokens are masked out of the vector
        input_ids = np.zeros((len(batch), width), dtype=np.int64)  # [PAD] is id 0
        attention_mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": np.zeros_like(input_ids)}
        return self._infer(feeds)


def load_encoder(settings: EmbedderSettings, backend: Literal["torch", "onnx", "openvino", "static"] = "torch",
                 onnx_path: str | Path | None = None) -> TextEncoder:
    """The embedding model the settings ask for: sentence-transformers on torch, its ONNX export (on
    onnxruntime or OpenVINO), or the static model distilled from it."""
    if backend == "static":
        if settings.static_path is None:
            raise EmbedderError("the static embedder backend needs static_path "
                                "(run: python -m router.static_embedder --out <dir>)")
        from router.static_embedder import StaticEmbedder

        return StaticEmbedder(settings.static_path, settings)
    if backend in ("onnx", "openvino"):
        if onnx_path is None:
            raise EmbedderError(f"the {backend} embedder backend needs an exported model directory ({EXPORT_HINT})")
        if backend == "openvino":
            from router.openvino_embedder import OpenVinoEmbedder

            return OpenVinoEmbedder(onnx_path, settings)
        return OnnxEmbedder(onnx_path, settings)
    return Embedder(settings)
