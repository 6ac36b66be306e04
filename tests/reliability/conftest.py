"""Fault-injection fixtures: the real app over real HTTP in front of real ``bench.harness.fake_openai`` processes.

One fake process per artifact model lives for the whole session (starting seven is slower than resetting
them); every test starts from healthy fakes with fresh stats. ``rig(...)`` builds and serves the app with a
test's own config (health, auth, limits) and yields a ``Rig`` to drive it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bench.harness.fleet import FakeProcess, fleet_config
from bench.harness.synthetic import write_synthetic_artifact
from router.app import create_app
from router.artifact import Artifact
from router.embedding.torch import Embedder
from router.settings import load_settings
from tests.reliability.rig import HEALTHY, Rig, RigFactory
from tests.server import serve

# The routerdc fleet (shared/data/routing/routerdc_7model.jsonl), generalist first.
ROUTERDC_MODELS = ["meta-llama/Meta-Llama-3-8B", "mistralai/Mistral-7B-v0.1", "meta-math/MetaMath-Mistral-7B",
                   "itpossible/Chinese-Mistral-7B-v0.1", "HuggingFaceH4/zephyr-7b-beta",
                   "cognitivecomputations/dolphin-2.6-mistral-7b", "cognitivecomputations/dolphin-2.9-llama3-8b"]


@pytest.fixture(scope="session")
def rel_artifact(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """The suite's calibrated artifact when tests/conftest.py provides one, else a synthetic one.

    These tests are about the request path, not routing quality: any valid artifact with the fleet's model
    names will do, and a synthetic one costs milliseconds instead of a calibration run.
    """
    try:
        shared: Artifact = request.getfixturevalue("artifact")
        return shared
    except pytest.FixtureLookupError:
        return write_synthetic_artifact(tmp_path_factory.mktemp("reliability") / "artifact", k=16,
                                        models=ROUTERDC_MODELS, n_reference=2000, ood_threshold=1.5)


@pytest.fixture(scope="session")
def fake_fleet(rel_artifact: Artifact) -> Iterator[dict[str, FakeProcess]]:
    started: dict[str, FakeProcess] = {}
    try:
        for i, model in enumerate(rel_artifact.models):
            started[model] = FakeProcess(f"served-{i}").start()
        yield started
    finally:
        for fake in started.values():
            fake.kill()


@pytest.fixture(autouse=True)
def healthy_fakes(request: pytest.FixtureRequest) -> None:
    if "fake_fleet" not in request.fixturenames:
        return
    fleet: dict[str, FakeProcess] = request.getfixturevalue("fake_fleet")
    for fake in fleet.values():
        if fake.proc is None or fake.proc.poll() is not None:
            fake.restart()
        fake.configure(**HEALTHY)
        httpx.post(fake.root_url + "/fake/reset-stats", timeout=10).raise_for_status()


@pytest.fixture
def rig(rel_artifact: Artifact, embedder: Embedder, fake_fleet: dict[str, FakeProcess], tmp_path: Path) -> RigFactory:
    @contextmanager
    def build(artifact_dir: Path | None = None, timeouts: dict[str, float] | None = None,
              **config: Any) -> Iterator[Rig]:
        models = rel_artifact.models
        raw = fleet_config(artifact_dir or rel_artifact.path, models, rel_artifact.generalist,
                           [fake_fleet[m].base_url for m in models], [fake_fleet[m].served_name for m in models])
        for backend in raw["backends"]:
            backend["timeouts"].update(timeouts or {})
        raw["health"] = {"probe_interval_s": 0, **config.pop("health", {})}
        raw["decision_log"] = {"path": str(tmp_path / "decisions.jsonl")}
        raw.update(config)
        path = tmp_path / "triage.yaml"
        path.write_text(json.dumps(raw))
        settings = load_settings(path, environ={})
        registry = CollectorRegistry()
        app = create_app(settings, registry=registry, encoder=embedder)
        with serve(app) as url:
            yield Rig(url, settings, fake_fleet, registry, rel_artifact)

    return build


@pytest.fixture
def artifact_copy(rel_artifact: Artifact, tmp_path: Path) -> Path:
    """A private copy of the artifact directory that a test may corrupt and repair."""
    target = tmp_path / "artifact"
    shutil.copytree(rel_artifact.path, target)
    return target
