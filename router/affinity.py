"""Conversations stay on their backend: session affinity, with the out-of-domain and cliff rules still in charge.

A conversation is named by the caller (``extra_body={"triage": {"session": ...}}`` or the ``x-triage-session``
header) or, for a client that resends its history, by a digest of its system prompt and first user turn; either
way scoped to the API key, so two tenants never share one. The first routed turn records the backend that
answered; a later turn goes back to it (reason ``sticky``) unless

- the turn is out of domain, or that backend is past its cliff for the turn's cluster (the usual rules win);
- that backend is down, or over its queue budget (it is not among the eligible candidates);
- the turn's likeliest calibration domain is not the conversation's (``sessions.follow_domain``, artifacts with
  a domain level), or the backend's expected accuracy for it is more than ``sessions.tolerance`` below the
  policy's choice: the conversation moved to another domain;
- the caller asks for ``{"triage": {"fresh": true}}``.

A Responses API request with ``previous_response_id`` goes to the backend that produced that response, whose
store holds the conversation (another backend could not continue it).

Records live in the shared state (router/state.py): in process by default, in Redis across router replicas.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.policy import Decision
from router.reasons import Reason
from router.settings import ApiKey, SessionSettings
from router.state import SharedState

if TYPE_CHECKING:
    from router.routed import Routed

DIGEST_CHARS = 32


@dataclass(frozen=True)
class Session:
    id: str  # what the caller sees in x-triage-session
    scope: str  # the key the record is stored under (id scoped to the API key)
    later: bool  # a turn after the first: its conversation may already have a backend


def session_of(request: Any, header: str | None, key: ApiKey | None) -> Session | None:
    """The request's conversation, or None (a completion prompt, which has no turns)."""
    options = getattr(request, "triage", None)
    explicit = (options.session if options is not None else None) or header
    if explicit:
        name, later = explicit[:128], True
    else:
        start = request.conversation_start()
        if start is None:
            return None
        # Recorded from the first turn on, so the second turn of a stateless client finds it.
        name = "c-" + hashlib.sha256(start.encode("utf-8", "replace")).hexdigest()[:DIGEST_CHARS]
        later = bool(request.later_turn())
    tenant = key.sha256[:16] if key is not None else "-"
    return Session(name, f"session:{tenant}:{name}", later)


def response_scope(response_id: str, key: ApiKey | None) -> str:
    tenant = key.sha256[:16] if key is not None else "-"
    return f"response:{tenant}:{response_id[:256]}"


def keeps(decision: Decision, previous: str, tolerance: float, previous_domain: str = "",
          follow_domain: bool = True) -> str | None:
    """None if the conversation's backend ``previous`` may answer this turn; else why not (the re-route cause:
    ood, cliff, down, moved). With ``follow_domain``, a turn whose likeliest calibration domain differs from the
    conversation's (artifacts with a domain level) is a move to another domain, decided anew."""
    if decision.model == previous:
        return None
    if decision.is_ood:
        return "ood"
    if follow_domain and decision.domain and previous_domain and decision.domain != previous_domain:
        return "moved"
    candidate = next((c for c in decision.candidates if c.model == previous), None)
    if candidate is None or candidate.excluded_by == "unavailable":
        return "down"
    if candidate.excluded_by is not None:
        return "cliff" if candidate.excluded_by == "cliff" else "ood"
    chosen = next(c for c in decision.candidates if c.model == decision.model)
    if candidate.expected_accuracy < chosen.expected_accuracy - tolerance:
        return "moved"
    return None


class Sessions:
    """Session -> backend records in the shared state, and the rule that sends a later turn back."""

    def __init__(self, settings: SessionSettings, state: SharedState) -> None:
        self.settings = settings
        self.state = state

    async def backend(self, scope: str) -> tuple[str, str] | None:
        """(backend, domain) of the conversation's last turn, or None."""
        record = await self.state.recall(scope) or {}
        backend, domain = record.get("backend"), record.get("domain")
        return (backend, domain if isinstance(domain, str) else "") if isinstance(backend, str) else None

    async def remember(self, scope: str, backend: str, domain: str = "") -> None:
        await self.state.remember(scope, {"backend": backend, "domain": domain}, self.settings.ttl_s)

    async def follow(self, routed: Routed, request: Any, key: ApiKey | None, header: str | None,
                     backends: Collection[str]) -> str | None:
        """Send a later turn back to its conversation's backend (reason ``sticky``), unless the rules above say
        not; then the cause (``ood``, ``cliff``, ``down``, ``moved``, ``fresh``) and the decision stands."""
        assert routed.decision is not None
        previous_response = getattr(request, "previous_response_id", None)
        if previous_response:  # that backend's store holds the conversation: only it can continue it
            known = await self.backend(response_scope(previous_response, key))
            if known is not None and known[0] in backends:
                stick(routed, known[0])
            return None
        routed.session = session_of(request, header, key)
        if routed.session is None or not routed.session.later:
            return None
        known = await self.backend(routed.session.scope)
        if known is None or known[0] not in backends:
            return None
        previous, domain = known
        options = request.triage
        cause = "fresh" if options is not None and options.fresh else keeps(
            routed.decision, previous, self.settings.tolerance, domain, self.settings.follow_domain)
        if cause is None:
            stick(routed, previous)
        return cause


def stick(routed: Routed, backend: str) -> None:
    routed.chain = [backend, *(m for m in routed.chain if m != backend)]
    routed.backend, routed.reason = backend, Reason.STICKY
