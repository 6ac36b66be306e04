"""Triage in front of the real CPU vLLM server (SmolLM2-135M-Instruct under seven served names).

The whole real path: openai SDK -> Triage (real embedder, real artifact) -> vLLM's OpenAI server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.artifact import Artifact
from router.embedding.torch import Embedder
from router.settings import Settings, load_settings
from tests.server import serve
from tests.vllm_server import LocalVLLM

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PRICE = 0.2  # USD per 1M tokens, input and output
MATH = "Janet has 3 apples and buys 5 more. How many apples does she have now? Answer with a number."


def settings_for(artifact: Artifact, vllm: LocalVLLM, tmp_path: Path, overrides: dict[str, str] | None = None
                 ) -> Settings:
    overrides = overrides or {}
    backends = [{"name": name, "base_url": overrides.get(name, vllm.base_url), "model": vllm.backend_models[name],
                 "role": "generalist" if name == artifact.generalist else "specialist",
                 "price_per_mtok": {"input": PRICE, "output": PRICE},
                 "timeouts": {"connect": 2, "first_byte": 120, "total": 300}}
                for name in artifact.models]
    config = {"artifact": str(artifact.path), "backends": backends, "health": {"probe_interval_s": 0},
              "decision_log": {"path": str(tmp_path / "decisions.jsonl")}}
    (tmp_path / "triage.yaml").write_text(json.dumps(config))
    return load_settings(tmp_path / "triage.yaml", environ={})


@pytest.fixture
def triage_url(artifact: Artifact, embedder: Embedder, local_vllm: LocalVLLM, tmp_path: Path
               ) -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    app = create_app(settings_for(artifact, local_vllm, tmp_path), registry=registry, encoder=embedder)
    with serve(app) as base_url:
        yield base_url, registry


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=180)


def test_chat_through_triage_with_cost_from_usage(triage_url: tuple[str, CollectorRegistry]) -> None:
    base_url, registry = triage_url
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="triage:quality", messages=[{"role": "user", "content": MATH}], max_tokens=24, temperature=0)
    completion = raw.parse()
    backend = raw.headers["x-triage-backend"]
    assert (completion.choices[0].message.content or "").strip()
    assert raw.headers["x-triage-reason"] in {"best", "cliff", "ood_fallback"}
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 24
    cost = registry.get_sample_value("triage_cost_usd_total", {"backend": backend})
    assert cost == pytest.approx((usage.prompt_tokens + usage.completion_tokens) * PRICE / 1e6)


def test_streaming_with_usage(triage_url: tuple[str, CollectorRegistry]) -> None:
    base_url, registry = triage_url
    with client(base_url).chat.completions.with_streaming_response.create(
        model="triage", messages=[{"role": "user", "content": "Name three colours."}], max_tokens=16,
        temperature=0, stream=True, stream_options={"include_usage": True},
    ) as response:
        backend = response.headers["x-triage-backend"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert len([c for c in chunks if c.choices]) > 2  # really streamed, chunk by chunk
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert registry.get_sample_value(
        "triage_tokens_total", {"backend": backend, "kind": "completion"}) == usage.completion_tokens


def test_legacy_completions(triage_url: tuple[str, CollectorRegistry]) -> None:
    base_url, _ = triage_url
    completion = client(base_url).completions.create(model="triage", prompt="The capital of France is",
                                                     max_tokens=8, temperature=0)
    assert completion.choices[0].text.strip()
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_pinned_backend(triage_url: tuple[str, CollectorRegistry], artifact: Artifact) -> None:
    base_url, registry = triage_url
    name = next(m for m in artifact.models if m != artifact.generalist)
    raw = client(base_url).chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
    assert raw.headers["x-triage-backend"] == name and raw.headers["x-triage-reason"] == "pinned"
    assert (raw.parse().choices[0].message.content or "").strip()
    assert registry.get_sample_value(
        "triage_requests_total", {"backend": name, "cluster": "-1", "reason": "pinned", "outcome": "ok"}) == 1


def test_a_backend_stopped_mid_test_falls_back_to_the_next_eligible(
    artifact: Artifact, embedder: Embedder, local_vllm: LocalVLLM, tmp_path: Path
) -> None:
    # The backend the policy picks for this query is served by a separate process that we kill mid-test;
    # the other six names stay on the real vLLM server.
    probe = create_app(settings_for(artifact, local_vllm, tmp_path), encoder=embedder)
    with serve(probe) as base_url:
        decision = httpx.post(base_url + "/v1/route", json={
            "model": "triage:quality", "messages": [{"role": "user", "content": MATH}]}).json()
    victim = decision["backend"]
    fake = subprocess.Popen(
        [sys.executable, "-m", "bench.harness.fake_openai", "--port", "0",
         "--served-name", local_vllm.backend_models[victim]],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert fake.stdout is not None
        port = _port_from(fake.stdout.readline())
        settings = settings_for(artifact, local_vllm, tmp_path, {victim: f"http://127.0.0.1:{port}/v1"})
        with serve(create_app(settings, encoder=embedder)) as base_url:
            sdk = client(base_url)
            before = sdk.chat.completions.with_raw_response.create(
                model="triage:quality", messages=[{"role": "user", "content": MATH}], max_tokens=16)
            assert before.headers["x-triage-backend"] == victim and before.headers["x-triage-reason"] == "best"
            fake.send_signal(signal.SIGKILL)
            fake.wait(timeout=10)
            after = sdk.chat.completions.with_raw_response.create(
                model="triage:quality", messages=[{"role": "user", "content": MATH}], max_tokens=16, temperature=0)
            assert after.headers["x-triage-reason"] == "fallback_after_error"
            assert after.headers["x-triage-backend"] == decision["fallback_chain"][1]
            assert (after.parse().choices[0].message.content or "").strip()  # answered by the real vLLM
    finally:
        fake.kill()
        fake.wait(timeout=10)
        if fake.stdout is not None:
            fake.stdout.close()


def _port_from(line: str) -> int:
    """bench.fake_openai prints its address on the first line of stdout."""
    digits = "".join(ch if ch.isdigit() else " " for ch in line.rsplit(":", 1)[-1]).split()
    assert digits, f"unexpected first line from the fake server: {line!r}"
    return int(digits[0])


def test_the_responses_api_through_triage_to_vllm(triage_url: tuple[str, CollectorRegistry]) -> None:
    base_url, registry = triage_url
    sdk = client(base_url)
    raw = sdk.responses.with_raw_response.create(model="triage", input=MATH, instructions="Answer briefly.",
                                                 max_output_tokens=24, temperature=0)
    response = raw.parse()
    backend = raw.headers["x-triage-backend"]
    assert response.output_text.strip()
    assert response.model == backend  # the backend Triage chose, not vLLM's served id
    assert response.usage is not None and response.usage.output_tokens > 0
    assert registry.get_sample_value("triage_tokens_total", {"backend": backend, "kind": "completion"}) == \
        response.usage.output_tokens
    with sdk.responses.with_streaming_response.create(model="triage", input="Name three colours.",
                                                      max_output_tokens=16, temperature=0, stream=True) as stream:
        streamed_backend = stream.headers["x-triage-backend"]
        events = list(stream.parse())
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 2 and "".join(deltas).strip()
    completed = [e for e in events if e.type == "response.completed"]
    assert completed and completed[0].response.model == streamed_backend
    usage = completed[0].response.usage
    assert usage is not None and registry.get_sample_value(
        "triage_tokens_total", {"backend": streamed_backend, "kind": "completion"}) >= usage.output_tokens
