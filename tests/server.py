"""Run an ASGI app under a real uvicorn server on a free loopback port, in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve(app: Any, timeout: float = 60.0) -> Iterator[str]:
    """Yields the base URL (http://127.0.0.1:PORT); stops the server (graceful, then forced) on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server failed to start (see the log above)")
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start in time")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def routed_headers(base_url: str, queries: list[str], model: str = "triage:quality") -> list[dict[str, str]]:
    """Each query through the openai SDK against a server whose fakes answer ``answer from <backend>``:
    checks that the answer came from the backend the headers name, and returns the headers."""
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    headers = []
    for query in queries:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": query}])
        assert raw.parse().choices[0].message.content == f"answer from {raw.headers['x-triage-backend']}"
        headers.append(dict(raw.headers))
    return headers
