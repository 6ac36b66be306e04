"""The GPU pool, live: open-loop Poisson arrivals of RouterDC test queries through a real ``triage serve`` to fake
vLLM replicas on this machine.

    python -m bench.pool_live --artifact var/bench/artifacts/routerdc-pool [--duration-s 30] [--loads 0.3,0.8,1.5]

Each replica is a bench/harness/fake_vllm.py process: ``--slots`` sequences at a time, the rest queued first
come, first served, ``--tokens-per-s`` per sequence, vLLM's ``/metrics`` gauges (Triage scrapes them). A query's
``max_tokens`` is drawn once from a hash of its text (log-normal, mean ``--mean-tokens``), so every strategy
meets the same work. Side by side, at each load (times the capacity of one replica per model):

    load-aware    Triage with a queue budget: the request's ``triage.max_queue_ms`` = ``--max-queue-s`` (the
                  server's ``pool.max_queue_ms`` is unset), a router queue of ``--queue-size`` for at most
                  ``--queue-timeout-s``, then 429 with retry-after
    quality       Triage without a budget: the policy's choice, queued at the replica without bound
    round-robin   every model in turn, whatever the query: sent straight to the fake replicas, not via Triage
    best-single   the calibration data's most accurate model on every replica (the least busy first): sent
                  straight to the fake replicas, not via Triage

and, at the 0.8x traffic, quality-only on ``triage plan --gpus --plan-gpus``'s split of replicas and on the
replicas ``triage plan --qps`` asks for to keep the first token within the budget (``--first-token-budget-s``).
Every request streams; its time to first token is measured at the client; a client gives up after ``--client-timeout-s``
without a first token (its request then counts as over budget, and Triage cancels it at the replica). Each
answer is scored with the data set's real outcome for the model that answered (``x-triage-backend``), by
``triage eval``'s rule (a multiple-choice score > 0 is a right answer).
Before the timed part, every sampled query is routed once through ``POST /v1/route``, so the router's
embedding cache is warm and the router is not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness.datasets import correct
from bench.harness.fleet import FakeProcess, TriageProcess, fleet_config
from bench.pool_sim import DATA, plot
from router.plan import Budget, ReplicaSpec, Row, for_gpus, for_qps, shares

STRATEGIES = ("load-aware", "quality", "round-robin", "best-single")  # load-aware first: see run order below
TOKEN_SIGMA = 0.5


@dataclass
class Answer:
    status: int  # the HTTP status; 0: the client gave up before the first token
    ttft: float = math.inf
    model: str | None = None
    replica: str | None = None
    spilled: bool = False
    retry_after: str | None = None


def tokens_for(query: str, mean: float) -> int:
    """The completion length of a query: log-normal with mean ``mean``, drawn from a hash of its text."""
    seed = int.from_bytes(hashlib.sha256(query.encode()).digest()[:8], "big")
    draw = np.random.default_rng(seed).lognormal(math.log(mean) - TOKEN_SIGMA ** 2 / 2, TOKEN_SIGMA)
    return max(1, round(float(draw)))


def nearest_rank(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank: infinite values (no first token) stay infinite."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class Pool:
    """The fake replicas, their processes and their stats."""

    def __init__(self, n: int, args: argparse.Namespace) -> None:
        options = {"slots": args.slots, "tokens_per_s": args.tokens_per_s, "prefill_s": args.prefill_s,
                   "stream_interval_s": args.stream_interval_s}
        self.fakes = [FakeProcess(f"served-{i}", dict(options), module="bench.harness.fake_vllm") for i in range(n)]
        self.slots = args.slots

    def __enter__(self) -> Pool:
        try:
            for fake in self.fakes:
                fake.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fake in self.fakes:
            fake.kill()

    async def stats(self, client: httpx.AsyncClient, used: list[int]) -> list[dict[str, Any]]:
        return [(await client.get(self.fakes[i].root_url + "/fake/stats")).json() for i in used]

    async def reset(self, client: httpx.AsyncClient, used: list[int]) -> None:
        for i in used:
            (await client.post(self.fakes[i].root_url + "/fake/reset-stats")).raise_for_status()

    async def drain(self, client: httpx.AsyncClient, used: list[int], timeout: float = 60.0) -> None:
        """Wait until no request is left on the replicas (a cancelled one leaves as soon as it is noticed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s["running"] + s["waiting"] == 0 for s in await self.stats(client, used)):
                return
            await asyncio.sleep(0.2)


async def ask(client: httpx.AsyncClient, url: str, query: str, tokens: int, model: str, args: argparse.Namespace,
              budget_ms: float | None = None, answered_by: str | None = None, replica: str | None = None) -> Answer:
    """One streamed chat request; the first token's time, who answered and why."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": query}], "stream": True,
                            "max_tokens": tokens, "stream_options": {"include_usage": True}}
    if budget_ms is not None:
        body["triage"] = {"max_queue_ms": budget_ms}
    sent = time.monotonic()
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return Answer(response.status_code, retry_after=response.headers.get("retry-after"))
            headers = response.headers
            answer = Answer(200, model=headers.get("x-triage-backend", answered_by),
                            replica=headers.get("x-triage-replica", replica),
                            spilled=headers.get("x-triage-reason") == "spillover")
            lines = response.aiter_lines()
            async with asyncio.timeout(args.client_timeout_s - (time.monotonic() - sent)):
                async for line in lines:
                    if line.startswith("data: {") and '"content": "tok' in line:
                        answer.ttft = time.monotonic() - sent
                        break
            async for _ in lines:  # the rest of the answer (its length is the request's service time)
                pass
            return answer
    except TimeoutError:
        return Answer(0)  # gave up waiting for the first token


async def prewarm(client: httpx.AsyncClient, url: str, queries: list[str], knob: float) -> list[str]:
    """Route each query once (embeds it into the router's cache); the model Triage chose for each."""
    chosen = [""] * len(queries)
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with gate:
            response = await client.post(url + "/v1/route", json={
                "model": f"triage:{knob:g}", "messages": [{"role": "user", "content": queries[i]}]})
            response.raise_for_status()
            chosen[i] = response.json()["backend"]

    await asyncio.gather(*(one(i) for i in range(len(queries))))
    return chosen


def triage_config(args: argparse.Namespace, models: list[str], generalist: str, urls: dict[str, list[str]],
                  service_s: float) -> dict[str, Any]:
    config = fleet_config(Path(args.artifact).resolve(), models, generalist, [urls[m][0] for m in models],
                          [f"served-{i}" for i in range(len(models))],
                          pool={"queue_size": args.queue_size, "queue_timeout_s": args.queue_timeout_s,
                                "scrape_interval_s": 1.0, "service_s": service_s})
    for backend in config["backends"]:
        backend["replicas"] = urls[backend["name"]]
        backend["max_concurrency"] = args.slots  # vLLM's max_num_seqs
        backend["price_per_mtok"] = {"input": 1.0, "output": 1.0}  # RouterDC's models cost the same
        # the client gives up first: a replica queueing past first_byte would otherwise be taken for dead
        backend["timeouts"] = {"connect": 2, "first_byte": args.client_timeout_s + 30, "total": 600}
    return config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pool_live", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--sample", type=int, default=700, help="test queries sampled; each run draws from them")
    p.add_argument("--duration-s", type=float, default=30.0, help="arrivals of one run span about this long")
    p.add_argument("--max-queries", type=int, default=800, help="requests in one run, at most")
    p.add_argument("--loads", default="0.3,0.8,1.5", help="offered load, times the capacity of one replica per model")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--knob", type=float, default=0.5)
    p.add_argument("--slots", type=int, default=4, help="sequences one replica serves at a time")
    p.add_argument("--tokens-per-s", type=float, default=20.0, help="decode speed of one sequence")
    p.add_argument("--mean-tokens", type=float, default=40.0, help="mean completion length (log-normal)")
    p.add_argument("--prefill-s", type=float, default=0.05, help="first token after the slot is taken")
    p.add_argument("--stream-interval-s", type=float, default=0.25)
    p.add_argument("--ttft-budget-s", type=float, default=2.0)
    p.add_argument("--max-queue-s", type=float, default=0.5, help="load-aware: the request's queue budget")
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--queue-timeout-s", type=float, default=0.5)
    p.add_argument("--client-timeout-s", type=float, default=15.0, help="a client gives up without a first token")
    p.add_argument("--plan-gpus", type=int, default=10, help="also: quality-only on triage plan's split of N, at "
                   "the 0.8x traffic of one replica per model (0: skip)")
    p.add_argument("--plan-budget", action=argparse.BooleanOptionalAction, default=True, help="also: quality-only "
                   "on the replicas triage plan --qps asks for at the 0.8x traffic with --first-token-budget-s")
    p.add_argument("--plan-budget-max", type=int, default=16, help="fake replicas started for that plan, at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="var/bench/pool_live")
    args = p.parse_args(argv)
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    from router.artifact import Artifact

    rows = [json.loads(line) for line in Path(args.data).read_text().split("\n") if line.strip()]
    test = [r for r in rows if r.get("split") == "test"]
    rng = np.random.default_rng(args.seed)
    sample = [test[i] for i in rng.choice(len(test), size=min(args.sample, len(test)), replace=False)]
    queries = [r["query"] for r in sample]
    tokens = [tokens_for(q, args.mean_tokens) for q in queries]
    artifact = Artifact.load(args.artifact)
    models, generalist = list(artifact.models), artifact.generalist
    best_single = artifact.reference_model  # the most accurate model on the calibration data
    service_s = statistics.fmean(args.prefill_s + (t - 1) / args.tokens_per_s for t in tokens)
    per_replica = args.slots / service_s
    capacity = len(models) * per_replica  # one replica per model
    strategies = [s for s in args.strategies.split(",") if s]
    loads = [float(x) for x in args.loads.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(models)} models, one fake replica each: {args.slots} slots, {args.tokens_per_s:g} tokens/s per "
          f"sequence, mean service {service_s:.2f} s -> {per_replica:.2f} req/s per replica, {capacity:.1f} for the "
          f"pool; {len(sample)} RouterDC test queries sampled; machine load average {os.getloadavg()[0]:.2f}",
          flush=True)

    n_fakes = max(len(models), args.plan_gpus, args.plan_budget_max)
    runs: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=512)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None, connect=10)) as client:
        with Pool(n_fakes, args) as pool:
            one_each = {m: [pool.fakes[i].base_url] for i, m in enumerate(models)}
            triage = TriageProcess(triage_config(args, models, generalist, one_each, service_s),
                                   out / "triage-one-each").start()
            try:
                started = time.monotonic()
                chosen = await prewarm(client, triage.url, queries, args.knob)
                took = time.monotonic() - started
                print(f"router pre-warmed: each sampled query routed once via /v1/route ({took:.0f} s), so its "
                      "embedding is cached and the timed part measures the pool, not the embedder", flush=True)
                report_hindsight(sample, chosen, models)
                for load in loads:
                    for strategy in strategies:
                        runs.append(await one_run(client, pool, triage, strategy, load, load * capacity, models,
                                                  best_single, sample, tokens, args, rng))
                        print(row_text(runs[-1]), flush=True)
            finally:
                triage.stop()
            share = shares(models, chosen)
            specs = dict.fromkeys(models, ReplicaSpec(per_replica))
            budget = Budget(args.ttft_budget_s - args.prefill_s, args.slots)
            for label, rows_planned in plans(args, share, specs, budget, 0.8 * capacity):
                planned = {r.model: r.replicas for r in rows_planned}
                urls, k = {}, 0
                for m in models:
                    urls[m] = [pool.fakes[k + j].base_url for j in range(planned[m])]
                    k += planned[m]
                print(f"{label}: " + ", ".join(f"{m.split('/')[-1]} {n}" for m, n in planned.items())
                      + f"; it holds {min(r.load_held() for r in rows_planned):.1f} req/s "
                      + ("within the budget (M/M/c)" if rows_planned[0].within_budget is not None else
                         "at saturation"), flush=True)
                triage = TriageProcess(triage_config(args, models, generalist, urls, service_s),
                                       out / f"triage-{label.split()[0]}").start()
                try:
                    result = await one_run(client, pool, triage, "quality", 0.8, 0.8 * capacity, models, best_single,
                                           sample, tokens, args, rng, replicas=urls, warm=True)
                    result["strategy"] = f"quality, {label}"
                    result["plan"] = planned
                    runs.append(result)
                    print(row_text(runs[-1]), flush=True)
                finally:
                    triage.stop()
    print()
    print(header_text())
    for r in runs:
        print(row_text(r))
    (out / "pool_live.json").write_text(json.dumps({"args": vars(args), "service_s": service_s,
                                                    "capacity_qps": capacity, "runs": runs}, indent=1))
    # no first token before the client gave up: drawn at the client's timeout (the p99 is at least that)
    drawn = [r | {k: min(r[k], args.client_timeout_s) for k in ("ttft_p50", "ttft_p99")} for r in runs]
    plot(drawn, argparse.Namespace(ttft_budget_s=args.ttft_budget_s, slots=args.slots, service_s=service_s,
                                   ttft_note=f"\nat most {args.client_timeout_s:g} s: the client gives up"),
         out / "pool_live.png", strategies=strategies,
         title=f"Live pool: real Triage, fake vLLM replicas, one per model ({args.slots} slots, {service_s:.1f} s "
               "mean service); RouterDC test queries, real per-model outcomes")
    print(f"wrote {out / 'pool_live.json'} and {out / 'pool_live.png'}")
    return 0


def plans(args: argparse.Namespace, share: dict[str, float], specs: dict[str, ReplicaSpec], budget: Budget,
          qps: float) -> list[tuple[str, list[Row]]]:
    """The replica splits run at the 0.8x traffic: triage plan --gpus N's, and --qps's sized for the budget."""
    out = []
    if args.plan_gpus:
        out.append((f"plan of {args.plan_gpus}", for_gpus(share, specs, args.plan_gpus)))
    if args.plan_budget:
        rows = for_qps(share, specs, qps, 0.8, budget)
        if sum(r.replicas for r in rows) <= args.plan_budget_max:
            out.append(("plan for budget", rows))
        else:
            print(f"triage plan for the budget asks for {sum(r.replicas for r in rows)} replicas, more than "
                  f"--plan-budget-max {args.plan_budget_max}: not run", flush=True)
    return out


def report_hindsight(sample: list[dict[str, Any]], chosen: list[str], models: list[str]) -> None:
    share = shares(models, chosen)
    top = max(share, key=lambda m: share[m])
    on_top = [i for i, m in enumerate(chosen) if m == top]
    own = statistics.fmean(correct(sample[i], top) for i in on_top)
    other = max((statistics.fmean(correct(sample[i], m) for i in on_top), m) for m in models if m != top)
    print("Triage's choices for the sample (knob): " + ", ".join(
        f"{m.split('/')[-1]} {s:.1%}" for m, s in sorted(share.items(), key=lambda x: -x[1])))
    print(f"on the {len(on_top)} sampled queries it sends to {top}: its accuracy {own:.1%}; the best other model "
          f"in hindsight, {other[1]}, {other[0]:.1%}", flush=True)


async def one_run(client: httpx.AsyncClient, pool: Pool, triage: TriageProcess, strategy: str, load: float,
                  rate: float, models: list[str], best_single: str, sample: list[dict[str, Any]], tokens: list[int],
                  args: argparse.Namespace, rng: np.random.Generator,
                  replicas: dict[str, list[str]] | None = None, warm: bool = False) -> dict[str, Any]:
    """One strategy at one load; ``warm``: first route this run's queries once (a fresh router's cache)."""
    n = min(args.max_queries, len(sample), max(1, round(rate * args.duration_s)))
    picked = [int(i) for i in rng.choice(len(sample), size=n, replace=False)]
    if warm:
        await prewarm(client, triage.url, [sample[i]["query"] for i in picked], args.knob)
    arrivals = np.cumsum(rng.exponential(1 / rate, size=n))
    direct = strategy in ("round-robin", "best-single")
    used = list(range(sum(len(u) for u in replicas.values()))) if replicas else list(range(len(models)))
    await pool.drain(client, used)
    await asyncio.sleep(1.5)  # the router's next scrape sees the idle replicas
    await pool.reset(client, used)
    in_flight = [0] * len(models)
    turn = 0

    async def send(k: int, i: int) -> Answer:
        query, need = sample[i]["query"], tokens[i]
        if strategy == "round-robin":
            r = k % len(models)
            url, model = pool.fakes[r].base_url + "/chat/completions", models[r]
        elif strategy == "best-single":  # least busy replica, ties in turn
            nonlocal turn
            turn += 1
            r = min(range(len(models)), key=lambda j: (in_flight[j], (j - turn) % len(models)))
            url, model = pool.fakes[r].base_url + "/chat/completions", best_single
        if direct:
            in_flight[r] += 1
            try:
                return await ask(client, url, query, need, f"served-{r}", args, answered_by=model, replica=str(r))
            finally:
                in_flight[r] -= 1
        budget = args.max_queue_s * 1000 if strategy == "load-aware" else None
        return await ask(client, triage.url + "/v1/chat/completions", query, need, f"triage:{args.knob:g}", args,
                         budget_ms=budget)

    start = time.monotonic()
    tasks = []
    for k, (i, at) in enumerate(zip(picked, arrivals, strict=True)):
        delay = start + float(at) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(k, i)))
    answers = await asyncio.gather(*tasks)
    span = time.monotonic() - start
    stats = await pool.stats(client, used)
    names = ([m for m in models for _ in replicas[m]] if replicas else
             [best_single] * len(models) if strategy == "best-single" else models)
    utilisation = {f"{names[j].split('/')[-1]}#{j}": s["busy_slot_s"] / (s["slots"] * s["window_s"])
                   for j, s in enumerate(stats)}
    admitted = [a for a in answers if a.status != 429]
    first = [a for a in answers if math.isfinite(a.ttft)]
    scores = [correct(sample[i], a.model) for i, a in zip(picked, answers, strict=True)
              if math.isfinite(a.ttft) and a.model]
    good = sum(a.ttft <= args.ttft_budget_s for a in answers)
    answered_by: dict[str, int] = {}
    for a in first:
        answered_by[str(a.model)] = answered_by.get(str(a.model), 0) + 1
    return {
        "load": load, "strategy": strategy, "via": "direct to the fakes" if direct else "triage",
        "replicas": len(used), "offered_qps": rate, "requests": n, "answered": len(first),
        "accuracy": statistics.fmean(scores) if scores else math.nan,
        "ttft_p50": nearest_rank([a.ttft for a in admitted], 50),
        "ttft_p99": nearest_rank([a.ttft for a in admitted], 99),
        "goodput_qps": good / span, "goodput_share": good / n,
        "refused": sum(a.status == 429 for a in answers),
        "refused_with_retry_after": sum(a.status == 429 and a.retry_after is not None for a in answers),
        "gave_up": sum(a.status == 0 for a in answers),
        "errors": sum(a.status not in (0, 200, 429) for a in answers),
        "spilled": sum(a.spilled for a in answers), "max_util": max(utilisation.values()),
        "utilisation": utilisation, "answered_by": answered_by, "span_s": span,
        "client_timeout_s": args.client_timeout_s,
    }


def header_text() -> str:
    return (f"{'load':>5} {'strategy':<26} {'repl':>4} {'req/s':>6} {'n':>4} {'accuracy':>8} {'ttft p50':>9} "
            f"{'ttft p99':>9} {'good %':>6} {'429':>4} {'gave up':>7} {'spill':>5} {'max util':>8}")


def row_text(r: dict[str, Any]) -> str:
    def seconds(x: float) -> str:
        return f"{x:>8.2f}s" if math.isfinite(x) else f"{'>' + format(r['client_timeout_s'], 'g') + 's':>9}"

    return (f"{r['load']:>5.1f} {r['strategy']:<26} {r['replicas']:>4} {r['offered_qps']:>6.1f} {r['requests']:>4} "
            f"{r['accuracy']:>8.1%} {seconds(r['ttft_p50'])} {seconds(r['ttft_p99'])} {r['goodput_share']:>6.1%} "
            f"{r['refused']:>4} {r['gave_up']:>7} {r['spilled']:>5} {r['max_util']:>8.0%}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
