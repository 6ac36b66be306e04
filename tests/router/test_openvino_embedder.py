"""The OpenVINO embedder: the ONNX export of MiniLM in bfloat16 (where the CPU has it), close enough to the
torch vectors to carry the model's name, and the server on it routes as ``triage route`` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.embeddings import EmbeddingCache
from router.app import create_app
from router.artifact import Artifact
from router.embedding import EmbedderError, load_encoder
from router.embedding.openvino import OpenVinoEmbedder
from router.embedding.torch import Embedder
from router.settings import EmbedderSettings
from tests.fakes import FakeBackend, fleet_config
from tests.server import routed_headers, serve


@pytest.fixture(scope="module")
def openvino(onnx_dir: Path) -> OpenVinoEmbedder:
    return OpenVinoEmbedder(EmbedderSettings(onnx_path=str(onnx_dir)))


def test_bf16_vectors_stay_within_cosine_1e4_of_the_torch_ones(
    openvino: OpenVinoEmbedder, embedder: Embedder, routing_queries: list[str]
) -> None:
    expected = embedder.encode(routing_queries)
    got = openvino.encode(routing_queries)
    assert got.shape == expected.shape == (300, 384) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cosine = (got * expected).sum(axis=1)
    # Measured here (AMX): min 0.99993. On a CPU without bfloat16 OpenVINO runs f32 and the cosine is 1.
    assert cosine.min() > 0.9999, (openvino.precision, cosine.min())
    assert openvino.name == embedder.name and openvino.dim == embedder.dim
    assert openvino.precision in ("bf16", "f32") and openvino.variant == f"openvino-{openvino.precision}"


def test_f32_precision_gives_the_torch_vectors(onnx_dir: Path, embedder: Embedder,
                                                routing_queries: list[str]) -> None:
    f32 = OpenVinoEmbedder(EmbedderSettings(precision="f32", onnx_path=str(onnx_dir)))
    assert f32.precision == "f32"
    assert float(np.abs(f32.encode(routing_queries) - embedder.encode(routing_queries)).max()) < 1e-4


def test_padding_to_32_tokens_and_batching_leave_the_vectors_alone(
    openvino: OpenVinoEmbedder, routing_queries: list[str]
) -> None:
    texts = routing_queries[:24]
    # Alone, a query of at most 32 tokens runs on the model compiled for exactly that shape; longer ones and
    # batches on the dynamic one.
    assert any(len(openvino._tokenizer.encode(text).ids) <= 32 for text in texts)
    alone = np.vstack([openvino.encode([text]) for text in texts])  # each padded to a multiple of 32 tokens
    batched = openvino.encode(texts, batch_size=8)  # padded to each batch's longest text, rounded up
    assert float((alone * batched).sum(axis=1).min()) > 0.99999
    assert openvino.encode([]).shape == (0, 384)


def test_another_models_export_is_refused_and_load_encoder_picks_openvino(onnx_dir: Path) -> None:
    with pytest.raises(EmbedderError, match="is 'all-MiniLM-L6-v2', not 'other-model'"):
        OpenVinoEmbedder(EmbedderSettings(name="other-model", onnx_path=str(onnx_dir)))
    assert isinstance(load_encoder(EmbedderSettings(onnx_path=str(onnx_dir)), "openvino"), OpenVinoEmbedder)
    with pytest.raises(EmbedderError, match="openvino embedder backend needs onnx_path"):
        load_encoder(EmbedderSettings(backend="openvino"))


def test_calibrations_cache_keeps_its_vectors_apart_from_the_float32_ones(
    openvino: OpenVinoEmbedder, embedder: Embedder, tmp_path: Path
) -> None:
    ours, theirs = EmbeddingCache(openvino, tmp_path), EmbeddingCache(embedder, tmp_path)
    assert ours.file != theirs.file and ours.file.name.startswith("all-MiniLM-L6-v2_openvino-")
    theirs.embed(["What is 2 + 2?"], progress=False)
    assert np.array_equal(ours.embed(["What is 2 + 2?"], progress=False), openvino.encode(["What is 2 + 2?"]))


def test_the_server_on_openvino_routes_as_triage_route_with_its_config(
    onnx_dir: Path, artifact: Artifact, embedder: Embedder, routing_queries: list[str], tmp_path: Path
) -> None:
    """The app builds its own OpenVINO encoder from settings, answers through the openai SDK, and
    ``triage route --config`` (the same settings) makes exactly its decisions; torch nearly all of them."""
    from router.cli import main as triage

    queries = routing_queries[::5]
    settings = fleet_config(artifact, tmp_path, embedder={"backend": "openvino", "onnx_path": str(onnx_dir)})
    fakes = {b.name: FakeBackend(b.model, reply=f"answer from {b.name}") for b in settings.backends}
    app = create_app(settings, transport_for=lambda b: fakes[b.name].transport())
    with serve(app) as base_url:
        served = [(h["x-triage-backend"], h["x-triage-cluster"], h["x-triage-reason"])
                  for h in routed_headers(base_url, queries)]
    rows = tmp_path / "queries.jsonl"
    rows.write_text("".join(json.dumps({"id": str(i), "query": q}) + "\n" for i, q in enumerate(queries)))
    out = {}
    for name, config in (("openvino", ["--config", str(tmp_path / "triage.yaml")]), ("torch", [])):
        assert triage(["route", "--artifact", str(artifact.path), "--input", str(rows), "--knob", "1",
                       "--output", str(tmp_path / f"{name}.jsonl"), *config]) == 0
        out[name] = [(o["model"], str(o["cluster"]), o["reason"])
                     for o in map(json.loads, (tmp_path / f"{name}.jsonl").read_text().splitlines())]
    assert out["openvino"] == served
    # bf16 moves a vector by < 1e-4 in cosine: a decision can flip only where two backends nearly tie. On this
    # artifact 1 of these 60 did; on every shared dataset's test rows 99.6-100 % agree.
    same = sum(t == o for t, o in zip(out["torch"], served, strict=True))
    assert same >= 0.95 * len(served), (same, len(served))


def test_a_cpu_without_bfloat16_runs_f32_and_says_so(
    onnx_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """This machine has AMX, so the fallback is simulated: OpenVINO reports the f32 it would choose."""
    import openvino as ov

    compile_model = ov.Core.compile_model

    class WithoutBf16:
        def __init__(self, compiled: ov.CompiledModel) -> None:
            self._compiled = compiled

        def get_property(self, name: str) -> object:
            return ov.Type.f32 if name == "INFERENCE_PRECISION_HINT" else self._compiled.get_property(name)

        def create_infer_request(self) -> ov.InferRequest:
            return self._compiled.create_infer_request()

    monkeypatch.setattr(ov.Core, "compile_model", lambda core, *a, **kw: WithoutBf16(compile_model(core, *a, **kw)))
    with caplog.at_level("WARNING", logger="triage"):
        embedder = OpenVinoEmbedder(EmbedderSettings(onnx_path=str(onnx_dir)))
    assert embedder.precision == "f32" and embedder.variant == "openvino-f32"
    assert "no bfloat16 matrix support" in caplog.text and "embedder.backend: onnx" in caplog.text
    assert embedder.encode(["What is 2 + 2?"]).shape == (1, 384)
