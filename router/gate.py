"""The front door, before any route runs: a request id on every response, and authentication before the body.

``Gate`` is plain ASGI. It gives each HTTP request an id (``scope["state"]["request_id"]``) and adds
``x-request-id`` to every response, errors included. For the paths that need a key it reads only the
``Authorization`` header, so an unauthenticated client is refused before a byte of its body is read or parsed;
the key it found travels in ``scope["state"]["api_key"]`` to the route. ``/metrics`` and the API docs are open,
admin-only or off as the server settings say.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from router.auth import Authenticator
from router.errors import NotFound, TriageError, error_response
from router.settings import ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")


class Gate:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, server: ServerSettings) -> None:
        self.app = app
        self.authenticator = authenticator
        self.server = server

    def _access(self, path: str) -> str:
        """"client", "admin", "open" or "off" for this path."""
        if path.startswith("/v1/"):
            return "client"
        if path.startswith("/admin/"):
            return "admin"
        if path == "/metrics":
            return self.server.metrics
        if path.startswith(DOCS_PATHS):
            return self.server.docs
        return "open"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        access = self._access(scope.get("path", ""))
        if access != "open":
            try:
                if access == "off":
                    raise NotFound("not found")
                authorization = _header(scope, b"authorization")
                client = (scope.get("client") or ("", 0))[0]
                state["api_key"] = self.authenticator.authenticate(authorization, admin=access == "admin",
                                                                   client=client)
            except TriageError as exc:
                await error_response(exc)(scope, receive, send_with_id)
                return
        await self.app(scope, receive, send_with_id)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
