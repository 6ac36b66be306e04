"""Calibration's encoders and their embedding cache on disk, keyed by embedder name and sha256 of the text.

``encoder_settings(kind, ...)`` says which router encoder a ``--embedder`` choice means; the encoder itself comes
from the router's one factory (``router.embedding.load_encoder``), so calibration embeds exactly as the router
does (the same window cut included).

Calibration, evaluation and leave-one-domain-out all embed the same queries; embedding 20k queries takes
minutes on two cores, so each vector is computed once per embedder and kept in one ``.npz`` per embedder.
The key includes the embedder name so a different model can never serve stale vectors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from router.settings import EmbedderSettings

Vectors = npt.NDArray[np.float32]
# ``--embedder`` choices: the router's backends, and int8 (the onnx backend on the dynamic-int8 export).
KINDS = ("minilm", "openvino", "int8", "static")


class Encoder(Protocol):
    name: str
    dim: int
    max_tokens: int  # the routing window

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> Vectors: ...


def encoder_settings(kind: str, threads: int, onnx_model: Path, int8_model: Path,
                     static_model: Path, window: int | None = None) -> EmbedderSettings:
    """The router's embedder settings for a ``--embedder`` choice (``KINDS``), reading ``window`` tokens of a
    query (None: the router's default)."""
    from router.embedding import EmbedderError
    from router.embedding.onnx import read_meta

    windowed = {} if window is None else {"window": window}
    if kind == "minilm":
        return EmbedderSettings(backend="torch", threads=threads, **windowed)
    if kind == "openvino":
        return EmbedderSettings(backend="openvino", onnx_path=str(onnx_model), threads=threads, **windowed)
    if kind == "int8":
        meta = read_meta(int8_model)
        if meta is None:
            raise EmbedderError(f"no int8 ONNX model in {int8_model.name!r} "
                                "(run: python -m router.embedding_tools.export --int8-out DIR)")
        return EmbedderSettings(backend="onnx", name=str(meta["name"]), onnx_path=str(int8_model), threads=threads,
                                **windowed)
    if kind == "static":
        return EmbedderSettings(backend="static", static_path=str(static_model), threads=threads)
    raise EmbedderError(f"unknown embedder {kind!r} (choose from {', '.join(KINDS)})")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "triage" / "embeddings"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """``cache.embed(texts)`` returns unit-norm vectors, embedding only the texts not seen before."""

    def __init__(self, encoder: Encoder, cache_dir: Path | None = None) -> None:
        self.encoder = encoder
        self.dir = cache_dir or default_cache_dir()
        # An encoder that computes the same model's vectors another way (OpenVINO in bfloat16) names a variant.
        name = "_".join(filter(None, (encoder.name, getattr(encoder, "variant", ""))))
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        self.file = self.dir / f"{safe}-{encoder.dim}.npz"

    def _read(self) -> dict[str, Vectors]:
        if not self.file.exists():
            return {}
        try:
            with np.load(self.file, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is only a cache: re-embed
        if vectors.ndim != 2 or vectors.shape[1] != self.encoder.dim:
            return {}
        return {str(k): v for k, v in zip(keys, vectors, strict=True)}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (calibrate, eval and LODO may run side by side)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{self.file.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, fresh: dict[str, Vectors]) -> None:
        with self._locked():
            # Merge with what is on disk now, not with what we read earlier: another process may have
            # added vectors meanwhile, and a plain overwrite would silently drop them.
            known = self._read()
            known.update(fresh)
            keys = np.array(list(known), dtype="U64")
            vectors = np.stack(list(known.values())).astype(np.float32)
            # Written aside then renamed: a run killed mid-write leaves the old cache intact.
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".npz.tmp")
            os.close(fd)
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vectors)
            os.replace(tmp, self.file)

    def embed(self, texts: list[str], progress: bool = True) -> Vectors:
        known = self._read()
        keys = [text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            by_key = {k: t for k, t in zip(keys, texts, strict=True)}
            vectors = self.encoder.encode([by_key[k] for k in missing], progress=progress)
            fresh = dict(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
            known.update(fresh)
            self._write(fresh)
        out = np.stack([known[k] for k in keys]) if keys else np.zeros((0, self.encoder.dim), np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)
