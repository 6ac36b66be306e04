"""The ONNX embedder gives the torch embedder's vectors (so it may carry the same name), without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from router.artifact import Artifact
from router.embedding import EmbedderError, load_encoder, weights_of
from router.embedding.onnx import META_FILE, MODEL_FILE, OnnxEmbedder
from router.embedding.torch import Embedder
from router.embedding_tools.export import export
from router.settings import EmbedderSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def onnx_embedder(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(EmbedderSettings(onnx_path=str(onnx_dir)))


def test_vectors_match_the_torch_embedder_on_real_routing_queries(
    onnx_embedder: OnnxEmbedder, embedder: Embedder, routing_queries: list[str]
) -> None:
    expected = embedder.encode(routing_queries)
    got = onnx_embedder.encode(routing_queries)
    assert got.shape == expected.shape == (300, 384) and got.dtype == np.float32
    assert float(np.abs(got - expected).max()) < 1e-4
    assert onnx_embedder.name == embedder.name and onnx_embedder.dim == embedder.dim


def test_vectors_are_unit_norm(onnx_embedder: OnnxEmbedder, routing_queries: list[str]) -> None:
    vectors = onnx_embedder.encode(routing_queries[:50])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_a_text_gets_the_same_vector_alone_and_in_a_padded_batch(
    onnx_embedder: OnnxEmbedder, routing_queries: list[str]
) -> None:
    texts = routing_queries[:20]
    batched = onnx_embedder.encode(texts, batch_size=8)
    alone = np.vstack([onnx_embedder.encode([text]) for text in texts])
    assert np.abs(batched - alone).max() < 1e-5


def test_empty_text_and_empty_list(onnx_embedder: OnnxEmbedder, embedder: Embedder) -> None:
    assert onnx_embedder.encode([]).shape == (0, 384)
    vector = onnx_embedder.encode([""])
    assert np.abs(vector - embedder.encode([""])).max() < 1e-4


def test_long_texts_are_truncated_to_max_seq_length_like_sentence_transformers(
    onnx_embedder: OnnxEmbedder, embedder: Embedder
) -> None:
    assert onnx_embedder.max_tokens == embedder.max_tokens == 256
    head = " ".join(f"word{i % 10}" for i in range(400))  # far more than 256 tokens
    long_a, long_b = head + " apples and pears", head + " an entirely different ending"
    vectors = onnx_embedder.encode([long_a, long_b])
    assert np.abs(vectors[0] - vectors[1]).max() == 0  # the endings lie past the cut
    assert np.abs(vectors - embedder.encode([long_a, long_b])).max() < 1e-4


def test_a_missing_model_dir_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="no ONNX embedding model in 'absent'.*router.embedding_tools.export"):
        OnnxEmbedder(EmbedderSettings(onnx_path=str(tmp_path / "absent")))


def test_an_export_of_another_model_is_refused_under_this_name(onnx_dir: Path) -> None:
    with pytest.raises(EmbedderError, match="is 'all-MiniLM-L6-v2', not 'other-model'"):
        OnnxEmbedder(EmbedderSettings(name="other-model", onnx_path=str(onnx_dir)))


def test_load_encoder_picks_the_backend(onnx_dir: Path) -> None:
    assert isinstance(load_encoder(EmbedderSettings(backend="onnx", onnx_path=str(onnx_dir))), OnnxEmbedder)
    with pytest.raises(EmbedderError, match="onnx embedder backend needs onnx_path"):
        load_encoder(EmbedderSettings(), "onnx")
    with pytest.raises(EmbedderError, match="unknown embedder backend 'tpu'"):
        load_encoder(EmbedderSettings(), "tpu")


def test_an_export_of_the_same_weights_is_reused(onnx_dir: Path) -> None:
    before = (onnx_dir / MODEL_FILE).stat().st_mtime_ns, (onnx_dir / META_FILE).read_text()
    assert export(onnx_dir) == onnx_dir
    assert ((onnx_dir / MODEL_FILE).stat().st_mtime_ns, (onnx_dir / META_FILE).read_text()) == before
    meta = json.loads(before[1])
    assert meta["name"] == "all-MiniLM-L6-v2" and meta["check_max_abs_diff"] < 1e-4 and len(meta["source_sha256"]) == 64


def test_the_onnx_embedder_runs_without_torch(onnx_dir: Path) -> None:
    script = (
        "import sys\n"
        "from router.embedding import load_encoder\n"
        "from router.settings import EmbedderSettings\n"
        f"settings = EmbedderSettings(backend='onnx', onnx_path={str(onnx_dir)!r})\n"
        "vectors = load_encoder(settings).encode(['What is 2 + 2?'])\n"
        "assert vectors.shape == (1, 384), vectors.shape\n"
        "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)


def test_the_server_on_the_onnx_backend_decides_as_on_torch(
    onnx_dir: Path, artifact: Artifact, embedder: Embedder, tmp_path: Path
) -> None:
    """The app builds its own ONNX encoder from settings (no injection) and routes exactly as with torch."""
    import httpx

    from router.app import create_app
    from tests.fakes import FakeBackend, fleet_config
    from tests.server import serve

    queries = ["What is 17 * 23?", "下列关于中国历史的说法正确的是", "Which gas do plants absorb from the air?",
               "Write a Python function that reverses a linked list.", "Plan a honeymoon in Lisbon."]
    decisions = {}
    for backend in ("torch", "onnx"):
        settings = fleet_config(artifact, tmp_path, embedder={"backend": backend, "onnx_path": str(onnx_dir)})
        fakes = {b.name: FakeBackend(b.model) for b in settings.backends}
        app = create_app(settings, encoder=embedder if backend == "torch" else None,
                         transport_for=lambda b, fakes=fakes: fakes[b.name].transport())
        with serve(app) as url:
            decisions[backend] = [
                {k: v for k, v in httpx.post(url + "/v1/route", json={
                    "model": "triage:quality", "messages": [{"role": "user", "content": q}]}).json().items()
                 if k in ("backend", "cluster", "reason")} for q in queries]
    assert decisions["onnx"] == decisions["torch"]


def test_the_int8_copy_carries_its_own_name_and_stays_close_to_the_fp32_vectors(
    onnx_dir: Path, onnx_embedder: OnnxEmbedder, routing_queries: list[str], tmp_path: Path
) -> None:
    from router.embedding_tools.export import quantize

    int8_dir = quantize(onnx_dir, tmp_path / "int8")
    meta = json.loads((int8_dir / META_FILE).read_text())
    assert meta["name"] == "all-MiniLM-L6-v2-int8" and meta["quantized_from"] == json.loads(
        (onnx_dir / META_FILE).read_text())["onnx_sha256"]
    assert (int8_dir / MODEL_FILE).stat().st_size < (onnx_dir / MODEL_FILE).stat().st_size / 3
    with pytest.raises(EmbedderError, match="is 'all-MiniLM-L6-v2-int8', not 'all-MiniLM-L6-v2'"):
        # Its vectors are not MiniLM's: an fp32 artifact must not accept it.
        OnnxEmbedder(EmbedderSettings(onnx_path=str(int8_dir)))
    int8 = OnnxEmbedder(EmbedderSettings(name=meta["name"], onnx_path=str(int8_dir)))
    cosine = (int8.encode(routing_queries) * onnx_embedder.encode(routing_queries)).sum(axis=1)
    # Per-channel weight scales; measured: median 0.993, min 0.967 (per tensor it was median 0.95, min 0.86).
    assert np.median(cosine) > 0.98 and cosine.min() > 0.9
    # Its vectors change with the quantisation: calibration's cache keeps them per model file.
    assert int8.variant == meta["onnx_sha256"][:12] and onnx_embedder.variant == ""
    # ... and so does the artifact (Artifact.load refuses one fitted on another copy of the same name).
    assert weights_of(int8) == meta["onnx_sha256"][:12] and weights_of(onnx_embedder) == ""
    assert quantize(onnx_dir, int8_dir) == int8_dir and json.loads((int8_dir / META_FILE).read_text()) == meta
