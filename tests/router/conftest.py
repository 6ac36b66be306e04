"""Fixtures of the embedder tests: the ONNX export (made once, reused across sessions) and real queries."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from router.embedding_tools.export import export

REPO = Path(__file__).resolve().parents[2]
EXPORT_DIR = REPO / "var" / "cache" / "onnx" / "minilm"  # reused across sessions while the weights are the same


@pytest.fixture(scope="session")
def onnx_dir() -> Path:
    return export(EXPORT_DIR)


@pytest.fixture(scope="session")
def routing_queries(shared_data: Path) -> list[str]:
    """300 real routing queries, every length the data has (the longest pass 256 tokens and are truncated)."""
    text = (shared_data / "routing" / "routerdc_7model.jsonl").read_text()
    queries = sorted({json.loads(line)["query"] for line in text.split("\n") if line.strip()})
    return random.Random(7).sample(queries, 290) + sorted(queries, key=len)[-10:]
