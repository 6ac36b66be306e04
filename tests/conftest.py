"""Session-wide real parts, each built once: the embedding model, a calibrated artifact, the CPU vLLM server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.artifact import Artifact
from router.embedding.torch import Embedder

REPO = Path(__file__).resolve().parent.parent
GENERALIST = "cognitivecomputations/dolphin-2.9-llama3-8b"


def data_dir() -> Path:
    """../shared/data beside the checkout, or TRIAGE_TEST_DATA (scripts/test.sh sets it from DATA)."""
    return Path(os.environ.get("TRIAGE_TEST_DATA") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = data_dir()
    if not (path / "routing" / "routerdc_7model.jsonl").is_file():
        pytest.fail(f"the shared routing data is missing at {path} (set DATA=... for make test)")
    return path


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


def routerdc_train_subset(shared_data: Path, out: Path) -> Path:
    """Every third train row of routerdc_7model (~2.5k queries): what the test artifacts are calibrated on."""
    with (shared_data / "routing" / "routerdc_7model.jsonl").open() as src, out.open("w") as dst:
        dst.writelines([line for line in src if json.loads(line)["split"] == "train"][::3])
    return out


def calibrated(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str) -> Artifact:
    """``triage calibrate`` on ``routerdc_train_subset``, real embeddings; ``flags`` are added to the command."""
    from calibration.cli import main as calibrate

    work = tmp_path_factory.mktemp(name)
    subset = routerdc_train_subset(shared_data, work / "routerdc_subset.jsonl")
    code = calibrate(["calibrate", "--data", str(subset), "--out", str(work / "routerdc"), "--generalist", GENERALIST,
                      *flags, "--cache-dir", str(REPO / "var" / "cache" / "embeddings"), "--no-progress"])
    assert code == 0, f"calibration of the {name} test artifact failed"
    return Artifact.load(work / "routerdc")


@pytest.fixture(scope="session")
def artifact(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """A real artifact: every third train row of routerdc_7model (~2.5k queries), real embeddings."""
    return calibrated(shared_data, tmp_path_factory, "artifact")


@pytest.fixture(scope="session")
def domain_artifact(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """The same rows calibrated with the domain level forced on (``--domain-weight 1``): on this subset the
    validation slice does not choose it, and the real path must still be exercised."""
    return calibrated(shared_data, tmp_path_factory, "domain_artifact", "--domain-weight", "1")


@pytest.fixture(scope="session")
def local_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real CPU vLLM server (SmolLM2-135M-Instruct under seven served names), once per session."""
    from tests.vllm_server import start_local_vllm

    server = start_local_vllm(Path(tmp_path_factory.mktemp("vllm-run")))
    try:
        yield server
    finally:
        server.stop()
