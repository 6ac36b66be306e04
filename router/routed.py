"""One request's route: what Triage decided for it, and what happened to it (the headers it answers with)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from router.affinity import Session
from router.limits import Reservation
from router.policy import Decision
from router.settings import ApiKey


@dataclass
class Routed:
    """What Triage decided for one request, and what happened to it."""

    request_id: str
    backend: str
    reason: str
    knob: float | None = None
    cluster: int = -1
    ood_score: float | None = None
    decision: Decision | None = None
    chain: list[str] = field(default_factory=list)
    decision_seconds: float = 0.0
    key: ApiKey | None = None
    reservation: Reservation | None = None  # the key's tokens held for this request until it ends
    prompt_estimate: int = 0  # charged, with the tokens relayed, when a stream is dropped before its usage
    replica: str | None = None  # the index of the backend's replica that answered
    max_queue_ms: float | None = None  # the request's queue budget (None: the config's pool.max_queue_ms)
    session: Session | None = None  # the conversation this turn belongs to (router/affinity.py)

    def expected_accuracy(self) -> float | None:
        if self.decision is None:
            return None
        return next((c.expected_accuracy for c in self.decision.candidates if c.model == self.backend), None)

    def headers(self) -> dict[str, str]:
        headers = {"x-request-id": self.request_id, "x-triage-backend": self.backend,
                   "x-triage-reason": self.reason, "x-triage-cluster": str(self.cluster)}
        if self.replica is not None:
            headers["x-triage-replica"] = self.replica
        if self.session is not None:
            headers["x-triage-session"] = self.session.id
        if self.knob is not None:
            headers["x-triage-knob"] = f"{self.knob:g}"
        if self.ood_score is not None:
            headers["x-triage-ood-score"] = f"{self.ood_score:.4f}"
        accuracy = self.expected_accuracy()
        if accuracy is not None:
            headers["x-triage-expected-accuracy"] = f"{accuracy:.4f}"
        if self.decision is not None and self.decision.domain:
            # Domain names come from calibration data: percent-encoded, a header value stays ASCII.
            headers["x-triage-domain"] = quote(self.decision.domain, safe="")
        return headers
