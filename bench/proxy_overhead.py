"""What Triage adds to a request: the same requests sent straight to a backend and through Triage, interleaved.

    .venv/bin/python -m bench.proxy_overhead [--requests 400] [--vllm-url http://127.0.0.1:8101/v1 --vllm-model M]

Targets, sent in turn within one run so that every row sees the same machine noise:
    direct        the fast fake backend itself (no delay: the fake's own cost is the floor)
    pinned        through Triage with ``model=<backend name>``: proxying only, no routing decision
    routed        through Triage with ``model=triage`` and a new prompt each time: embed + decide + proxy
Non-streaming (total) and streaming (time to the first token, and total), at 1 and 64 concurrent clients.
Added latency is reported as the difference of medians (and of p99s) against ``direct``, and as a ratio.
With ``--vllm-url``, one more row pair against a real (CPU) vLLM server: direct vs pinned through Triage.
With ``--litellm BIN`` (the ``litellm`` script of an environment that has ``litellm[proxy]``), a fourth
target: LiteLLM's proxy in front of the same fake, in the same interleaved run (it has no routing decision,
so compare it with ``pinned``).
At 64 clients the clients start together; with ``--tokens-per-s`` the streams all last as long, so they stay in
step, a burst of 64 every stream. ``--stagger`` spreads the first starts over one stream's time instead: a steady
flow of arrivals at the same concurrency (``bench.burst`` measures the synchronised case on its own).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness.fleet import FakeProcess, TriageProcess, fleet_config
from bench.harness.litellm_proxy import LiteLLMProcess
from bench.harness.load import load_queries
from bench.harness.rawhttp import Pool
from bench.harness.stack import artifact_models, ensure_artifact
from bench.harness.timing import Series, timed_raw
from bench.routing_latency import CONFIGS


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # the /v1 base
    model: str | None  # None: a fresh "triage" prompt each time
    headers: tuple[tuple[str, str], ...] = ()


def bodies(target: Target, stream: bool, prompts: Iterator[str], max_tokens: int) -> dict[str, Any]:
    prompt = next(prompts) if target.model is None else "Say hello in one short sentence."
    body: dict[str, Any] = {"model": target.model or "triage", "max_tokens": max_tokens, "stream": stream,
                            "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def measure(targets: list[Target], stream: bool, concurrency: int, requests: int, prompts: Iterator[str],
                  max_tokens: int, pool: Pool | None = None, stagger: float = 0.0) -> dict[str, Series]:
    """``requests`` per target; each client sends to the targets in turn, so they share the same moments.
    ``pool``: keep-alive connections opened by an earlier phase (the warm-up); by default a new pool.
    ``stagger``: client i starts ``i * stagger / concurrency`` seconds late, so starts spread over ``stagger``
    instead of all clients starting together (streams of equal length would stay in step for the whole run)."""
    series = {t.name: Series() for t in targets}
    plan = [t for _ in range(requests) for t in targets]
    cursor = iter(plan)
    # The lean client (bench/harness/rawhttp.py): httpx spends ~1 ms of CPU per request, which on two cores shared with
    # the servers measured the client at 64 streams. Keep-alive connections, pooled per server.
    own = pool is None
    pool = pool or Pool()
    try:
        async def client_loop(i: int) -> None:
            await asyncio.sleep(i * stagger / concurrency)
            for target in cursor:
                body = bodies(target, stream, prompts, max_tokens)
                try:
                    timed = await timed_raw(pool, target.url + "/chat/completions", body, dict(target.headers))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    series[target.name].failures += 1
                    series[target.name].errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                series[target.name].add(timed)

        await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
    finally:
        if own:
            pool.close()
    return series


def rows(label: str, series: dict[str, Series], baseline: str, ttft: bool) -> list[str]:
    base = series[baseline]
    out = []
    for name, s in series.items():
        p50, p99 = s.p(0.5, ttft), s.p(0.99, ttft)
        if name == baseline:
            added = "baseline"
        else:
            b50, b99 = base.p(0.5, ttft), base.p(0.99, ttft)
            added = f"+{p50 - b50:7.2f} / +{p99 - b99:7.2f}   x{p50 / b50:5.2f} / x{p99 / b99:5.2f}"
        n = len(s.first_token if ttft else s.total)
        out.append(f"{label:<34}{name:<9}{n:>6}{s.failures:>5}{p50:>10.2f}{p99:>10.2f}   {added}")
        out += [f"    failure: {error}" for error in sorted(set(s.errors))[:3]]
    return out


async def run(args: argparse.Namespace, triage_url: str, fake: FakeProcess, backend: str,
              litellm: Target | None) -> list[str]:
    prompts = itertools.cycle(load_queries(20_000, seed=11))
    targets = [Target("direct", fake.base_url, fake.served_name), Target("pinned", triage_url + "/v1", backend),
               Target("routed", triage_url + "/v1", None), *([litellm] if litellm else [])]
    wanted = args.targets.split(",")
    targets = [t for t in targets if t.name in wanted or t.name == "direct"]
    header = f"{'mode':<34}{'target':<9}{'n':>6}{'fail':>5}{'p50 ms':>10}{'p99 ms':>10}   added p50 / p99 (ms), ratio"
    lines = [header]
    for concurrency in (int(c) for c in args.levels.split(",")):
        n = args.requests if concurrency == 1 else args.requests * 2
        # --stagger: the starts spread over one stream's generation time, so the streams never run in step.
        stagger = args.max_tokens / args.tokens_per_s if args.stagger and args.tokens_per_s and concurrency > 1 \
            else 0.0
        modes = args.modes.split(",")
        # Warm-up: every connection opened and every code path run once, so the measured phase does not begin
        # with 64 clients opening connections at the same moment. Its connections stay open for the measured
        # phases (--cold-start: each phase opens its own, and its first requests pay for them).
        pool = None if args.cold_start else Pool()
        await measure(targets, "stream" in modes and "json" not in modes, concurrency, max(10, 2 * concurrency),
                      prompts, args.max_tokens, pool)
        try:
            if "json" in modes:
                plain = await measure(targets, False, concurrency, n, prompts, args.max_tokens, pool, stagger)
                lines += rows(f"non-streaming total, c={concurrency}", plain, "direct", ttft=False)
            if "stream" in modes:
                streamed = await measure(targets, True, concurrency, n, prompts, args.max_tokens, pool, stagger)
                lines += rows(f"streaming first token, c={concurrency}", streamed, "direct", ttft=True)
                lines += rows(f"streaming total, c={concurrency}", streamed, "direct", ttft=False)
        finally:
            if pool is not None:
                pool.close()
    if args.vllm_url and args.vllm_model:
        vllm = [Target("direct", args.vllm_url.rstrip("/"), args.vllm_model),
                Target("pinned", triage_url + "/v1", "vllm")]
        for stream in (False, True):
            got = await measure(vllm, stream, 1, args.vllm_requests, prompts, args.vllm_max_tokens)
            lines += rows(f"vLLM {'streaming first token' if stream else 'non-streaming'}, c=1", got, "direct",
                          ttft=stream)
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per target at c=1 (twice that at c=64)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--artifact", default="var/bench/artifact")
    parser.add_argument("--workdir", default="var/bench/overhead")
    parser.add_argument("--vllm-url", default=None, help="a running vLLM OpenAI server's /v1 base (optional)")
    parser.add_argument("--vllm-model", default=None, help="the model id that server serves")
    parser.add_argument("--vllm-requests", type=int, default=20)
    parser.add_argument("--vllm-max-tokens", type=int, default=16)
    parser.add_argument("--litellm", default=None, help="path of a `litellm` proxy script (optional)")
    parser.add_argument("--targets", default="pinned,routed,litellm",
                        help="besides direct: routed requests embed, and their CPU slows the others at c=64")
    parser.add_argument("--levels", default="1,64", help="concurrent clients, comma-separated")
    parser.add_argument("--modes", default="json,stream", help="json (non-streaming), stream, or both")
    parser.add_argument("--embedder", choices=("torch", "onnx", "openvino"), default="openvino",
                        help="the router's embedder backend (routed rows; openvino: the shipped configs')")
    parser.add_argument("--cold-start", action="store_true",
                        help="each measured phase opens its own client connections (the first requests pay)")
    parser.add_argument("--stagger", action="store_true",
                        help="spread the clients' first requests over one stream's generation time (with "
                             "--tokens-per-s): steady arrivals instead of every stream starting together")
    parser.add_argument("--tokens-per-s", type=float, default=0,
                        help="the fake's generation speed per stream (0: instant, a saturation test at c=64)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    artifact = ensure_artifact(Path(args.artifact))
    models, generalist = artifact_models(artifact)
    fake = FakeProcess("fast", {"latency_ms": 0, "tokens_per_s": args.tokens_per_s,
                                "completion_tokens": args.max_tokens}).start()
    triage: TriageProcess | None = None
    litellm: LiteLLMProcess | None = None
    try:
        # Every backend is the same fake process, so "direct" and "through Triage" reach the same server.
        config = fleet_config(artifact.resolve(), models, generalist, [fake.base_url] * len(models),
                              [fake.served_name] * len(models), health={"probe_interval_s": 0})
        config["embedder"] = CONFIGS[args.embedder][0]  # routing_latency's settings for that backend
        if args.vllm_url:
            if not args.vllm_model:
                print("--vllm-model is required with --vllm-url", file=sys.stderr)
                return 2
            config["backends"].append({"name": "vllm", "base_url": args.vllm_url.rstrip("/"),
                                       "model": args.vllm_model, "role": "specialist"})
        triage = TriageProcess(config, Path(args.workdir)).start()
        target = None
        if args.litellm:
            litellm = LiteLLMProcess(args.litellm, fake, Path(args.workdir) / "litellm").start()
            target = Target("litellm", litellm.url + "/v1", "fast", (("authorization", f"Bearer {litellm.key}"),))
        lines = asyncio.run(run(args, triage.url, fake, models[0], target))
    finally:
        if triage is not None:
            triage.stop()
        if litellm is not None:
            litellm.stop()
        fake.kill()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
