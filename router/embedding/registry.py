"""One factory for every query encoder: ``load_encoder(settings)``, backed by the ``ENCODERS`` registry.

The router's lifespan, ``triage route``, calibration and the benches all build encoders here. Each backend's
class takes the embedder settings and imports its heavy runtime only when built, so the registry costs
nothing to import. Adding a backend adds a module and a line below.
"""

from __future__ import annotations

from collections.abc import Callable

from router.embedding.base import EmbedderError, TextEncoder
from router.embedding.onnx import OnnxEmbedder
from router.embedding.openvino import OpenVinoEmbedder
from router.embedding.remote import RemoteEmbedder
from router.embedding.static import StaticEmbedder
from router.embedding.torch import Embedder
from router.settings import EmbedderSettings


def remote(settings: EmbedderSettings) -> TextEncoder:
    """The embedding service, with the in-process encoder ``remote_fallback`` names behind it."""
    fallback = None if settings.remote_fallback == "none" else load_encoder(settings, settings.remote_fallback)
    return RemoteEmbedder(settings, fallback)


ENCODERS: dict[str, Callable[[EmbedderSettings], TextEncoder]] = {
    "torch": Embedder,  # sentence-transformers
    "onnx": OnnxEmbedder,  # its ONNX export on onnxruntime (same vectors, no torch)
    "openvino": OpenVinoEmbedder,  # that export on OpenVINO (bfloat16 where the CPU has it)
    "static": StaticEmbedder,  # a model2vec table distilled from it (its own vectors)
    "remote": remote,  # an OpenAI-compatible /v1/embeddings service serving the same model, in-process fallback
}


def load_encoder(settings: EmbedderSettings, backend: str | None = None) -> TextEncoder:
    """The encoder ``backend`` (default: ``settings.backend``) names, built from ``settings``."""
    backend = backend or settings.backend
    try:
        factory = ENCODERS[backend]
    except KeyError:
        raise EmbedderError(f"unknown embedder backend {backend!r} (known: {', '.join(ENCODERS)})") from None
    return factory(settings.model_copy(update={"backend": backend}))
