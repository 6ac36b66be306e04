"""The benches' lean HTTP client reads what real servers send: JSON bodies and chunked SSE streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from bench.harness.rawhttp import Pool, request_bytes, run
from bench.harness.timing import timed_raw
from tests.server import serve


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> dict[str, object] | StreamingResponse:
        body = await request.json()
        if request.headers.get("authorization") != "Bearer k":
            return {"error": "no key"}
        if not body.get("stream"):
            return {"choices": [{"message": {"content": body["messages"][0]["content"]}}]}

        async def events() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'
            await asyncio.sleep(0.05)
            for word in ("one", "two"):
                yield f"data: {json.dumps({'choices': [{'delta': {'content': word}}]})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/route")
    async def route(request: Request) -> dict[str, object]:
        return {"got": (await request.json())["n"]}

    return app


def test_post_many_sends_every_body_once_and_times_each() -> None:
    with serve(echo_app()) as url:
        latencies, wall = run(url, "/v1/route", iter({"n": i} for i in range(100)), 8, 100)
    assert len(latencies) == 100 and all(0 < t < wall for t in latencies)


async def test_a_chunked_stream_is_read_to_the_end_and_the_first_token_is_not_the_role_chunk() -> None:
    with serve(echo_app()) as url:
        pool = Pool()
        try:
            headers = {"authorization": "Bearer k"}
            plain = await timed_raw(pool, url + "/v1/chat/completions",
                                    {"messages": [{"role": "user", "content": "hi"}]}, headers)
            streamed = await timed_raw(pool, url + "/v1/chat/completions",
                                       {"stream": True, "messages": [{"role": "user", "content": "hi"}]}, headers)
            seen: list[bytes] = []
            status, body = await pool.request(url, "/v1/chat/completions", request_bytes(
                "x", "/v1/chat/completions", {"stream": True, "messages": []}, headers), seen.append)
        finally:
            pool.close()
    assert plain.ok and plain.first_token is None
    assert streamed.ok and streamed.first_token is not None and 0.05 <= streamed.first_token <= streamed.total
    assert status == 200 and b"".join(seen) == body and body.endswith(b"data: [DONE]\n\n")
