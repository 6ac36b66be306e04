"""Why a request went where it went: one vocabulary for the policy, the ``x-triage-reason`` header, the metrics'
``reason`` labels and the decision log.

    best                  the policy's choice at the caller's knob
    ood_fallback          out of domain: the generalist answers
    ood_margin            near the out-of-domain line, no specialist beat the generalist by the margin
    cliff                 the best model is past its cliff for this query's cluster; the next eligible one answers
    backend_down          a better model was down (open circuit or failed probe), so the next eligible one answers
    fallback_after_error  the chosen backend failed before answering; the next in the chain did
    pinned                the caller named a backend
    spillover             the preferred model's queue was over the request's budget: the next eligible model
    sticky                a later turn of a conversation, kept on the conversation's backend (router/affinity.py)
    no_text               nothing to embed (token-id prompts): the default route, the generalist
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    BEST = "best"
    OOD_FALLBACK = "ood_fallback"
    OOD_MARGIN = "ood_margin"
    CLIFF = "cliff"
    BACKEND_DOWN = "backend_down"
    FALLBACK_AFTER_ERROR = "fallback_after_error"
    PINNED = "pinned"
    STICKY = "sticky"
    SPILLOVER = "spillover"
    NO_TEXT = "no_text"


# The reasons that mean "not the policy's first choice": triage_fallbacks_total{reason} counts these.
FALLBACKS = (Reason.OOD_FALLBACK, Reason.OOD_MARGIN, Reason.CLIFF, Reason.BACKEND_DOWN,
             Reason.FALLBACK_AFTER_ERROR, Reason.SPILLOVER)
