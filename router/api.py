"""Thin routes: parse, authenticate, hand to the service. The logic lives in router/service.py.

Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, a
thread hop per dependency per request that cost more than the whole decision for a short query.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.responses import Response

from router.artifact import ArtifactError
from router.errors import ErrorResponse, InvalidRequest, NotReady, UnknownModel
from router.protocol import ChatCompletionRequest, CompletionRequest, FeedbackRequest, ModelList
from router.service import Triage
from router.settings import ApiKey


async def get_triage(request: Request) -> Triage:
    triage: Triage | None = getattr(request.app.state, "triage", None)
    if triage is None:
        raise NotReady("Triage is starting")
    return triage


TriageDep = Annotated[Triage, Depends(get_triage)]


async def client_key(triage: TriageDep, authorization: Annotated[str | None, Header()] = None) -> ApiKey | None:
    return triage.authenticator.check(authorization)


async def admin_key(triage: TriageDep, authorization: Annotated[str | None, Header()] = None) -> ApiKey | None:
    return triage.authenticator.check(authorization, admin=True)


KeyDep = Annotated[ApiKey | None, Depends(client_key)]
AdminDep = Annotated[ApiKey | None, Depends(admin_key)]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 502, 503)
}

api = APIRouter()


@api.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(body: ChatCompletionRequest, triage: TriageDep, key: KeyDep) -> Response:
    return await triage.complete(body, "chat", key)


@api.post("/v1/completions", responses=ERRORS)
async def completions(body: CompletionRequest, triage: TriageDep, key: KeyDep) -> Response:
    return await triage.complete(body, "completion", key)


@api.post("/v1/route", responses=ERRORS)
async def route(
    triage: TriageDep,
    _: KeyDep,
    body: Annotated[dict[str, Any], Body(description="a chat or completion request; nothing is generated")],
) -> JSONResponse:
    kind = ChatCompletionRequest if "messages" in body or "prompt" not in body else CompletionRequest
    try:
        request = kind.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    routed = await triage.route(request)
    backend = triage.pool[routed.backend].settings
    payload: dict[str, Any] = {
        "request_id": routed.request_id, "backend": routed.backend, "backend_model": backend.model,
        "reason": routed.reason, "knob": routed.knob, "cluster": routed.cluster, "ood_score": routed.ood_score,
        "expected_accuracy": routed.expected_accuracy(), "fallback_chain": routed.chain,
        "decision": routed.decision.to_dict() if routed.decision else None,
    }
    return JSONResponse(payload, headers=routed.headers())


@api.get("/v1/models", response_model=ModelList)
async def models(triage: TriageDep, _: KeyDep) -> ModelList:
    return ModelList(data=triage.models())


@api.post("/v1/feedback", responses=ERRORS)
async def feedback(body: FeedbackRequest, triage: TriageDep, _: KeyDep) -> dict[str, Any]:
    if not triage.feedback(body.request_id, body.score):
        raise UnknownModel(f"no recent routed request with id {body.request_id!r}", param="request_id")
    return {"request_id": body.request_id, "recorded": True}


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@api.get("/ready", responses=ERRORS)
async def ready(triage: TriageDep) -> dict[str, Any]:
    generalist = triage.settings.generalist_name
    if not triage.pool[generalist].circuit.allows():
        raise NotReady(f"the generalist {generalist!r} is not reachable")
    artifact = triage.routing.artifact
    return {"status": "ready", "artifact": artifact.manifest.get("created_at"), "k": artifact.k,
            "backends_available": sorted(triage.pool.available())}


@api.get("/metrics")
async def metrics(triage: TriageDep) -> Response:
    return Response(generate_latest(triage.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@api.post("/admin/reload", responses=ERRORS)
async def reload(triage: TriageDep, _: AdminDep) -> dict[str, Any]:
    try:
        routing = triage.reload()
    except ArtifactError as exc:
        raise InvalidRequest(f"artifact rejected, the previous one keeps serving: {exc}") from None
    return {"status": "reloaded", "created_at": routing.artifact.manifest.get("created_at"),
            "k": routing.artifact.k, "models": routing.artifact.models}
