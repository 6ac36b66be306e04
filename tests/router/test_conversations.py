"""Conversations, agent loops and the Responses API through the official openai SDK.

Real embedding model and artifact, real uvicorn on loopback; the LLM backends are fakes (tests/fakes.py) that
speak the chat, tool-call and Responses protocols, so which backend answered is in every reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from router.artifact import Artifact
from tests.router.test_api import IN_DOMAIN_MATH, OUT_OF_DOMAIN, Stack, running

FOLLOW_UPS = (
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. She has only half of the money she needs. How much "
    "more money does Betty need?",
)
KEY_A = "sk-tenant-a-0123456789abcdef"
KEY_B = "sk-tenant-b-0123456789abcdef"
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "add", "description": "add two numbers",
    "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}]


@pytest.fixture
def stack(artifact: Artifact, embedder: object, tmp_path: Path) -> Iterator[Stack]:
    with running(artifact, embedder, tmp_path) as s:
        yield s


@pytest.fixture
def sdk(stack: Stack) -> Iterator[openai.OpenAI]:
    with stack.client() as client:
        yield client


def specialist_knob(stack: Stack) -> str:
    """A virtual model whose choice for IN_DOMAIN_MATH is a specialist."""
    for model in ("triage:quality", "triage", "triage:cost"):
        response = httpx.post(stack.base_url + "/v1/route", json={
            "model": model, "messages": [{"role": "user", "content": IN_DOMAIN_MATH}]})
        if response.json()["backend"] != stack.artifact.generalist:
            return model
    pytest.fail("every knob sends the math question to the generalist: this artifact cannot test affinity")


def turn(sdk: openai.OpenAI, model: str, messages: list[Any], **extra: Any) -> Any:
    return sdk.chat.completions.with_raw_response.create(model=model, messages=messages, **extra)


def test_a_stateless_conversation_stays_on_its_backend_within_its_domain(stack: Stack, sdk: openai.OpenAI) -> None:
    model = specialist_knob(stack)
    first = turn(sdk, model, [{"role": "user", "content": IN_DOMAIN_MATH}])
    backend = first.headers["x-triage-backend"]
    history = [{"role": "user", "content": IN_DOMAIN_MATH},
               {"role": "assistant", "content": first.parse().choices[0].message.content}]
    for follow_up in FOLLOW_UPS:
        later = turn(sdk, model, [*history, {"role": "user", "content": follow_up}])
        assert later.headers["x-triage-session"] == first.headers["x-triage-session"]
        assert later.headers["x-triage-backend"] == backend, later.headers["x-triage-reason"]
        assert later.headers["x-triage-reason"] in ("sticky", "best")


def test_the_out_of_domain_rule_wins_over_affinity(stack: Stack, sdk: openai.OpenAI) -> None:
    model = specialist_knob(stack)
    first = turn(sdk, model, [{"role": "user", "content": IN_DOMAIN_MATH}])
    history = [{"role": "user", "content": IN_DOMAIN_MATH}, {"role": "assistant", "content": "96"}]
    later = turn(sdk, model, [*history, {"role": "user", "content": OUT_OF_DOMAIN}])
    assert first.headers["x-triage-backend"] != stack.artifact.generalist
    assert later.headers["x-triage-backend"] == stack.artifact.generalist
    assert later.headers["x-triage-reason"] == "ood_fallback"
    assert stack.metric("triage_session_reroutes_total", {"cause": "ood"}) == 1


def test_an_explicit_session_sticks_until_the_caller_asks_for_a_fresh_decision(
        stack: Stack, sdk: openai.OpenAI) -> None:
    model = specialist_knob(stack)
    options = {"triage": {"session": "ticket-42"}}
    first = turn(sdk, model, [{"role": "user", "content": IN_DOMAIN_MATH}], extra_body=options)
    backend = first.headers["x-triage-backend"]
    assert first.headers["x-triage-session"] == "ticket-42"
    # Another question of the same domain, sent without history: the session id alone keeps it on its backend.
    vague = [{"role": "user", "content": FOLLOW_UPS[0]}]
    later = turn(sdk, model, vague, extra_body=options)
    assert later.headers["x-triage-backend"] == backend
    header = sdk.chat.completions.with_raw_response.create(
        model=model, messages=vague, extra_headers={"x-triage-session": "ticket-42"})
    assert header.headers["x-triage-backend"] == backend
    fresh = turn(sdk, model, vague, extra_body={"triage": {"session": "ticket-42", "fresh": True}})
    alone = httpx.post(stack.base_url + "/v1/route", json={"model": model, "messages": vague}).json()
    assert fresh.headers["x-triage-backend"] == alone["backend"]
    assert fresh.headers["x-triage-reason"] != "sticky"
    if alone["backend"] != backend:
        assert later.headers["x-triage-reason"] == "sticky"
        assert stack.metric("triage_session_reroutes_total", {"cause": "fresh"}) == 1


def test_sessions_are_scoped_to_the_api_key(artifact: Artifact, embedder: object, tmp_path: Path) -> None:
    auth = {"enabled": True, "keys": [{"name": "a", "key": KEY_A}, {"name": "b", "key": KEY_B}]}
    with running(artifact, embedder, tmp_path, auth=auth) as stack:
        a = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=KEY_A, max_retries=0)
        b = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=KEY_B, max_retries=0)
        with a, b:
            sessions_are_separate(a, b)


def sessions_are_separate(a: openai.OpenAI, b: openai.OpenAI) -> None:
    options = {"triage": {"session": "shared-name"}}
    messages = [{"role": "user", "content": IN_DOMAIN_MATH}]
    a.chat.completions.create(model="triage", messages=messages, extra_body=options)  # type: ignore[arg-type]
    again = a.chat.completions.with_raw_response.create(model="triage", messages=messages,  # type: ignore[arg-type]
                                                        extra_body=options)
    assert again.headers["x-triage-reason"] == "sticky"  # a's conversation has a backend now
    other = b.chat.completions.with_raw_response.create(model="triage", messages=messages,  # type: ignore[arg-type]
                                                        extra_body=options)
    assert other.headers["x-triage-reason"] != "sticky"  # b has no conversation of that name


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_runs_through_the_sdk_on_one_backend(stack: Stack, sdk: openai.OpenAI, stream: bool) -> None:
    for fake in stack.fakes.values():
        fake.call_tools = True
    client = sdk
    model = specialist_knob(stack)
    messages: list[Any] = [{"role": "user", "content": IN_DOMAIN_MATH}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model=model, messages=messages, tools=TOOLS, stream=True) as response:
            first_backend = response.headers["x-triage-backend"]
            calls = [call for chunk in response.parse() for choice in chunk.choices
                     for call in (choice.delta.tool_calls or [])]
        assert calls[0].function is not None and calls[0].function.name == "add"
        assert calls[0].function.arguments == '{"x": 2}'  # tool-call deltas arrive unchanged
        call_id, arguments = calls[0].id, calls[0].function.arguments
    else:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=TOOLS)
        first_backend = raw.headers["x-triage-backend"]
        message = raw.parse().choices[0].message
        assert message.tool_calls and message.tool_calls[0].function.name == "add"  # type: ignore[union-attr]
        call_id, arguments = message.tool_calls[0].id, message.tool_calls[0].function.arguments  # type: ignore[union-attr]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "add", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "4"}]
    final = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=TOOLS)
    assert final.headers["x-triage-backend"] == first_backend
    assert final.parse().choices[0].message.content == f"answer from {first_backend}"
    seen = stack.fakes[first_backend].seen[-1]["messages"]
    assert seen[-1] == {"role": "tool", "tool_call_id": call_id, "content": "4"}


def test_the_responses_api_is_routed_streamed_and_continued_on_its_backend(stack: Stack, sdk: openai.OpenAI) -> None:
    client = sdk
    model = specialist_knob(stack)
    raw = client.responses.with_raw_response.create(model=model, input=IN_DOMAIN_MATH,
                                                    instructions="Answer briefly.")
    response = raw.parse()
    backend = raw.headers["x-triage-backend"]
    assert response.output_text == f"answer from {backend}"
    assert response.model == backend
    assert stack.metric("triage_tokens_total", {"backend": backend, "kind": "prompt"}) == 11
    # The next turn names the previous response: only its backend has it, whatever the new text says.
    later = client.responses.with_raw_response.create(model=model, input=OUT_OF_DOMAIN,
                                                      previous_response_id=response.id)
    assert later.headers["x-triage-backend"] == backend and later.headers["x-triage-reason"] == "sticky"
    with client.responses.with_streaming_response.create(model=model, input=IN_DOMAIN_MATH, stream=True) as stream:
        streamed_backend = stream.headers["x-triage-backend"]
        events = list(stream.parse())
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == f"answer from {streamed_backend}"
    completed = [e for e in events if e.type == "response.completed"]
    assert completed and completed[0].response.model == streamed_backend
    requests = stack.metric("triage_requests_total", {"backend": streamed_backend, "cluster": stream.headers[
        "x-triage-cluster"], "reason": stream.headers["x-triage-reason"], "outcome": "ok"})
    assert requests >= 1
    continued = client.responses.create(model=model, input="and again?",
                                        previous_response_id=completed[0].response.id)
    assert continued.model == streamed_backend
