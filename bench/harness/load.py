"""The load generator behind ``python -m bench.load`` and its small test: mixed chat/completions, streaming
and not, at a fixed concurrency, with one backend SIGKILLed mid-run and brought back.

Every request must end as a complete answer or a clear OpenAI-shaped error (bench/harness/outcomes.py); none may
be lost or hang (per-request timeout); the router itself must cause no 5xx. A 502 ``backend_error`` (every
candidate failed) and an SSE error event after the first byte are honest and counted apart. The killed
backend's circuit must open (``triage_circuit_state`` = 2 on /metrics) and close again (0) once it is back.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness.fleet import FakeProcess, metric_values
from bench.harness.outcomes import FAILURES, HONEST, Tally, judge_error, judge_json, judge_stream

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing" / "routerdc_7model.jsonl"
KNOBS = ("triage", "triage:quality", "triage:cost", "triage:0.3")


@dataclass
class LoadPlan:
    requests: int = 10_000
    concurrency: int = 64
    stream_share: float = 0.5
    legacy_share: float = 0.2  # /v1/completions instead of chat
    usage_share: float = 0.5  # streams that ask for stream_options.include_usage
    kill_after: float = 0.3  # fraction of requests done when the victim is killed
    restart_after: float = 0.6
    min_down_s: float = 3.0  # the victim stays down at least this long (so its circuit surely opens)
    timeout_s: float = 30.0
    close_wait_s: float = 20.0  # after the last request, how long the circuit may take to close
    seed: int = 7


@dataclass
class Spec:
    chat: bool
    stream: bool
    include_usage: bool
    max_tokens: int
    model: str
    query: str

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "stream": self.stream}
        if self.chat:
            body["messages"] = [{"role": "user", "content": self.query}]
        else:
            body["prompt"] = self.query
        if self.stream and self.include_usage:
            body["stream_options"] = {"include_usage": True}
        return body


@dataclass
class Chaos:
    """The kill and the restart, and what the circuit of the victim did meanwhile."""

    victim: str | None = None
    killed_at: float | None = None
    restarted_at: float | None = None
    opened_at: float | None = None
    closed_at: float | None = None
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (seconds, state) at each change

    def record(self, t: float, state: float) -> None:
        if not self.timeline or self.timeline[-1][1] != state:
            self.timeline.append((round(t, 2), state))
        if self.killed_at is not None and state == 2 and self.opened_at is None:
            self.opened_at = t
        if self.restarted_at is not None and self.opened_at is not None and state == 0 and self.closed_at is None:
            self.closed_at = t


@dataclass
class LoadResult:
    tally: Tally
    chaos: Chaos
    seconds: float
    plan: LoadPlan

    def problems(self) -> list[str]:
        outcomes = self.tally.outcomes
        out = [f"{outcomes[name]} requests ended as {name}" for name in FAILURES if outcomes[name]]
        if self.tally.total != self.plan.requests:
            out.append(f"{self.plan.requests - self.tally.total} requests lost (no outcome recorded)")
        if self.chaos.victim is not None:
            if self.chaos.opened_at is None:
                out.append(f"the circuit of {self.chaos.victim} never opened after the kill")
            if self.chaos.closed_at is None:
                out.append(f"the circuit of {self.chaos.victim} did not close after the restart")
        return out


def load_queries(count: int, seed: int, path: Path = DATA) -> list[str]:
    # split("\n"), not splitlines(): queries may hold U+2028, which splitlines() treats as a line end.
    rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    queries = sorted({r["query"] for r in rows if r.get("split") == "test" and len(r["query"]) < 2000})
    return random.Random(seed).sample(queries, min(count, len(queries)))


def make_specs(plan: LoadPlan, queries: list[str]) -> list[Spec]:
    rng = random.Random(plan.seed)
    specs = []
    for _ in range(plan.requests):
        stream = rng.random() < plan.stream_share
        specs.append(Spec(chat=rng.random() >= plan.legacy_share, stream=stream,
                          include_usage=stream and rng.random() < plan.usage_share, max_tokens=rng.randint(4, 16),
                          model=rng.choice(KNOBS), query=rng.choice(queries)))
    return specs


async def send(client: httpx.AsyncClient, spec: Spec, tally: Tally, timeout_s: float) -> None:
    path = "/v1/chat/completions" if spec.chat else "/v1/completions"
    started = time.perf_counter()
    detail = ""
    try:
        async with asyncio.timeout(timeout_s):
            if not spec.stream:
                response = await client.post(path, json=spec.body())
                raw = response.content
                if response.status_code == 200:
                    outcome = judge_json(raw, spec.chat, spec.max_tokens)
                    tally.latency["json"].append(time.perf_counter() - started)
                else:
                    outcome = judge_error(response.status_code, raw)
            else:
                async with client.stream("POST", path, json=spec.body()) as response:
                    buffer = bytearray()
                    async for chunk in response.aiter_raw():
                        if not buffer:
                            tally.latency["ttft"].append(time.perf_counter() - started)
                        buffer += chunk
                raw = bytes(buffer)
                if response.status_code == 200:
                    outcome = judge_stream(raw, spec.chat, spec.max_tokens, spec.include_usage)
                    if outcome == "ok":
                        tally.latency["stream"].append(time.perf_counter() - started)
                else:
                    outcome = judge_error(response.status_code, raw)
            detail = f"{response.status_code} {raw[-300:]!r}"
            tally.by_backend[response.headers.get("x-triage-backend", "?")] += 1
            tally.reasons[response.headers.get("x-triage-reason", "?")] += 1
    except TimeoutError:
        outcome, detail = "timeout", f"no complete answer in {timeout_s} s"
    except httpx.HTTPError as exc:
        outcome, detail = "transport_error", repr(exc)
    tally.add(outcome, detail)


async def _watch_circuit(client: httpx.AsyncClient, chaos: Chaos, t0: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if chaos.victim is not None:
            try:
                text = (await client.get("/metrics", timeout=5)).text
                state = metric_values(text, "triage_circuit_state").get(f'backend="{chaos.victim}"')
                if state is not None:
                    chaos.record(time.monotonic() - t0, state)
            except httpx.HTTPError:
                pass
        await asyncio.sleep(0.1)


async def run_load(
    url: str,
    plan: LoadPlan,
    queries: list[str],
    fakes: dict[str, FakeProcess],
    generalist: str,
    progress: Callable[[str], None] | None = None,
) -> LoadResult:
    """Sends ``plan.requests`` requests; kills the busiest specialist's fake at ``kill_after``, restarts it."""
    specs = make_specs(plan, queries)
    tally, chaos = Tally(), Chaos()
    say = progress or (lambda _: None)
    limits = httpx.Limits(max_connections=plan.concurrency + 4, max_keepalive_connections=plan.concurrency + 4)
    timeout = httpx.Timeout(plan.timeout_s, connect=10)
    t0 = time.monotonic()
    next_index = 0
    stop = asyncio.Event()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < len(specs):
            spec = specs[next_index]
            next_index += 1
            await send(client, spec, tally, plan.timeout_s)

    async def chaos_monkey() -> None:
        while tally.total < plan.kill_after * plan.requests:
            await asyncio.sleep(0.05)
        busiest = [name for name, _ in tally.by_backend.most_common() if name != generalist and name in fakes]
        if not busiest:
            say("no specialist received traffic: nothing to kill")
            return
        chaos.victim = busiest[0]
        await asyncio.to_thread(fakes[chaos.victim].kill)
        chaos.killed_at = time.monotonic() - t0
        say(f"t={chaos.killed_at:.1f}s killed {chaos.victim} (SIGKILL) after {tally.total} requests")
        while tally.total < plan.restart_after * plan.requests or time.monotonic() - t0 - chaos.killed_at < \
                plan.min_down_s:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(fakes[chaos.victim].restart)
        chaos.restarted_at = time.monotonic() - t0
        say(f"t={chaos.restarted_at:.1f}s restarted {chaos.victim} after {tally.total} requests")

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client, \
            httpx.AsyncClient(base_url=url, timeout=10) as observer:
        watcher = asyncio.create_task(_watch_circuit(observer, chaos, t0, stop))
        monkey = asyncio.create_task(chaos_monkey())
        await asyncio.gather(*(worker(client) for _ in range(plan.concurrency)))
        seconds = time.monotonic() - t0
        await monkey
        deadline = time.monotonic() + plan.close_wait_s
        while chaos.victim is not None and chaos.closed_at is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await watcher
    return LoadResult(tally, chaos, seconds, plan)


def report(result: LoadResult) -> str:
    tally, chaos = result.tally, result.chaos
    lines = [f"{tally.total} requests in {result.seconds:.1f} s ({tally.total / result.seconds:.0f} req/s), "
             f"concurrency {result.plan.concurrency}", "", f"{'outcome':<18}{'count':>8}  note"]
    notes = {**{name: "FAILURE" for name in FAILURES}, **{name: "honest error" for name in HONEST}}
    for name in ("ok", *HONEST, "client_error", *FAILURES):
        lines.append(f"{name:<18}{tally.outcomes[name]:>8}  {notes.get(name, '')}")
    lines += ["", f"{'latency (ms)':<26}{'n':>7}{'p50':>9}{'p99':>9}"]
    for label, n, p50, p99 in tally.latency_rows():
        lines.append(f"{label:<26}{n:>7}{p50:>9.1f}{p99:>9.1f}")
    lines += ["", "reasons: " + ", ".join(f"{k} {v}" for k, v in tally.reasons.most_common()),
              "backends: " + ", ".join(f"{k} {v}" for k, v in tally.by_backend.most_common())]
    if chaos.victim:
        def at(t: float | None) -> str:
            return "never" if t is None else f"t={t:.1f}s"
        lines += [f"victim {chaos.victim}: killed {at(chaos.killed_at)}, circuit open {at(chaos.opened_at)}, "
                  f"restarted {at(chaos.restarted_at)}, circuit closed {at(chaos.closed_at)}",
                  "circuit timeline (s, state): " + " ".join(f"({t}, {int(s)})" for t, s in chaos.timeline)]
    for name, example in tally.examples.items():
        lines.append(f"example {name}: {example}")
    return "\n".join(lines)
