"""A small fake OpenAI-compatible backend for httpx.MockTransport: fast unit tests and fault injection.

It answers like vLLM does (ids, usage, SSE chunks, a final usage chunk when asked, ``data: [DONE]``) and
records every request it saw, so tests can assert what the router forwarded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from router.artifact import Artifact
from router.settings import Settings, load_settings


@dataclass
class FakeBackend:
    served_model: str
    reply: str = "Hello from the fake backend."
    # None | "500" | "429" | "connect" | "malformed" | "broken_sse" | "reset_mid_stream" | "400"
    fault: str | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    call_tools: bool = False  # chat with tools: call the first tool, then answer once its result comes back
    responses: set[str] = field(default_factory=set)  # the Responses API ids this backend stored

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            if self.fault == "connect":
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(200, json={"object": "list", "data": [{"id": self.served_model}]})
        body = json.loads(request.content)
        self.seen.append(body)
        if self.fault == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if self.fault == "429":
            return httpx.Response(429, headers={"retry-after": "7"},
                                  json={"error": {"message": "busy", "type": "rate_limit_error"}})
        if self.fault == "500":
            return httpx.Response(500, json={"error": {"message": "boom", "type": "server_error"}})
        if self.fault == "400":
            return httpx.Response(400, json={"error": {"message": "max_tokens is too large", "type":
                                                       "invalid_request_error", "param": "max_tokens", "code": None}})
        if self.fault == "malformed":
            return httpx.Response(200, content=b"{not json", headers={"content-type": "application/json"})
        chat = request.url.path.endswith("/chat/completions")
        if request.url.path.endswith("/responses"):
            return self._responses(body)
        if body.get("model") != self.served_model:
            return httpx.Response(404, json={"error": {"message": f"model {body.get('model')} not served",
                                                       "type": "NotFoundError", "param": None, "code": 404}})
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=_Stream(self._events(body, chat)))
        return httpx.Response(200, json=self._completion(body, chat))

    def _usage(self) -> dict[str, int]:
        words = len(self.reply.split())
        return {"prompt_tokens": 11, "completion_tokens": words, "total_tokens": 11 + words}

    def _wants_tool(self, body: dict[str, Any]) -> bool:
        return self.call_tools and bool(body.get("tools")) and body["messages"][-1].get("role") != "tool"

    def _tool_call(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["tools"][0]["function"]["name"]
        return {"id": "call-1", "type": "function", "function": {"name": name, "arguments": '{"x": 2}'}}

    def _responses(self, body: dict[str, Any]) -> httpx.Response:
        previous = body.get("previous_response_id")
        if previous and previous not in self.responses:  # as vLLM: only the server that stored it knows it
            return httpx.Response(404, json={"error": {"message": f"response {previous} not found",
                                                       "type": "invalid_request_error", "param": None, "code": None}})
        response_id = f"resp_{self.served_model}_{len(self.responses)}"
        self.responses.add(response_id)
        words = self.reply.split()
        usage = {"input_tokens": 11, "output_tokens": len(words), "total_tokens": 11 + len(words)}
        message = {"type": "message", "id": "msg-1", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": self.reply, "annotations": []}]}
        response = {"id": response_id, "object": "response", "created_at": 1, "model": self.served_model,
                    "status": "completed", "output": [message], "usage": usage, "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": []}
        if not body.get("stream"):
            return httpx.Response(200, json=response)

        async def events() -> AsyncIterator[bytes]:
            def event(kind: str, **data: Any) -> bytes:
                payload = json.dumps({"type": kind, "sequence_number": 0, **data})
                return f"event: {kind}\ndata: {payload}\n\n".encode()

            yield event("response.created", response={**response, "status": "in_progress", "output": [],
                                                      "usage": None})
            for i, word in enumerate(words):
                yield event("response.output_text.delta", item_id="msg-1", output_index=0, content_index=0,
                            delta=word if i == 0 else " " + word)
            yield event("response.completed", response=response)

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Stream(events()))

    def _completion(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        if chat and self._wants_tool(body):
            message = {"role": "assistant", "content": None, "tool_calls": [self._tool_call(body)]}
            return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": self.served_model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}],
                    "usage": self._usage()}
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": self.reply},
                                      "finish_reason": "stop", "logprobs": None}
            return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": self.served_model,
                    "choices": [choice], "usage": self._usage()}
        return {"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": self.served_model,
                "choices": [{"index": 0, "text": self.reply, "finish_reason": "stop", "logprobs": None}],
                "usage": self._usage()}

    async def _events(self, body: dict[str, Any], chat: bool) -> AsyncIterator[bytes]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if chat and self._wants_tool(body):
            call = {"index": 0, **self._tool_call(body)}
            for delta in ({"role": "assistant", "tool_calls": [call]}, {}):
                chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                         "model": self.served_model, "usage": None,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None if delta else "tool_calls"}]}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            return
        words = self.reply.split()
        for i, word in enumerate(words):
            if self.fault == "reset_mid_stream" and i == 2:
                raise httpx.ReadError("connection reset by peer")
            piece = word if i == 0 else " " + word
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": piece, "finish_reason": None}
                obj = "text_completion"
            chunk = {"id": "chatcmpl-fake", "object": obj, "created": 1, "model": self.served_model,
                     "choices": [choice], "usage": None}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        if self.fault == "broken_sse":
            yield b"data: {\"truncated"
            return
        if include_usage:
            final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                     "model": self.served_model, "choices": [], "usage": self._usage()}
            yield b"data: " + json.dumps(final).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"


class _Stream(httpx.AsyncByteStream):
    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for event in self._events:
            yield event


def fleet_config(artifact: Artifact, tmp_path: Path, **extra: object) -> Settings:
    """Settings for one fake backend per artifact model (http://N.backend.test/v1, served id served-N)."""
    backends = [
        {"name": m, "base_url": f"http://{i}.backend.test/v1", "model": f"served-{i}",
         "role": "generalist" if m == artifact.generalist else "specialist",
         "price_per_mtok": {"input": 0.2, "output": 0.2}}
        for i, m in enumerate(artifact.models)
    ]
    config = {"artifact": str(artifact.path), "backends": backends, "health": {"probe_interval_s": 0},
              "decision_log": {"path": str(tmp_path / "decisions.jsonl")}, **extra}
    path = tmp_path / "triage.yaml"
    path.write_text(json.dumps(config))
    return load_settings(path, environ={})
