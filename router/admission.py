"""Admission: which of a request's eligible models takes it now, given the queue each would keep it in.

The policy ranks the models by quality and price as if the pool were idle. With a queue budget (``max_queue_ms``
from the request, or ``pool.max_queue_ms``), the first model in that ranking whose least busy replica would
start the request within the budget takes it (router/load.py estimates the wait). Only models eligible for
this query are candidates: never a specialist past its cliff, never a specialist for an out-of-domain query
(those go to the generalists alone). When every candidate is over budget the request waits, in a queue of at
most ``queue_size``, for a replica to free a place, for at most ``queue_timeout_s``; then it is refused with
429 and a ``retry-after`` from the shortest expected wait. On an idle pool every wait is zero: the policy's
choice stands, exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from router.backends import BackendPool
from router.errors import RateLimited
from router.metrics import Metrics
from router.policy import Decision
from router.reasons import Reason
from router.settings import PoolSettings

SPILLOVER = Reason.SPILLOVER  # the x-triage-reason of a request that went to a less preferred model for room
OOD_REASONS = ("ood_fallback", "ood_margin")


@dataclass(frozen=True)
class Placement:
    chain: list[str]
    preferred: str  # the model the policy ranked first among those that could answer
    accuracy_given_up: float = 0.0  # its expected accuracy minus the chosen one's (0 when it took the request)

    @property
    def spilled(self) -> bool:
        return self.chain[0] != self.preferred


def candidates(decision: Decision, chain: Sequence[str]) -> list[str]:
    """The models that may take the request, best first. Out-of-domain decisions: the chain (its generalists)
    only; otherwise the chain's first, then every eligible model by utility, then the rest of the chain."""
    if decision.is_ood or decision.reason in OOD_REASONS:
        return list(chain)
    return list(dict.fromkeys([chain[0], *decision.fallbacks(), *chain]))


class Admission:
    def __init__(self, pool: BackendPool, settings: PoolSettings, metrics: Metrics) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.waiting = 0

    def _first_within(self, names: Sequence[str], budget_s: float) -> tuple[str | None, list[str]]:
        """(the first model up with room within the budget, the models up looked at on the way)."""
        up = []
        for name in names:
            wait = self.pool[name].room()
            if wait is None:
                continue
            up.append(name)
            if wait <= budget_s:
                return name, up
        return None, up

    async def place(self, decision: Decision, chain: list[str], budget_ms: float) -> Placement:
        """The chain to try, its first model the best one within budget; waits for room (bounded) or raises
        ``RateLimited`` (429, retry-after)."""
        budget_s = budget_ms / 1000
        first = self.pool[chain[0]].room()
        if first is not None and first <= budget_s:  # the common case: room at the policy's choice
            return Placement(chain, chain[0])
        names = [n for n in candidates(decision, chain) if n in self.pool]
        target, up = self._first_within(names, budget_s)
        if not up:  # nothing is up to wait for: the caller's chain says what failed
            return Placement(chain, chain[0])
        deadline = time.monotonic() + self.settings.queue_timeout_s
        while target is None:
            remaining = deadline - time.monotonic()
            if self.waiting >= self.settings.queue_size or remaining <= 0:
                self._refuse("queue_full" if remaining > 0 else "timeout", up)
            self.waiting += 1
            self.metrics.admission_waiting.set(self.waiting)
            try:
                await self.pool.released(remaining)
            finally:
                self.waiting -= 1
                self.metrics.admission_waiting.set(self.waiting)
            target, up = self._first_within(names, budget_s)
            if not up:
                return Placement(chain, chain[0])
        preferred = up[0]
        if target == preferred:
            return Placement(chain, preferred)
        passed = set(up[: up.index(target)])
        rest = [n for n in chain if n != target and (n not in passed or n == chain[-1])]
        accuracy = {c.model: c.expected_accuracy for c in decision.candidates}
        given_up = accuracy.get(preferred, 0.0) - accuracy.get(target, 0.0)
        self.metrics.spillover.labels(preferred, target).inc()
        self.metrics.accuracy_given_up.observe(max(0.0, given_up))
        return Placement([target, *rest], preferred, given_up)

    def _refuse(self, reason: str, names: Sequence[str]) -> None:
        self.metrics.admission_rejected.labels(reason).inc()
        wait = min(self.pool[n].queue_seconds() for n in names)
        seconds = max(1, math.ceil(wait if math.isfinite(wait) else 1))
        raise RateLimited(
            "every model that may answer this request is busy past its queue budget "
            f"({'the waiting queue is full' if reason == 'queue_full' else 'no room came in time'}); "
            f"retry after {seconds} s", headers={"retry-after": str(seconds)})
