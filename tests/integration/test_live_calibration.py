"""Live calibration end to end against the real CPU vLLM server, on a small slice of the gold questions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from calibration.cli import main as triage_calibrate
from router.artifact import Artifact
from tests.vllm_server import LocalVLLM

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

GENERALIST = "meta-llama/Meta-Llama-3-8B"
SPECIALIST = "meta-math/MetaMath-Mistral-7B"


def test_live_calibration_measures_grades_and_fits(local_vllm: LocalVLLM, shared_data: Path, tmp_path: Path) -> None:
    backends = [
        {"name": name, "base_url": local_vllm.base_url, "model": local_vllm.backend_models[name],
         "role": "generalist" if name == GENERALIST else "specialist",
         "price_per_mtok": {"input": price, "output": 2 * price}}
        for name, price in ((GENERALIST, 0.5), (SPECIALIST, 0.1))
    ]
    config = tmp_path / "live.yaml"
    config.write_text(json.dumps({"artifact": "unused", "backends": backends}))
    out = tmp_path / "live-artifact"
    argv = ["calibrate", "--live", "--config", str(config), "--gold",
            str(shared_data / "gold" / "default_query_train.jsonl"), "--out", str(out), "--limit", "16",
            "--max-tokens", "24", "--concurrency", "4", "--clusters", "2", "--no-progress",
            "--cache-dir", str(tmp_path / "embeddings")]

    started = time.monotonic()
    assert triage_calibrate(argv) == 0
    first_run = time.monotonic() - started

    rows = [json.loads(line) for line in (tmp_path / "live-artifact.scores.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    for row in rows:
        assert set(row["scores"]) == {GENERALIST, SPECIALIST}
        assert all(0.0 <= s <= 1.0 for s in row["scores"].values())
        for name, price in ((GENERALIST, 0.5), (SPECIALIST, 0.1)):
            tokens = row["tokens"][name]
            assert tokens["in"] > 0 and 0 < tokens["out"] <= 24
            assert row["cost"][name] == pytest.approx((tokens["in"] * price + tokens["out"] * 2 * price) / 1e6)
            assert row["latency"][name] > 0
    artifact = Artifact.load(out)
    assert set(artifact.models) == {GENERALIST, SPECIALIST} and artifact.generalist == GENERALIST

    # Resumable: every answer is cached, so a second run asks the backends nothing and is much faster.
    answers = tmp_path / "live-artifact.answers.jsonl"
    cached = answers.read_text()
    started = time.monotonic()
    assert triage_calibrate(argv) == 0
    assert answers.read_text() == cached
    assert time.monotonic() - started < first_run
