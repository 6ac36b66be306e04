"""Session-wide real parts: the embedding model (loaded once) and a calibrated artifact (built once)."""

from __future__ import annotations

import pytest

from router.embedder import Embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()
