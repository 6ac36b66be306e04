"""A per-replica circuit breaker with a passive health check.

    closed --(failure_threshold consecutive failures)--> open --(open_seconds)--> half_open
    half_open --(success)--> closed        half_open --(failure)--> open

A call that finds the server gone (connection refused or reset, a timeout) also makes the replica *suspect* at
once: it leaves routing (``allows()`` is false) until a call or the health probe succeeds, or ``open_seconds``
pass. A killed server shows on the first request that meets it, not at the next probe. A server that answers
badly (a 5xx) is alive: that failure only counts toward the threshold, so one bad request does not take it
out. Only a half-open trial closes an open circuit. While open, or suspect, the replica is not offered to the
policy.
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
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._on_change = on_change
        self._on_health = on_health
        self._failures = 0
        self._opened_at = 0.0
        self._suspect_since: float | None = None
        self._state = "closed"
        self._healthy = True

    @property
    def state(self) -> str:
        if self._state == "open" and self._clock() - self._opened_at >= self.open_seconds:
            self._set("half_open")
        return self._state

    @property
    def suspect(self) -> bool:
        """The last call failed, and neither a success nor ``open_seconds`` have passed since."""
        if self._suspect_since is not None and self._clock() - self._suspect_since >= self.open_seconds:
            self._suspect_since = None
        return self._suspect_since is not None

    def allows(self) -> bool:
        """Closed and not suspect, or half-open (a trial request may go through)."""
        if self._state == "closed" and self._suspect_since is None and self._healthy:
            return True  # the common case, asked several times per request: no clock, no callbacks
        state = self.state
        ok = state == "half_open" or (state == "closed" and not self.suspect)
        self._tell(ok)
        return ok

    def record_success(self) -> None:
        self._failures = 0
        self._suspect_since = None
        if self._state != "closed":
            self._set("closed")
        self._tell(True)

    def record_failure(self, suspect: bool = True) -> None:
        """``suspect``: the failure says the server is gone (refused, timed out), not that it answered badly."""
        self._failures += 1
        if suspect:
            self._suspect_since = self._clock()
        if self._state == "half_open" or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set("open")
        if suspect or self._state == "open":
            self._tell(False)

    def record_alive(self) -> None:
        """The health probe reached the server: no longer suspect. An open circuit stays open (a server whose
        engine died can still list its models), and the failure count stands."""
        if self.state == "half_open":
            self.record_success()
            return
        self._suspect_since = None
        self.allows()

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    def _tell(self, healthy: bool) -> None:
        if healthy != self._healthy:
            self._healthy = healthy
            if self._on_health is not None:
                self._on_health(healthy)
