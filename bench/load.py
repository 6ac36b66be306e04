"""Bounded load test: Triage in front of fake backends, one backend SIGKILLed mid-run and brought back.

    .venv/bin/python -m bench.load --requests 10000 --concurrency 64

Every request must end as a complete answer or a clear OpenAI-shaped error (bench/harness/outcomes.py); none may
be lost or hang (per-request timeout); the router itself must cause no 5xx. A 502 ``backend_error`` (every
candidate failed) and an SSE error event after the first byte are honest and counted apart. The killed
backend's circuit must open (``triage_circuit_state`` = 2 on /metrics) and close again (0) once it is back.
Prints p50/p99 and a summary table; exits 1 if an invariant fails. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench.harness.load import LoadPlan, load_queries, report, run_load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--queries", type=int, default=400, help="distinct prompts (the embedding cache is LRU)")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--artifact", default="var/bench/artifact", help="built on first use")
    parser.add_argument("--workdir", default="var/bench/load")
    parser.add_argument("--latency-ms", type=float, default=5.0, help="fake backends' time to first byte")
    parser.add_argument("--tokens-per-s", type=float, default=2000.0, help="fake backends' stream pacing")
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.harness.stack import BenchStack

    args = _parser().parse_args(argv)
    plan = LoadPlan(requests=args.requests, concurrency=args.concurrency, timeout_s=args.timeout_s)
    health = {"probe_interval_s": 0.5, "failure_threshold": 3, "open_seconds": 2.0, "retries": 1}
    with BenchStack(Path(args.artifact), Path(args.workdir), health=health,
                    fake_options={"latency_ms": args.latency_ms, "tokens_per_s": args.tokens_per_s}) as stack:
        queries = load_queries(args.queries, plan.seed)
        print(f"triage at {stack.triage.url} in front of {len(stack.fakes)} fake backends; "
              f"{plan.requests} requests, concurrency {plan.concurrency}", flush=True)
        result = asyncio.run(run_load(stack.triage.url, plan, queries, stack.fakes, stack.generalist,
                                      progress=lambda line: print(line, flush=True)))
        rss = stack.triage.rss_mib()
    print(report(result))
    print(f"router RSS after the run: {rss:.0f} MiB")
    problems = result.problems()
    for problem in problems:
        print("INVARIANT FAILED:", problem)
    print("PASS" if not problems else "FAIL")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
