"""API keys (stored as sha256 hashes) and per-key rate limits (requests and tokens per minute).

Off by default for local use. A client key may use the API; an admin key may also use /admin/*.
Limits are a sliding 60-second window per key; a refused request gets 429 with ``retry-after``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from router.errors import AuthenticationFailed, PermissionDenied, RateLimited
from router.settings import ApiKey, AuthSettings

WINDOW_S = 60.0


class _Window:
    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()

    def trim(self, now: float) -> None:
        while self.requests and now - self.requests[0] >= WINDOW_S:
            self.requests.popleft()
        while self.tokens and now - self.tokens[0][0] >= WINDOW_S:
            self.tokens.popleft()


class Authenticator:
    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def check(self, authorization: str | None, admin: bool = False) -> ApiKey | None:
        """The caller's key (None when auth is off); raises 401/403/429 in OpenAI's shape."""
        if not self.settings.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        key = self.settings.find(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            raise AuthenticationFailed("missing or invalid API key: send 'Authorization: Bearer <key>'")
        if admin and not key.admin:
            raise PermissionDenied("this endpoint needs an admin key")
        self._admit(key)
        return key

    def _admit(self, key: ApiKey) -> None:
        now = self._clock()
        window = self._windows.setdefault(key.sha256, _Window())
        window.trim(now)
        if key.requests_per_minute is not None and len(window.requests) >= key.requests_per_minute:
            self._refuse(window.requests[0], now, "requests")
        if key.tokens_per_minute is not None and sum(n for _, n in window.tokens) >= key.tokens_per_minute:
            self._refuse(window.tokens[0][0], now, "tokens")
        window.requests.append(now)

    @staticmethod
    def _refuse(oldest: float, now: float, what: str) -> None:
        retry_after = max(1, math.ceil(WINDOW_S - (now - oldest)))
        raise RateLimited(
            f"rate limit reached ({what} per minute); retry after {retry_after} s",
            headers={"retry-after": str(retry_after)},
        )

    def spend_tokens(self, key: ApiKey | None, tokens: int) -> None:
        if key is None or tokens <= 0:
            return
        self._windows.setdefault(key.sha256, _Window()).tokens.append((self._clock(), tokens))
