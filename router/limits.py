"""Per-key limits that hold under concurrency: requests and tokens per minute, with token reservations.

A request's token bound (a prompt estimate plus ``max_tokens`` times ``n``, or the configured default when it
sets no ``max_tokens``) is reserved when it is admitted, so concurrent requests cannot together spend more
than the key's budget; when the request ends the reservation is settled to what it used. A bound that no
budget could admit (``max_tokens`` over the cap, or over the key's whole ``tokens_per_minute``) and an absurd
``n``/``best_of`` are refused with 400 before anything is counted. The counting lives in a ``SharedState``
(router/state.py): in this process, or in Redis for several replicas.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass

from router.errors import InvalidRequest, RateLimited
from router.protocol import ChatCompletionRequest, CompletionRequest, ResponsesRequest
from router.settings import ApiKey, LimitSettings
from router.state import LocalState, SharedState, retry_after

log = logging.getLogger("triage.limits")

# The prompt estimate errs high: about 4 characters make a token in English text, so 3 covers denser text
# (code, numbers), and each message carries a few tokens of chat template around it.
CHARS_PER_TOKEN = 3.0
TOKENS_PER_MESSAGE = 8


@dataclass(frozen=True)
class Reservation:
    key: str       # the key's sha256: what the shared state counts under (never the key itself)
    entry: str     # this request's entry in the key's window
    tokens: int


def _text_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE


def prompt_estimate(request: ChatCompletionRequest | CompletionRequest | ResponsesRequest) -> int:
    """Prompt tokens, erring high; token-id prompts are counted exactly."""
    if isinstance(request, ResponsesRequest):
        return _text_tokens(request.prompt_chars())
    if isinstance(request, ChatCompletionRequest):
        return sum(_text_tokens(len(m.text())) for m in request.messages)
    if isinstance(request.prompt, str):
        return _text_tokens(len(request.prompt))
    return sum(_text_tokens(len(p)) if isinstance(p, str) else len(p) if isinstance(p, list) else 1
               for p in request.prompt)


def prompts(request: ChatCompletionRequest | CompletionRequest | ResponsesRequest) -> int:
    """How many prompts the request generates for: a list of texts (or of token-id lists) is one each."""
    if isinstance(request, CompletionRequest) and isinstance(request.prompt, list) and request.prompt and not \
            isinstance(request.prompt[0], int):
        return len(request.prompt)
    return 1


class Limits:
    def __init__(self, settings: LimitSettings, state: SharedState | None = None) -> None:
        self.settings = settings
        self.state = state if state is not None else LocalState()
        self._pending: set[asyncio.Task[None]] = set()

    def bound(self, request: ChatCompletionRequest | CompletionRequest | ResponsesRequest, key: ApiKey | None) -> int:
        """The most tokens this request may use; raises 400 for a bound that must be refused."""
        cap = self.settings.max_tokens_cap
        choices = max(request.n or 1, getattr(request, "best_of", None) or 1)
        if choices > self.settings.max_choices:
            param = "best_of" if (getattr(request, "best_of", None) or 1) > (request.n or 1) else "n"
            raise InvalidRequest(f"{param} may be at most {self.settings.max_choices}", param=param)
        asked = request.max_tokens
        param = "max_tokens"
        if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens is not None:
            asked, param = request.max_completion_tokens, "max_completion_tokens"
        if asked is not None and asked > cap:
            raise InvalidRequest(f"{param} may be at most {cap}", param=param)
        tokens = prompt_estimate(request) + (asked or self.settings.default_max_tokens) * choices * prompts(request)
        budget = key.tokens_per_minute if key is not None else None
        if budget is not None and asked is not None and tokens > budget:
            raise InvalidRequest(
                f"this request may use up to {tokens} tokens (prompt and {param} x n), more than this key's "
                f"{budget} tokens per minute", param=param)
        if budget is not None:
            tokens = min(tokens, budget)  # an unset max_tokens reserves at most the whole budget
        return tokens

    async def admit_request(self, key: ApiKey | None) -> None:
        """Counts one request of ``key`` (every /v1 call); raises 429 with ``retry-after`` over the limit."""
        if key is not None and key.requests_per_minute is not None:
            await self._admit(key, key.requests_per_minute, None, 0)

    async def reserve(self, key: ApiKey | None, tokens: int) -> Reservation | None:
        """Reserves a generating request's token bound; raises 429 when the key's window cannot hold it."""
        if key is None or key.tokens_per_minute is None:
            return None
        return await self._admit(key, None, key.tokens_per_minute, tokens)

    async def _admit(self, key: ApiKey, requests: int | None, tokens_per_minute: int | None,
                     tokens: int) -> Reservation:
        entry = uuid.uuid4().hex
        refusal = await self.state.admit(key.sha256, requests, tokens_per_minute, tokens, entry)
        if refusal is not None:
            wait = retry_after(refusal)
            raise RateLimited(f"rate limit reached ({refusal.what} per minute); retry after {wait} s",
                              headers={"retry-after": str(wait)})
        return Reservation(key.sha256, entry, tokens)

    def settle(self, reservation: Reservation | None, tokens: int) -> None:
        """Replaces the reservation with ``tokens`` used. In process at once; a shared state's call runs as a
        task so that accounting (called where nothing may wait, e.g. a stream's cleanup) never blocks on it."""
        if reservation is None:
            return
        if isinstance(self.state, LocalState):
            self.state.settle_now(reservation.key, reservation.entry, tokens)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a stream finalised outside it): the reservation expires with the window
            return
        task = loop.create_task(self._settle(reservation, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, reservation: Reservation, tokens: int) -> None:
        try:
            await self.state.settle(reservation.key, reservation.entry, tokens)
        except Exception as exc:  # the reservation stays, and expires with the window: errs toward refusing
            log.warning("could not settle a token reservation: %s", type(exc).__name__)

    async def drain(self) -> None:
        """Waits for settlements still in flight (at shutdown, and in tests)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
