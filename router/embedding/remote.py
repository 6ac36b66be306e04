"""Query embeddings from an embedding service: an OpenAI-compatible ``POST {url}/embeddings``.

For routers that outgrow their cores: the model runs once, on a GPU of the pool or a box of its own (vLLM serves
all-MiniLM-L6-v2 as a pooling model), and each router only sends the texts. The service must serve the model
the router's artifact was calibrated with, so the vectors carry the in-process model's ``name``
(tests/router/test_remote_embedder.py checks cosine >= 0.9999 against the in-process vectors).

Texts are cut to the window before they leave (``clip``), and vLLM is asked to truncate at the window as the
in-process tokeniser does (``truncate_prompt_tokens``; ``embedder.remote_truncate: false`` for a server that
refuses the field). A call that fails or takes longer than ``remote_timeout_s`` counts against a circuit
breaker; while it is open, or when a call fails, the in-process fallback encoder (``remote_fallback``, the
ONNX MiniLM by default) embeds instead, so routing goes on at in-process speed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from router.circuit import Circuit
from router.embedding.base import EmbedderError, TextEncoder, Vectors, clip, window
from router.settings import EmbedderSettings

log = logging.getLogger("triage")


class RemoteEmbedder:
    """An embedding service over HTTP, with a circuit breaker and an in-process fallback."""

    def __init__(self, settings: EmbedderSettings, fallback: TextEncoder | None = None,
                 client: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        import httpx

        if not settings.url or not settings.model:
            raise EmbedderError("the remote embedder backend needs url and model (an OpenAI-compatible "
                                "/v1/embeddings service and the model id it serves)")
        self.name: str = settings.name
        self._url = settings.url.rstrip("/") + "/embeddings"
        self._model = settings.model
        self._truncate = settings.remote_truncate
        self._client: Any = client or httpx.Client(timeout=settings.remote_timeout_s)
        self._circuit = Circuit(settings.remote_failures, settings.remote_open_s, clock,
                                on_change=lambda state: log.warning("embedding service circuit %s", state))
        self.fallback = fallback
        self.model_tokens: int = getattr(fallback, "model_tokens", settings.remote_max_tokens)
        self.max_tokens: int = (fallback.max_tokens if fallback is not None
                                else window(settings.remote_max_tokens, settings.window))
        if fallback is not None:
            self.dim: int = fallback.dim
        else:  # no model here to ask: the service says its dimension
            self.dim = int(self._post(["dimension probe"]).shape[1])

    def close(self) -> None:
        self._client.close()

    @property
    def circuit_state(self) -> str:
        return self._circuit.state

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> Vectors:
        texts = [clip(text, self.max_tokens) for text in texts]
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        failure: Exception | None = None
        if self._circuit.allows():
            try:
                vectors = self._post(texts)
            except Exception as exc:  # connection refused, timeout, 5xx, a malformed body: the service failed
                self._circuit.record_failure()
                failure = exc
            else:
                self._circuit.record_success()
                return vectors
        if self.fallback is None:
            raise EmbedderError("the embedding service is unavailable and no fallback is configured") from failure
        return self.fallback.encode(texts)

    def _post(self, texts: list[str]) -> Vectors:
        body: dict[str, Any] = {"model": self._model, "input": texts, "encoding_format": "float"}
        if self._truncate:
            body["truncate_prompt_tokens"] = self.max_tokens
        response = self._client.post(self._url, json=body)
        response.raise_for_status()
        rows = sorted(response.json()["data"], key=lambda row: row["index"])
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts) or (hasattr(self, "dim") and vectors.shape[1] != self.dim):
            raise EmbedderError(f"the embedding service answered shape {vectors.shape} for {len(texts)} texts")
        # Unit norm, as the in-process encoders give (a service may or may not normalise).
        return np.asarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12),
                          dtype=np.float32)

