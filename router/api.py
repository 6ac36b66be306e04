"""Thin routes: parse, authenticate, hand to the service. The logic lives in router/service.py.

Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, a
thread hop per dependency per request that cost more than the whole decision for a short query.
"""

from __future__ import annotations

import os
import signal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.responses import Response

from router.artifact import ArtifactError
from router.errors import ErrorResponse, InvalidRequest, NotReady
from router.metrics import exposition
from router.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    FeedbackRequest,
    ModelCard,
    ModelList,
    ResponsesRequest,
)
from router.service import Triage
from router.settings import ApiKey


async def get_triage(request: Request) -> Triage:
    triage: Triage | None = getattr(request.app.state, "triage", None)
    if triage is None:
        raise NotReady("Triage is starting")
    return triage


TriageDep = Annotated[Triage, Depends(get_triage)]


async def client_key(request: Request, triage: TriageDep) -> ApiKey | None:
    """The key router.gate.Gate authenticated (before the body was read), now held to its rate limits."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is not None:
        await triage.limits.admit_request(key)
    return key


async def request_id(request: Request) -> str | None:
    rid: str | None = getattr(request.state, "request_id", None)
    return rid


KeyDep = Annotated[ApiKey | None, Depends(client_key)]
# /admin/* is admin-only in router.gate.Gate, before the body is read; this only documents it in the route.
AdminDep = Annotated[ApiKey | None, Depends(client_key)]
RequestIdDep = Annotated[str | None, Depends(request_id)]
SessionDep = Annotated[str | None, Header(alias="x-triage-session", max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 502, 503)
}

api = APIRouter()


@api.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(body: ChatCompletionRequest, triage: TriageDep, key: KeyDep, rid: RequestIdDep,
                           session: SessionDep = None) -> Response:
    return await triage.complete(body, "chat", key, rid, session)


@api.post("/v1/completions", responses=ERRORS)
async def completions(body: CompletionRequest, triage: TriageDep, key: KeyDep, rid: RequestIdDep) -> Response:
    return await triage.complete(body, "completion", key, rid)


@api.post("/v1/responses", responses=ERRORS)
async def responses(body: ResponsesRequest, triage: TriageDep, key: KeyDep, rid: RequestIdDep,
                    session: SessionDep = None) -> Response:
    return await triage.complete(body, "responses", key, rid, session)


@api.post("/v1/route", responses=ERRORS)
async def route(
    triage: TriageDep,
    _: KeyDep,
    rid: RequestIdDep,
    body: Annotated[dict[str, Any], Body(description="a chat or completion request; nothing is generated")],
) -> JSONResponse:
    kind = ChatCompletionRequest if "messages" in body or "prompt" not in body else CompletionRequest
    try:
        request = kind.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    routed = await triage.route(request, rid)
    return JSONResponse(triage.route_payload(routed), headers=routed.headers())


@api.get("/v1/models", response_model=ModelList)
async def models(triage: TriageDep, _: KeyDep) -> ModelList:
    return ModelList(data=triage.models())


@api.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS)
async def model(model_id: str, triage: TriageDep, _: KeyDep) -> ModelCard:
    return triage.model(model_id)


@api.post("/v1/feedback", responses=ERRORS)
async def feedback(body: FeedbackRequest, triage: TriageDep, key: KeyDep) -> dict[str, Any]:
    await triage.accounting.feedback(body.request_id, body.score, key)
    return {"request_id": body.request_id, "recorded": True}


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@api.get("/ready", responses=ERRORS)
async def ready(triage: TriageDep) -> dict[str, Any]:
    return triage.ready()


@api.get("/metrics")
async def metrics(triage: TriageDep) -> Response:
    return Response(exposition(triage.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@api.post("/admin/reload", responses=ERRORS)
async def reload(request: Request, triage: TriageDep, _: AdminDep) -> dict[str, Any]:
    try:
        routing = triage.reload()
    except ArtifactError as exc:
        raise InvalidRequest(f"artifact rejected, the previous one keeps serving: {exc}") from None
    answer = {"status": "reloaded", "created_at": routing.artifact.manifest.get("created_at"),
              "k": routing.artifact.k, "models": routing.artifact.models}
    supervisor: int | None = request.app.state.supervisor
    if supervisor is not None:  # one of `triage serve --workers N`: the others load it too
        os.kill(supervisor, signal.SIGHUP)
        answer["workers"] = "replacing every worker: each new one loads this artifact before the old one stops"
    return answer
