"""The routing window (``embedder.window``): an encoder reads only the first N tokens of a query, calibration
records N in the artifact, and a router or ``triage eval`` reading another window refuses the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router.artifact import Artifact, ArtifactError, recorded_window
from router.embedding import identity
from router.embedding.onnx import OnnxEmbedder
from router.settings import EmbedderSettings
from tests.router.test_artifact import DIM, write_artifact

LONG = ("A farmer has a field of 120 hectares. He plants wheat on two fifths of it, barley on a quarter of what is "
        "left, and leaves the rest fallow for a year so that the soil recovers before the next season's crops. "
        "Meanwhile, in the capital, the parliament debates a law on the export of medieval manuscripts, the "
        "opera house stages a new production of a baroque work, and a football club signs a young goalkeeper "
        "from abroad for a record fee, which the newspapers discuss at length for weeks.")


@pytest.fixture(scope="module")
def full(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(EmbedderSettings(onnx_path=str(onnx_dir)))


@pytest.fixture(scope="module")
def w64(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(EmbedderSettings(onnx_path=str(onnx_dir), window=64))


def test_a_window_reads_only_the_first_tokens(full: OnnxEmbedder, w64: OnnxEmbedder) -> None:
    assert (full.max_tokens, w64.max_tokens, w64.model_tokens) == (256, 64, 256)
    assert len(full._tokenizer.encode(LONG).ids) > 100
    short = "What is the capital of Australia?"
    # A query inside the window: the very same vector.
    np.testing.assert_allclose(w64.encode([short]), full.encode([short]), atol=1e-6)
    # A longer one: only its first 64 tokens count, whatever follows them.
    tail = w64.encode([LONG + " Then he sells the farm and moves to the city to open a bakery."])
    np.testing.assert_allclose(w64.encode([LONG]), tail, atol=1e-6)
    assert float((w64.encode([LONG]) @ full.encode([LONG]).T)[0, 0]) < 0.99
    # Its vectors are their own in calibration's embedding cache.
    assert full.variant == "" and w64.variant == "w64"
    assert identity(w64)["embedder_window"] == 64 and identity(w64)["model_window"] == 256


def test_the_window_must_match_the_artifacts(tmp_path: Path) -> None:
    emb = {"name": "test-embedder", "dim": DIM, "normalisation": "l2"}
    windowed = write_artifact(tmp_path / "w", manifest={"embedder": {**emb, "window": 64}})
    assert recorded_window(windowed) == 64
    assert Artifact.load(windowed, embedder_window=64, model_window=256).embedder_window == 64
    with pytest.raises(ArtifactError, match="first 64 tokens.*reads 256: set embedder.window: 64"):
        Artifact.load(windowed, embedder_window=256, model_window=256)
    # An artifact written before windows were recorded was made from the model's whole window.
    legacy = write_artifact(tmp_path / "legacy")
    assert recorded_window(legacy) is None
    assert Artifact.load(legacy, embedder_window=256, model_window=256).embedder_window == 0
    with pytest.raises(ArtifactError, match="first 256 tokens.*reads 64"):
        Artifact.load(legacy, embedder_window=64, model_window=256)
    bad = write_artifact(tmp_path / "bad", manifest={"embedder": {**emb, "window": "64"}})
    with pytest.raises(ArtifactError, match="embedder.window"):
        Artifact.load(bad)


def test_calibrate_records_the_window_and_eval_reads_it(tmp_path: Path, onnx_dir: Path) -> None:
    """The real MiniLM (ONNX) through the CLI on a small two-domain file: ``--window 48`` is recorded, eval
    embeds with it by default, and eval told another window is refused."""
    from calibration.cli import main as triage

    rows = []
    for i in range(60):
        math_row = {"id": f"m{i}", "domain": "math", "split": "train" if i < 45 else "test",
                    "query": f"Compute {i} times {i + 3} and then add {2 * i}. " + LONG,
                    "scores": {"a": 1.0, "b": 0.0}}
        history = {"id": f"h{i}", "domain": "history", "split": "train" if i < 45 else "test",
                   "query": f"In which year did event number {i} of the Roman republic take place?",
                   "scores": {"a": 0.0, "b": 1.0}}
        rows += [math_row, history]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    art = tmp_path / "art"
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
              "--embedder", "openvino", "--onnx-model", str(onnx_dir)]
    assert triage(["calibrate", "--out", str(art), "--generalist", "a", "--window", "48", *common]) == 0
    assert json.loads((art / "manifest.json").read_text())["embedder"]["window"] == 48
    assert triage(["eval", "--artifact", str(art), "--out", str(tmp_path / "ev"), *common]) == 0
    assert triage(["eval", "--artifact", str(art), "--out", str(tmp_path / "ev2"), "--window", "64", *common]) == 2


def test_torch_and_onnx_cut_at_the_same_token(w64: OnnxEmbedder) -> None:
    """Calibration embeds with sentence-transformers (torch), the router with the ONNX export on OpenVINO: both
    must read the same 64 tokens, or a windowed artifact would serve on other vectors than it was fitted on."""
    from router.embedding.torch import Embedder

    torch_w64 = Embedder(EmbedderSettings(window=64))
    assert torch_w64.max_tokens == 64 and torch_w64.variant == "w64"
    texts = [LONG, LONG[40:], "short question about tides"]
    cosine = np.sum(torch_w64.encode(texts) * w64.encode(texts), axis=1)
    assert cosine.min() > 0.9999, cosine
