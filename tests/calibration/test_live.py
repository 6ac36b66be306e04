"""Live calibration against fake backends on ``httpx.MockTransport``: grading, cost, resume, retries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from calibration.cli import main
from router.artifact import Artifact
from tests.calibration.conftest import FakeEncoder

CONFIG = """
artifact: art
backends:
  - name: big
    base_url: http://big.test/v1
    model: big-model
    role: generalist
    price_per_mtok: {input: 2.0, output: 4.0}
  - name: small
    base_url: http://small.test/v1
    model: small-model
    price_per_mtok: {input: 0.1, output: 0.1}
"""


def gold_rows(n: int = 60) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if i % 2:
            rows.append(
                {
                    "task_name": "arith",
                    "query": f"arith: what is {i} + 1?",
                    "ground_truth": f"#### {i + 1}",
                    "metric": "GSM8K",
                    "choices": None,
                    "task_id": None,
                }
            )
        else:
            rows.append(
                {
                    "task_name": "trivia",
                    "query": f"trivia: capital number {i}?",
                    "ground_truth": "C",
                    "metric": "em_mc",
                    "choices": "['w', 'x', 'y', 'z']",
                    "task_id": None,
                }
            )
    rows.append(
        {
            "task_name": "mbpp",
            "query": "write code",
            "ground_truth": "assert f()",
            "metric": "code_eval",
            "choices": None,
            "task_id": "1",
        }
    )
    return rows


class Fleet:
    """'big' answers everything right; 'small' gets arithmetic right and multiple choice wrong."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.fail_first > 0:
            self.fail_first -= 1
            return httpx.Response(503, json={"error": {"message": "warming up"}})
        assert request.url.path == "/v1/chat/completions"
        prompt = body["messages"][0]["content"]
        if "letter" in prompt:
            text = "Answer: C" if body["model"] == "big-model" else "Answer: A"
        else:
            number = int(prompt.split("is ")[1].split(" +")[0]) + 1
            text = f"It is \\boxed{{{number}}}"
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10},
            },
        )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "triage.yaml"
    config.write_text(CONFIG)
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in gold_rows()))
    return config, gold


def live(tmp_path: Path, config: Path, gold: Path, fleet: Fleet, *extra: str) -> int:
    client = httpx.AsyncClient(transport=httpx.MockTransport(fleet))
    return main(
        [
            "calibrate",
            "--live",
            "--config",
            str(config),
            "--gold",
            str(gold),
            "--out",
            str(tmp_path / "art"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--no-progress",
            *extra,
        ],
        encoder=FakeEncoder(),
        client=client,
    )


def test_live_calibration_measures_grades_and_fits(
    tmp_path: Path, setup: tuple[Path, Path], capsys: Any
) -> None:
    config, gold = setup
    fleet = Fleet()
    assert live(tmp_path, config, gold, fleet) == 0
    assert "skipping 1 questions with metric 'code_eval'" in capsys.readouterr().err
    assert len(fleet.requests) == 120 and {r["model"] for r in fleet.requests} == {"big-model", "small-model"}
    rows = [json.loads(line) for line in (tmp_path / "art.scores.jsonl").read_text().splitlines()]
    assert len(rows) == 60
    trivia = next(r for r in rows if r["domain"] == "trivia")
    assert trivia["scores"] == {"big": 1.0, "small": 0.0}
    arith = next(r for r in rows if r["domain"] == "arith")
    assert arith["scores"] == {"big": 1.0, "small": 1.0}
    assert arith["cost"]["big"] == pytest.approx((100 * 2.0 + 10 * 4.0) / 1e6)
    assert arith["tokens"]["small"] == {"in": 100, "out": 10} and arith["latency"]["big"] >= 0
    artifact = Artifact.load(tmp_path / "art")
    assert artifact.generalist == "big" and artifact.manifest["data"]["source"] == "art.scores.jsonl"


def test_live_run_resumes_from_its_answer_cache(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    config, gold = setup
    assert live(tmp_path, config, gold, Fleet(), "--limit", "10") == 0
    again = Fleet()
    assert live(tmp_path, config, gold, again, "--limit", "30") == 0
    assert len(again.requests) == 40  # only the 20 new questions x 2 backends
    assert len((tmp_path / "art.scores.jsonl").read_text().splitlines()) == 30


def test_live_retries_server_errors(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    config, gold = setup
    fleet = Fleet(fail_first=2)
    assert live(tmp_path, config, gold, fleet, "--limit", "4", "--concurrency", "1") == 0
    assert len(fleet.requests) == 8 + 2


def test_unknown_metric_is_refused(tmp_path: Path, setup: tuple[Path, Path], capsys: Any) -> None:
    config, gold = setup
    with gold.open("a") as fh:
        fh.write(json.dumps({"task_name": "x", "query": "q", "ground_truth": "a", "metric": "bleu"}) + "\n")
    assert live(tmp_path, config, gold, Fleet()) == 2
    assert "line 62: field 'metric': unknown metric 'bleu'" in capsys.readouterr().err
    assert not (tmp_path / "art").exists()
