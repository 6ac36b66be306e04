"""Per-key limits in process: request windows, token reservations settled on usage, and the 400s for bounds."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from router.errors import InvalidRequest, RateLimited
from router.limits import Limits, prompt_estimate
from router.protocol import ChatCompletionRequest, CompletionRequest
from router.settings import ApiKey, LimitSettings
from router.state import LocalState


def key(secret: str, **kw: object) -> ApiKey:
    return ApiKey.model_validate({"name": secret, "sha256": hashlib.sha256(secret.encode()).hexdigest(), **kw})


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def chat(content: str = "what is 2 + 2?", **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "triage", "messages": [{"role": "user", "content": content}], **extra})


def limits(clock: Clock | None = None, **settings: int) -> Limits:
    return Limits(LimitSettings.model_validate(settings), LocalState(clock=clock or Clock()))


async def test_requests_per_minute_with_retry_after() -> None:
    clock = Clock()
    lim, api_key = limits(clock), key("sk-a", requests_per_minute=2)
    await lim.admit_request(api_key)
    clock.now += 20
    await lim.admit_request(api_key)
    with pytest.raises(RateLimited) as info:
        await lim.admit_request(api_key)
    assert info.value.headers["retry-after"] == "40"
    clock.now += 41
    await lim.admit_request(api_key)
    await lim.admit_request(None)  # auth off: nothing to count


async def test_reservations_hold_the_budget_until_settled() -> None:
    clock = Clock()
    lim, api_key = limits(clock), key("sk-a", tokens_per_minute=100)
    first = await lim.reserve(api_key, 60)
    with pytest.raises(RateLimited):
        await lim.reserve(api_key, 60)  # 60 + 60 > 100 while the first is still in flight
    lim.settle(first, 10)  # it used 10: 90 free now
    second = await lim.reserve(api_key, 60)
    lim.settle(second, 85)  # usage over the reservation is charged in full
    with pytest.raises(RateLimited) as info:
        await lim.reserve(api_key, 10)
    assert 1 <= int(info.value.headers["retry-after"]) <= 60
    clock.now += 60
    assert await lim.reserve(api_key, 100) is not None


async def test_concurrent_reservations_never_exceed_the_budget() -> None:
    lim, api_key = limits(), key("sk-a", tokens_per_minute=100)

    async def one() -> bool:
        try:
            await lim.reserve(api_key, 30)
        except RateLimited:
            return False
        await asyncio.sleep(0)
        return True

    admitted = await asyncio.gather(*(one() for _ in range(50)))
    assert sum(admitted) == 3


def test_bound_is_prompt_plus_max_tokens_times_choices() -> None:
    lim = limits(default_max_tokens=500)
    request = chat(max_tokens=10, n=2)
    assert lim.bound(request, None) == prompt_estimate(request) + 20
    assert lim.bound(chat(), None) == prompt_estimate(chat()) + 500  # no max_tokens: the configured default
    assert lim.bound(chat(), key("sk-a", tokens_per_minute=100)) == 100  # ... never more than the whole budget
    assert lim.bound(chat(max_completion_tokens=7), None) == prompt_estimate(chat()) + 7
    completion = CompletionRequest.model_validate({"model": "triage", "prompt": "x" * 30, "best_of": 3,
                                                   "max_tokens": 5})
    assert lim.bound(completion, None) == 10 + 8 + 15
    texts = CompletionRequest.model_validate({"model": "triage", "prompt": ["x" * 30, "y" * 3], "max_tokens": 5})
    assert lim.bound(texts, None) == (10 + 8) + (1 + 8) + 2 * 5  # each text is its own completion
    ids = CompletionRequest.model_validate({"model": "triage", "prompt": [1, 2, 3, 4], "max_tokens": 5})
    assert lim.bound(ids, None) == 4 + 5  # token ids are counted exactly


@pytest.mark.parametrize(("extra", "param"), [
    ({"max_tokens": 2**70}, "max_tokens"),
    ({"max_tokens": 40_000}, "max_tokens"),
    ({"max_completion_tokens": 40_000}, "max_completion_tokens"),
    ({"n": 100}, "n"),
])
def test_absurd_bounds_are_400(extra: dict[str, Any], param: str) -> None:
    lim = limits(max_tokens_cap=32_768, max_choices=8)
    request = chat(**extra)
    with pytest.raises(InvalidRequest) as info:
        lim.bound(request, None)
    assert info.value.param == param


def test_best_of_over_the_cap_is_400() -> None:
    request = CompletionRequest.model_validate({"model": "triage", "prompt": "hi", "best_of": 10_000})
    with pytest.raises(InvalidRequest) as info:
        limits(max_choices=8).bound(request, None)
    assert info.value.param == "best_of"


def test_max_tokens_over_the_keys_whole_budget_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        limits().bound(chat(max_tokens=500), key("sk-a", tokens_per_minute=100))
    assert info.value.status == 400 and "100 tokens per minute" in info.value.message


async def test_request_records_and_feedback_claims_expire() -> None:
    clock = Clock()
    state = LocalState(remember=2, clock=clock)
    await state.remember("r1", {"backend": "b"}, ttl_s=10)
    assert await state.recall("r1") == {"backend": "b"}
    assert await state.claim_feedback("r1", {"score": 1}, ttl_s=10)
    assert not await state.claim_feedback("r1", {"score": 0}, ttl_s=10)  # once per request
    clock.now += 11
    assert await state.recall("r1") is None
    for rid in ("a", "b", "c"):
        await state.remember(rid, {}, ttl_s=100)
    assert await state.recall("a") is None and await state.recall("c") == {}  # bounded: oldest dropped
