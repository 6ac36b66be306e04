"""The static embedder and the refine tier: a real distilled model, a real artifact, the router over HTTP.

The artifact is calibrated with ``--embedder static --refine-ood`` on the same RouterDC subset as the main
test artifact; MiniLM (the session's torch embedder) is the refine encoder, as in production (where the
ONNX export gives the same vectors).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openai
import pytest

from router.app import create_app
from router.artifact import Artifact, ArtifactError
from router.embedding import EmbedderError
from router.embedding.static import StaticEmbedder
from router.embedding.torch import Embedder
from router.embedding_tools.distil import distil
from router.policy import Policy
from router.settings import EmbedderSettings
from tests.conftest import GENERALIST, REPO, routerdc_train_subset
from tests.fakes import FakeBackend, fleet_config
from tests.server import routed_headers, serve

STATIC_DIR = REPO / "models" / "minilm-static"  # what scripts/setup-router.sh distils
FAR_AWAY = [
    "Plan a three-day honeymoon itinerary in Lisbon with restaurants and a sunset boat tour.",
    "My sourdough starter smells like nail polish remover, is it dead?",
    "Write a limerick about a cat who learns to play the bagpipes.",
]


@pytest.fixture(scope="session")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (STATIC_DIR / "triage.json").is_file():
        return STATIC_DIR
    out = tmp_path_factory.mktemp("static") / "minilm-static"
    distil(out)
    return out


@pytest.fixture(scope="session")
def static(static_dir: Path) -> StaticEmbedder:
    return StaticEmbedder(EmbedderSettings(static_path=str(static_dir)))


@pytest.fixture(scope="session")
def tiered_artifact(shared_data: Path, static: StaticEmbedder, embedder: Embedder,
                    tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    from calibration.cli import main as calibrate

    work = tmp_path_factory.mktemp("tiered")
    subset = routerdc_train_subset(shared_data, work / "routerdc_subset.jsonl")
    code = calibrate(["calibrate", "--data", str(subset), "--out", str(work / "art"), "--generalist", GENERALIST,
                      "--embedder", "static", "--refine-ood", "--no-progress",
                      "--cache-dir", str(REPO / "var" / "cache" / "embeddings")],
                     encoder=static, refine_encoder=embedder)
    assert code == 0
    return Artifact.load(work / "art", embedder_name=static.name, embedder_dim=static.dim)


@pytest.fixture(scope="module")
def test_queries(shared_data: Path) -> list[str]:
    text = (shared_data / "routing" / "routerdc_7model.jsonl").read_text()
    rows = [json.loads(line) for line in text.split("\n") if line.strip()]
    return [r["query"] for r in rows if r["split"] == "test"][::97][:60] + FAR_AWAY


def test_the_distilled_model_gives_its_own_unit_vectors(static: StaticEmbedder) -> None:
    vectors = static.encode(["What is 2 + 2?", "Translate 'cat' into French.", "What is 2 + 2?", ""])
    assert static.name == "all-MiniLM-L6-v2-static256" and vectors.shape == (4, 256)
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2]) and float(vectors[0] @ vectors[1]) < 0.6
    assert np.all(np.isfinite(vectors[3]))  # no tokens: the zero vector, not NaN


def test_a_directory_without_a_distilled_model_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="python -m router.embedding_tools.distil"):
        StaticEmbedder(EmbedderSettings(static_path=str(tmp_path)))


def test_only_close_calls_are_refined_and_minilm_makes_them(
    tiered_artifact: Artifact, static: StaticEmbedder, embedder: Embedder, test_queries: list[str]
) -> None:
    tier = tiered_artifact.refine
    assert tier is not None and tier.embedder_name == embedder.name
    policy = Policy(tiered_artifact)
    x = static.encode(test_queries)
    asked: list[int] = []

    def refine(rows: np.ndarray) -> np.ndarray:
        asked.extend(int(r) for r in rows)
        return embedder.encode([test_queries[int(r)] for r in rows])

    est = policy.estimate(x, refine)
    from router.ood import ood_scores

    fast = ood_scores(x, tiered_artifact.reference, tiered_artifact.ood_k)
    close = fast >= tier.refine_above[est.cluster]
    assert asked == list(np.flatnonzero(close)) and est.refined is not None and np.array_equal(est.refined, close)
    assert 0 < close.sum() < len(test_queries)  # some, not all
    # Refined rows: MiniLM's kNN distance against the refine reference, in units of its threshold.
    fine = ood_scores(embedder.encode([test_queries[i] for i in asked]), tier.reference, tier.ood_k)
    expected = fine / tier.cluster_thresholds[est.cluster[asked]]
    assert np.allclose(est.ood_score[asked], expected, atol=1e-6)
    assert np.array_equal(est.is_ood[asked], expected > 1)
    assert not est.is_ood[~close].any()  # the fast tier never flags: flags are MiniLM's
    far = np.arange(len(test_queries) - len(FAR_AWAY), len(test_queries))
    assert close[far].all() and est.is_ood[far].all()
    with pytest.raises(ValueError, match="refine tier"):
        policy.estimate(x)  # a tiered artifact cannot be used without its refine embedder


def test_the_server_and_triage_route_make_the_same_tiered_decisions(
    tiered_artifact: Artifact, static_dir: Path, static: StaticEmbedder, embedder: Embedder,
    test_queries: list[str], tmp_path: Path,
) -> None:
    from router.cli import main as triage

    settings = fleet_config(tiered_artifact, tmp_path, embedder={"backend": "static", "static_path": str(static_dir)})
    fakes = {b.name: FakeBackend(b.model, reply=f"answer from {b.name}") for b in settings.backends}
    app = create_app(settings, encoder=static, refine_encoder=embedder,
                     transport_for=lambda b: fakes[b.name].transport())
    queries = test_queries[::4] + FAR_AWAY
    with serve(app) as base_url:
        served = [(h["x-triage-backend"], h["x-triage-reason"]) for h in routed_headers(base_url, queries)]
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
        route = client.post("/route", cast_to=object, body={"model": "triage", "messages": [
            {"role": "user", "content": FAR_AWAY[0]}]})
    assert route["reason"] == "ood_fallback" and route["decision"]["ood_refined"] is True  # type: ignore[index]
    assert [s for s in served[-len(FAR_AWAY):]] == [(GENERALIST, "ood_fallback")] * len(FAR_AWAY)
    # Offline, with the server's embedder settings (the refine encoder is loaded from them: torch here).
    rows = tmp_path / "queries.jsonl"
    rows.write_text("".join(json.dumps({"id": str(i), "query": q}) + "\n" for i, q in enumerate(queries)))
    assert triage(["route", "--artifact", str(tiered_artifact.path), "--input", str(rows), "--knob", "1",
                   "--output", str(tmp_path / "out.jsonl"), "--config", str(tmp_path / "triage.yaml")]) == 0
    offline = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(o["model"], o["reason"]) for o in offline] == served


async def test_a_router_without_a_refine_embedder_refuses_a_tiered_artifact(
    tiered_artifact: Artifact, static: StaticEmbedder
) -> None:
    from router.routing import Routing

    # What POST /admin/reload does (Triage.reload): the running router's encoders, no loader for a new one.
    with pytest.raises(ArtifactError, match="refine tier needs 'all-MiniLM-L6-v2'.*restart"):
        Routing.load(tiered_artifact.path, static)
