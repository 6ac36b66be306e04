"""API keys (stored as sha256 hashes), and a limiter for failed authentications.

Off by default for local use. A client key may use the API; an admin key may also use /admin/*.
A key's own limits (requests and tokens per minute) are counted in router/limits.py.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from router.errors import AuthenticationFailed, PermissionDenied, RateLimited
from router.settings import ApiKey, AuthSettings

WINDOW_S = 60.0


class FailedAuthLimiter:
    """Slows down guessing: a client address with ``per_minute`` failed authentications in the last minute gets
    429 until the oldest falls out of the window. Remembers at most ``clients`` addresses (least recent dropped),
    so a flood of addresses costs bounded memory."""

    def __init__(self, per_minute: int, clients: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clients = clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, client: str) -> None:
        failures = self._failures.get(client)
        if failures is None:
            return
        now = self._clock()
        while failures and now - failures[0] >= WINDOW_S:
            failures.popleft()
        if len(failures) >= self.per_minute:
            retry_after = max(1, math.ceil(WINDOW_S - (now - failures[0])))
            raise RateLimited(f"too many failed authentications from this address; retry after {retry_after} s",
                              headers={"retry-after": str(retry_after)})

    def failed(self, client: str) -> None:
        failures = self._failures.setdefault(client, deque(maxlen=self.per_minute))
        failures.append(self._clock())
        self._failures.move_to_end(client)
        while len(self._failures) > self.clients:
            self._failures.popitem(last=False)


class Authenticator:
    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.failures = FailedAuthLimiter(settings.failed_per_minute, settings.failed_clients, clock)

    def authenticate(self, authorization: str | None, admin: bool = False, client: str = "") -> ApiKey | None:
        """The caller's key (None when auth is off); raises 401/403 in OpenAI's shape, or 429 for an address that
        keeps failing. Reads only the header: it runs before the body is read."""
        if not self.settings.enabled:
            return None
        self.failures.check(client)
        scheme, _, token = (authorization or "").partition(" ")
        key = self.settings.find(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            self.failures.failed(client)
            raise AuthenticationFailed("missing or invalid API key: send 'Authorization: Bearer <key>'")
        if admin and not key.admin:
            raise PermissionDenied("this endpoint needs an admin key")
        return key

    def check(self, authorization: str | None, admin: bool = False) -> ApiKey | None:
        """``authenticate`` without a client address (the key's own limits are router/limits.py's)."""
        return self.authenticate(authorization, admin)
