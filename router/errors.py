"""One error shape for every failure a client can see: OpenAI's ``{"error": {message, type, param, code}}``.

    TriageError                     status, type, code; message is safe to show (no paths, no secrets)
    ├── InvalidRequest              400 invalid_request_error
    │   ├── UnknownModel            404 model_not_found
    │   └── NotFound                404 not_found (an unknown request id, a route that is off)
    ├── AuthenticationFailed        401 invalid_api_key
    ├── PermissionDenied            403 permission_denied
    ├── RateLimited                 429 rate_limit_exceeded (carries retry_after)
    ├── PayloadTooLarge             413 payload_too_large
    ├── NotReady                    503 service_unavailable
    ├── NoBackendAvailable          503 no_backend_available (carries retry_after: no eligible backend is up)
    ├── BackendRateLimited          429 backend_rate_limited (the last backend said 429; its retry-after)
    └── BackendFailed               502 backend_error (every candidate failed, or no byte came back)
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class TriageError(Exception):
    status = 500
    type = "internal_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        info = ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=info).model_dump()


class InvalidRequest(TriageError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class UnknownModel(InvalidRequest):
    status = 404
    code = "model_not_found"


class NotFound(InvalidRequest):
    status = 404
    code = "not_found"


class AuthenticationFailed(TriageError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(TriageError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class RateLimited(TriageError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class NotReady(TriageError):
    status = 503
    type = "service_unavailable"
    code = "not_ready"


class NoBackendAvailable(TriageError):
    status = 503
    type = "service_unavailable"
    code = "no_backend_available"


class BackendRateLimited(TriageError):
    status = 429
    type = "rate_limit_error"
    code = "backend_rate_limited"


class BackendFailed(TriageError):
    status = 502
    type = "api_error"
    code = "backend_error"


def error_response(exc: TriageError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def sse_error(exc: TriageError) -> bytes:
    """The error event that ends a stream that already started (then ``data: [DONE]``)."""
    return b"data: " + json.dumps(exc.body()).encode() + b"\n\ndata: [DONE]\n\n"


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    # Report exc.errors(), capped; never str(exc), which can carry input values and paths.
    errors = exc.errors()[:5]
    parts, param = [], None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        param = param or (where or None)
        if err.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    more = len(exc.errors()) - len(errors)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts) or "invalid request", param


def install_handlers(app: FastAPI) -> None:
    """Register specific handlers so every error has OpenAI's shape and the right status code."""

    @app.exception_handler(TriageError)
    async def _triage(_: Request, exc: TriageError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(InvalidRequest(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = InvalidRequest if exc.status_code < 500 else TriageError
        err = kind(str(exc.detail) if exc.status_code < 500 else "internal error")
        err.status = exc.status_code
        err.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, err.code)
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace or a path to the client; the log has the details.
        return error_response(TriageError("internal error in the router"))
