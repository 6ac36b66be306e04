"""A per-backend circuit breaker: closed -> open after consecutive failures -> half-open probe -> closed.

While open, the backend is not offered to the policy; after ``open_seconds`` one request (or the health
probe) may try it (half-open); its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Circuit:
    def __init__(
        self,
        failure_threshold: int = 3,
        open_seconds: float = 15.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at = 0.0
        self._state = "closed"

    @property
    def state(self) -> str:
        if self._state == "open" and self._clock() - self._opened_at >= self.open_seconds:
            self._set("half_open")
        return self._state

    def allows(self) -> bool:
        """Closed, or half-open (a probe request may go through)."""
        return self.state != "open"

    def record_success(self) -> None:
        self._failures = 0
        if self._state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set("open")

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
