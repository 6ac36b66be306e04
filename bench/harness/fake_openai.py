"""A fake but realistic OpenAI-compatible server on raw asyncio: the backend for load, overhead and fault tests.

    python -m bench.harness.fake_openai --port 8101 --latency-ms 20 --tokens-per-s 200 --served-name served-0

It answers ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` the way vLLM does:
ids, ``usage``, SSE chunks (a role chunk, one chunk per token, a finish chunk, a usage-only chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``), HTTP/1.1 keep-alive, chunked streaming.
``--latency-ms`` is the time to the first byte, ``--tokens-per-s`` paces the stream (0: no delay, the
fast mode that proxy-overhead runs use).

Raw asyncio rather than a web framework: the fake must cost as little CPU as possible (it shares two cores
with the router it measures), and fault injection needs the socket itself (a TCP reset, a half-sent body).

Faults (``--fault`` or ``POST /fake/config {"fault": ...}`` at run time):
    500 / 429          an OpenAI-shaped error with that status
    malformed          200 with a body that is not JSON
    broken_sse         a few tokens, a truncated event, then a clean end of the body without [DONE]
    reset_mid_stream   a few tokens, then a TCP reset (SO_LINGER 0)
    hang               never answers (the client's timeout must fire)
``fault_scope`` says whether ``/v1/models`` (the router's health probe) fails too: "all" (default, a
really broken server) or "completions" (a server whose probe looks fine while generation fails).

``GET /fake/stats`` reports what the fake saw, notably ``disconnects``: requests whose client closed the
connection before the answer was complete (how tests prove that the router cancels backend calls).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

FAULTS = (None, "500", "429", "malformed", "broken_sse", "reset_mid_stream", "hang")
MAX_HEADER_BYTES = 64 * 1024


@dataclass
class FakeConfig:
    served_name: str = "fake-model"
    latency_ms: float = 0.0
    tokens_per_s: float = 0.0
    completion_tokens: int = 16
    fault: str | None = None
    fault_scope: str = "all"  # "all" | "completions"
    fault_after_tokens: int = 3

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown setting {key!r}")
            setattr(self, key, value)
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}")


@dataclass
class FakeStats:
    completions: int = 0
    models: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    disconnects: int = 0
    active: int = 0
    paths: dict[str, int] = field(default_factory=dict)


class _ClientGone(Exception):
    """The client closed the connection (EOF while we were still answering)."""


class _Connection:
    """One keep-alive HTTP/1.1 connection: read a request, answer it, repeat."""

    def __init__(self, server: FakeOpenAI, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def serve(self) -> None:
        try:
            while True:
                request = await self._read_request()
                if request is None:
                    return
                method, path, headers, body = request
                keep_alive = await self.server.dispatch(self, method, path, body)
                if not keep_alive or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _ClientGone):
            return
        finally:
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _read_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed an idle keep-alive connection
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = await self.reader.readexactly(length) if length else b""
        return method, path.split("?", 1)[0], headers, body

    # ---- writing ----------------------------------------------------------------------------------
    def head(self, status: int, content_type: str, length: int | None) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error"}.get(status, "Status")
        framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
        self.writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n{framing}\r\n"
                          f"server: fake-openai\r\n\r\n".encode("latin-1"))

    async def send_json(self, status: int, payload: Any) -> None:
        await self.send_bytes(status, json.dumps(payload).encode(), "application/json")

    async def send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.head(status, content_type, len(data))
        self.writer.write(data)
        await self.writer.drain()

    async def send_chunk(self, data: bytes) -> None:
        if self.reader.at_eof():
            raise _ClientGone
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end_chunks(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def reset(self) -> None:
        """Abort with a TCP RST, as a crashed or killed server's kernel would send."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def wait_closed_by_client(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the client closes the connection (EOF)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return False
        return data == b""


class FakeOpenAI:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.stats = FakeStats()
        self._server: asyncio.Server | None = None
        self._ids = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEADER_BYTES, backlog=1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one small write per token
        await _Connection(self, reader, writer).serve()

    # ---- routing ----------------------------------------------------------------------------------
    async def dispatch(self, conn: _Connection, method: str, path: str, body: bytes) -> bool:
        """Answers one request; returns whether the connection can be reused."""
        self.stats.paths[path] = self.stats.paths.get(path, 0) + 1
        if path == "/fake/stats":
            await conn.send_json(200, asdict(self.stats) | {"config": asdict(self.config)})
            return True
        if path == "/fake/config" and method == "POST":
            try:
                self.config.update(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                await conn.send_json(400, _error(str(exc), "invalid_request_error"))
                return True
            await conn.send_json(200, asdict(self.config))
            return True
        if path == "/fake/reset-stats" and method == "POST":
            self.stats = FakeStats()
            await conn.send_json(200, {"ok": True})
            return True
        if path.endswith("/models") and method == "GET":
            self.stats.models += 1
            if self.config.fault_scope == "all" and self.config.fault in ("500", "429", "hang"):
                return await self._fail(conn)
            await conn.send_json(200, {"object": "list", "data": [
                {"id": self.config.served_name, "object": "model", "created": 0, "owned_by": "fake-openai"}]})
            return True
        if method == "POST" and (path.endswith("/chat/completions") or path.endswith("/completions")):
            self.stats.completions += 1
            self.stats.active += 1
            try:
                return await self._complete(conn, path.endswith("/chat/completions"), body)
            finally:
                self.stats.active -= 1
        await conn.send_json(404, _error(f"no route {method} {path}", "NotFoundError"))
        return True

    async def _fail(self, conn: _Connection) -> bool:
        fault = self.config.fault
        if fault == "hang":
            # Hold the request until the client gives up; that close is what the router's timeout causes.
            if await conn.wait_closed_by_client(3600):
                self.stats.disconnects += 1
            return False
        status = 429 if fault == "429" else 500
        await conn.send_json(status, _error("injected failure", "server_error"))
        return True

    async def _complete(self, conn: _Connection, chat: bool, raw: bytes) -> bool:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            await conn.send_json(400, _error("the body is not a JSON object", "invalid_request_error"))
            return True
        config = self.config
        if body.get("model") != config.served_name:
            await conn.send_json(404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError"))
            return True
        if config.fault in ("500", "429", "hang"):
            return await self._fail(conn)
        if config.latency_ms > 0 and await conn.wait_closed_by_client(config.latency_ms / 1000):
            self.stats.disconnects += 1
            return False
        if config.fault == "malformed":
            await conn.send_bytes(200, b"{not json", "application/json")
            return True
        self._ids += 1
        prompt_tokens = _count_prompt_tokens(body, chat)
        tokens = min(config.completion_tokens, int(body.get("max_tokens") or config.completion_tokens))
        if not body.get("stream"):
            await conn.send_json(200, self._whole(chat, prompt_tokens, tokens))
            return True
        return await self._stream(conn, chat, body, prompt_tokens, tokens)

    def _whole(self, chat: bool, prompt_tokens: int, tokens: int) -> dict[str, Any]:
        text = "".join(_token(i) for i in range(tokens))
        usage = _usage(prompt_tokens, tokens)
        if chat:
            return {"id": f"chatcmpl-fake-{self._ids}", "object": "chat.completion", "created": int(time.time()),
                    "model": self.config.served_name, "usage": usage, "choices": [{
                        "index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                        "finish_reason": "length" if tokens else "stop"}]}
        return {"id": f"cmpl-fake-{self._ids}", "object": "text_completion", "created": int(time.time()),
                "model": self.config.served_name, "usage": usage, "choices": [{
                    "index": 0, "text": text, "logprobs": None, "finish_reason": "length" if tokens else "stop"}]}

    async def _stream(self, conn: _Connection, chat: bool, body: dict[str, Any], prompt_tokens: int,
                      tokens: int) -> bool:
        config = self.config
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        cid = f"{'chatcmpl' if chat else 'cmpl'}-fake-{self._ids}"
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())
        delay = 1 / config.tokens_per_s if config.tokens_per_s > 0 else 0.0

        def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
            chunk = {"id": cid, "object": obj, "created": created, "model": config.served_name,
                     "choices": choices, "usage": usage}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        def piece(i: int | None, finish: str | None = None) -> dict[str, Any]:
            text = "" if i is None else _token(i)
            if chat:
                delta: dict[str, Any] = {"content": text} if i is not None else {}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        self.stats.streams_started += 1
        conn.head(200, "text/event-stream", None)
        try:
            if chat:
                await conn.send_chunk(event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "logprobs": None, "finish_reason": None}]))
            for i in range(tokens):
                if config.fault in ("broken_sse", "reset_mid_stream") and i == config.fault_after_tokens:
                    break
                if delay and await conn.wait_closed_by_client(delay):
                    raise _ClientGone
                await conn.send_chunk(event([piece(i)]))
            if config.fault == "reset_mid_stream":
                conn.reset()
                return False
            if config.fault == "broken_sse":
                await conn.send_chunk(b'data: {"id": "' + cid.encode() + b'", "choi')
                await conn.end_chunks()
                return True
            await conn.send_chunk(event([piece(None, "length" if tokens else "stop")]))
            if include_usage:
                await conn.send_chunk(event([], _usage(prompt_tokens, tokens)))
            await conn.send_chunk(b"data: [DONE]\n\n")
            await conn.end_chunks()
        except (_ClientGone, ConnectionError):
            self.stats.disconnects += 1
            return False
        self.stats.streams_completed += 1
        return True


def _token(i: int) -> str:
    return f"tok{i} "


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _count_prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    # Words, not a tokenizer: close enough for cost accounting tests, and deterministic.
    if chat:
        messages = body.get("messages") or []
        text = " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
    else:
        prompt = body.get("prompt") or ""
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    return max(1, len(text.split()))


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def server_parser(module: str, doc: str, served_name: str = "fake-model") -> argparse.ArgumentParser:
    """The command line every fake starts with (what :func:`serve` takes): ``--host``, ``--port``, ``--served-name``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port (printed on stdout)")
    parser.add_argument("--served-name", default=served_name)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = server_parser("bench.harness.fake_openai", __doc__)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="time to the first byte")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="stream pacing; 0 = no delay")
    parser.add_argument("--completion-tokens", type=int, default=16)
    parser.add_argument("--fault", choices=[f for f in FAULTS if f], default=None)
    parser.add_argument("--fault-scope", choices=("all", "completions"), default="all")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop if it is installed")
    return parser


def serve(server: FakeOpenAI, host: str, port: int, name: str, use_uvloop: bool = False) -> int:
    """Run a fake until interrupted; its first stdout line, ``<name> listening on http://host:port``, is the one a
    parent process waits for (bench/harness/fleet.py reads the port from it)."""

    async def run() -> None:
        bound = await server.start(host, port)
        print(f"{name} listening on http://{host}:{bound}", flush=True)
        await server.serve_forever()

    runner: Any = asyncio.run
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = FakeConfig(served_name=args.served_name, latency_ms=args.latency_ms, tokens_per_s=args.tokens_per_s,
                        completion_tokens=args.completion_tokens, fault=args.fault, fault_scope=args.fault_scope)
    server = FakeOpenAI(config)
    return serve(server, args.host, args.port, "fake_openai", use_uvloop=args.uvloop)


if __name__ == "__main__":
    sys.exit(main())
