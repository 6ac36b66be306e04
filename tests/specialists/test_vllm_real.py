"""A real chat completion from the real CPU vLLM server, through the official openai SDK."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.vllm_server import LocalVLLM

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_each_served_name_answers_a_question(local_vllm: LocalVLLM) -> None:
    assert len(local_vllm.served_names) == 7
    client = OpenAI(base_url=local_vllm.base_url, api_key="unused", max_retries=0, timeout=120)
    try:
        models = {m.id for m in client.models.list()}
        assert set(local_vllm.served_names) <= models

        reply = client.chat.completions.create(
            model=local_vllm.backend_models["meta-math/MetaMath-Mistral-7B"],
            messages=[{"role": "user", "content": "What is 2+2?"}],
            max_tokens=32,
            temperature=0,
        )
    finally:
        client.close()

    answer = reply.choices[0].message.content or ""
    assert answer.strip()
    assert "4" in answer  # SmolLM2 answers "The answer to this classic math problem is 4." (greedy)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
