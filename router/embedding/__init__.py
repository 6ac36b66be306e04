"""Query encoders: the ``TextEncoder`` protocol (``base``), one factory (``registry.load_encoder``), and the
backends beside them: ``torch`` (sentence-transformers), ``onnx``, ``openvino``, ``static``.

Set-up tools that write the models these read (the ONNX export, the int8 copy, the static table) live outside
the request path, in ``router.embedding_tools``.
"""

from router.embedding.base import (
    EmbedderError,
    TextEncoder,
    Vectors,
    char_bound,
    clip,
    default_model_path,
    identity,
    text_digest,
    weights_of,
)
from router.embedding.registry import ENCODERS, load_encoder

__all__ = ["ENCODERS", "EmbedderError", "TextEncoder", "Vectors", "char_bound", "clip", "default_model_path",
           "identity", "load_encoder", "text_digest", "weights_of"]
