"""A fake vLLM replica: at most ``slots`` sequences at a time, the rest queued first come, first served.

    python -m bench.harness.fake_vllm --port 0 --served-name served-0 --slots 4 --tokens-per-s 20

The pool benchmark's backend (bench/pool_live.py). Like vLLM with ``--max-num-seqs slots``, a request waits in
the replica's queue until one of its ``slots`` frees, then holds that slot for ``--prefill-s`` (the first token)
plus its tokens at ``--tokens-per-s`` per sequence. The tokens are the request's ``max_tokens`` (default
``--completion-tokens``), so a client that derives ``max_tokens`` from the query gives every strategy the same
work. A client that disconnects, queued or streaming, gives its place up (vLLM aborts the request).

It serves ``POST /v1/chat/completions`` and ``/v1/completions`` (streamed as SSE, a usage chunk last when
``stream_options.include_usage`` is set; or whole), ``GET /v1/models``, ``GET /health`` and vLLM-shaped
Prometheus ``GET /metrics``: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc`` (gauges) and ``vllm:request_success_total`` (counter), labelled with
``model_name`` and ``engine`` as vLLM labels them. ``GET /fake/stats`` adds what the benchmark measures:
slot-seconds busy (utilisation), requests finished and aborted, the longest queue seen; ``POST
/fake/reset-stats`` starts a new window.

Built on bench/harness/fake_openai.py's raw asyncio server (its connection handling and SSE framing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from bench.harness.fake_openai import (
    FakeOpenAI,
    _ClientGone,
    _Connection,
    _count_prompt_tokens,
    _error,
    _usage,
    serve,
    server_parser,
)


@dataclass
class ReplicaConfig:
    served_name: str = "fake-model"
    slots: int = 4  # vLLM's max_num_seqs
    tokens_per_s: float = 20.0  # per sequence
    prefill_s: float = 0.05  # from taking a slot to the first token
    completion_tokens: int = 40  # when the request sets no max_tokens
    stream_interval_s: float = 0.25  # tokens are sent in batches this far apart (vLLM's --stream-interval)
    kv_tokens_per_slot: int = 1024  # KV-cache capacity: slots * this many tokens

    def __post_init__(self) -> None:
        if self.slots < 1 or self.tokens_per_s <= 0 or self.prefill_s < 0 or self.stream_interval_s <= 0:
            raise ValueError("slots >= 1, tokens_per_s > 0, prefill_s >= 0 and stream_interval_s > 0")


@dataclass
class ReplicaStats:
    since: float
    finished: int = 0
    aborted: int = 0  # the client left, queued or streaming
    busy_slot_s: float = 0.0  # slot-seconds held by requests (utilisation = this / (slots * window))
    max_waiting: int = 0


class Slots:
    """At most ``n`` holders; the rest wait in arrival order. A waiter that leaves gives its place up."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.running = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def acquire(self, gone: asyncio.Future[Any]) -> bool:
        """True with a slot held; False when ``gone`` (the client left) completes first."""
        if self.running < self.n and not self._queue:
            self.running += 1
            return True
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        await asyncio.wait({turn, gone}, return_when=asyncio.FIRST_COMPLETED)
        if turn.done():
            return True  # release() handed its slot over: running already counts it
        self._queue.remove(turn)
        turn.cancel()
        return False

    def release(self) -> None:
        if self._queue:
            self._queue.popleft().set_result(None)  # the slot passes to the oldest waiter
        else:
            self.running -= 1


class FakeVLLM(FakeOpenAI):
    def __init__(self, config: ReplicaConfig | None = None) -> None:
        super().__init__()
        self.replica = config or ReplicaConfig()
        self.config.served_name = self.replica.served_name
        self.slots = Slots(self.replica.slots)
        self.stats_window = ReplicaStats(time.monotonic())
        self.success_total = 0
        self.kv_tokens = 0  # tokens the running sequences hold

    async def dispatch(self, conn: _Connection, method: str, path: str, body: bytes) -> bool:
        if path == "/metrics" and method == "GET":
            await conn.send_bytes(200, self.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            return True
        if path == "/health" and method == "GET":
            await conn.send_bytes(200, b"", "text/plain")
            return True
        if path == "/fake/stats" and method == "GET":
            now = time.monotonic()
            await conn.send_json(200, asdict(self.stats_window) | {
                "window_s": now - self.stats_window.since, "slots": self.replica.slots,
                "running": self.slots.running, "waiting": self.slots.waiting})
            return True
        if path == "/fake/reset-stats" and method == "POST":
            self.stats_window = ReplicaStats(time.monotonic())
            await conn.send_json(200, {"ok": True})
            return True
        if method == "POST" and (path.endswith("/chat/completions") or path.endswith("/completions")):
            return await self._serve(conn, path.endswith("/chat/completions"), body)
        return await super().dispatch(conn, method, path, body)  # /v1/models, 404s

    def metrics(self) -> str:
        labels = f'engine="0",model_name="{self.replica.served_name}"'
        kv = self.kv_tokens / (self.replica.slots * self.replica.kv_tokens_per_slot)
        rows = [("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
                 self.slots.running),
                ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
                 self.slots.waiting),
                ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", min(kv, 1.0))]
        lines = []
        for name, kind, help_text, value in rows:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {float(value)}"]
        lines += ["# HELP vllm:request_success_total Count of successfully processed requests.",
                  "# TYPE vllm:request_success_total counter",
                  f'vllm:request_success_total{{{labels},finished_reason="length"}} {float(self.success_total)}']
        return "\n".join(lines) + "\n"

    async def _serve(self, conn: _Connection, chat: bool, raw: bytes) -> bool:
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            await conn.send_json(400, _error(str(exc), "BadRequestError"))
            return True
        tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or self.replica.completion_tokens)
        prompt_tokens = _count_prompt_tokens(body, chat)
        self._ids += 1
        cid = f"{'chatcmpl' if chat else 'cmpl'}-fake-{self._ids}"
        stream = bool(body.get("stream"))
        if stream:
            conn.head(200, "text/event-stream", None)  # vLLM answers the head at once, queued or not
            await conn.writer.drain()
        gone = asyncio.ensure_future(conn.reader.read(1))  # b"": the client closed (no pipelining on a request)
        try:
            if self.slots.running >= self.slots.n or self.slots.waiting:
                self.stats_window.max_waiting = max(self.stats_window.max_waiting, self.slots.waiting + 1)
            admitted = await self.slots.acquire(gone)
        finally:
            gone.cancel()
            await asyncio.wait({gone})  # its read must end before the stream reads again
        if not admitted:
            self.stats_window.aborted += 1
            return False
        started = time.monotonic()
        held = [prompt_tokens]  # the KV-cache tokens this sequence holds
        self.kv_tokens += prompt_tokens
        try:
            if stream:
                return await self._generate(conn, chat, cid, body, prompt_tokens, tokens, held)
            await asyncio.sleep(self.replica.prefill_s + tokens / self.replica.tokens_per_s)
            text = "".join(f"tok{i} " for i in range(tokens))
            await conn.send_json(200, self._whole_answer(chat, cid, text, prompt_tokens, tokens))
            self._finished()
            return True
        finally:
            self.kv_tokens -= held[0]
            self.stats_window.busy_slot_s += time.monotonic() - max(started, self.stats_window.since)
            self.slots.release()

    def _finished(self) -> None:
        self.stats_window.finished += 1
        self.success_total += 1

    def _whole_answer(self, chat: bool, cid: str, text: str, prompt_tokens: int, tokens: int) -> dict[str, Any]:
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat
                                  else {"index": 0, "text": text})
        return {"id": cid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.replica.served_name, "usage": _usage(prompt_tokens, tokens),
                "choices": [choice | {"logprobs": None, "finish_reason": "length"}]}

    async def _generate(self, conn: _Connection, chat: bool, cid: str, body: dict[str, Any], prompt_tokens: int,
                      tokens: int, held: list[int]) -> bool:
        config = self.replica
        created = int(time.time())

        def event(text: str | None, finish: str | None = None, usage: dict[str, int] | None = None,
                  role: bool = False) -> bytes:
            choices: list[dict[str, Any]] = []
            if usage is None and chat:
                delta: dict[str, Any] = ({"role": "assistant"} if role else {}) | (
                    {"content": text} if text is not None else {})
                choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            elif usage is None:
                choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
            chunk = {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": created, "model": config.served_name, "choices": choices, "usage": usage}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        def emit(first: int, last: int) -> bytes:
            self.kv_tokens += last - first
            held[0] += last - first
            return event("".join(f"tok{i} " for i in range(first, last)), role=first == 0)

        try:
            if await conn.wait_closed_by_client(config.prefill_s):
                raise _ClientGone
            await conn.send_chunk(emit(0, 1))  # the first token
            sent, start = 1, time.monotonic()
            end = start + (tokens - 1) / config.tokens_per_s
            while sent < tokens:
                wait = min(config.stream_interval_s, end - time.monotonic())
                if wait > 0 and await conn.wait_closed_by_client(wait):
                    raise _ClientGone
                now = time.monotonic()
                due = tokens if now >= end else min(tokens, 1 + int((now - start) * config.tokens_per_s))
                if due > sent:
                    await conn.send_chunk(emit(sent, due))
                    sent = due
            await conn.send_chunk(event(None, "length"))
            if (body.get("stream_options") or {}).get("include_usage"):
                await conn.send_chunk(event(None, usage=_usage(prompt_tokens, tokens)))
            await conn.send_chunk(b"data: [DONE]\n\n")
            await conn.end_chunks()
        except (_ClientGone, ConnectionError):
            self.stats_window.aborted += 1
            return False
        self._finished()
        return True


def _parser() -> argparse.ArgumentParser:
    p = server_parser("bench.harness.fake_vllm", __doc__)
    p.add_argument("--slots", type=int, default=4, help="sequences served at a time (vLLM's --max-num-seqs)")
    p.add_argument("--tokens-per-s", type=float, default=20.0, help="decode speed of one sequence")
    p.add_argument("--prefill-s", type=float, default=0.05, help="from a slot taken to the first token")
    p.add_argument("--completion-tokens", type=int, default=40, help="tokens when a request sets no max_tokens")
    p.add_argument("--stream-interval-s", type=float, default=0.25, help="tokens streamed in batches this apart")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    server = FakeVLLM(ReplicaConfig(args.served_name, args.slots, args.tokens_per_s, args.prefill_s,
                                    args.completion_tokens, args.stream_interval_s))
    return serve(server, args.host, args.port, "fake_vllm")


if __name__ == "__main__":
    sys.exit(main())
