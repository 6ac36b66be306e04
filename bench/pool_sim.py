"""The GPU pool, simulated: open-loop Poisson arrivals of RouterDC test queries against vLLM-like replicas.

    python -m bench.pool_sim --artifact var/bench/artifacts/routerdc-pool [--queries 3000] [--loads 0.3,0.8,1.5]

Each replica serves at most ``--slots`` sequences at a time and queues the rest first come, first served (as
vLLM does); a request holds its slot for a service time drawn once per query (log-normal, mean
``--service-s``), so every strategy meets the same work. The time to first token is the wait for a slot (at the
router and at the replica) plus ``--prefill-s``. Time is virtual: a run takes seconds and gives the same
figures every time (``--seed``).

The routing is Triage's own: the policy's decisions for the sampled test queries (the artifact's embedder,
knob ``--knob``), the load estimate of router/load.py (``Load``: in-flight counts, max_concurrency, measured
service times) and the candidates of router/admission.py (only models eligible for the query). Side by side:

    quality       Triage without a queue budget: the policy's choice, queued without bound
    load-aware    Triage with ``pool.max_queue_ms`` = ``--max-queue-s``, a router queue of ``--queue-size``
                  for at most ``--queue-timeout-s``, then 429
    round-robin   every model in turn, whatever the query
    best-single   the most accurate model on the calibration data, on every replica

Each answer is scored with the data set's real outcome for that query and model, by ``triage eval``'s rule (a
multiple-choice score > 0 is a right answer). Goodput: answers whose first token came within ``--ttft-budget-s``,
per second of the run.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.datasets import correct
from router.admission import candidates
from router.load import Load
from router.plan import Budget, ReplicaSpec, for_gpus, for_qps, shares
from router.policy import Decision

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "routerdc_7model.jsonl"
STRATEGIES = ("quality", "load-aware", "round-robin", "best-single")


@dataclass
class Replica:
    model: str
    slots: int
    load: Load
    running: int = 0
    queue: deque[int] = field(default_factory=deque)
    busy_s: float = 0.0

    @property
    def in_flight(self) -> int:
        return self.running + len(self.queue)


@dataclass
class Outcome:
    ttft: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    refused: int = 0
    spilled: int = 0
    utilisation: dict[str, float] = field(default_factory=dict)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(strategy: str, pool: dict[str, int], arrivals: list[float], service: list[float],
             route: Callable[[int], list[str]], score: Callable[[int, str], float], args: argparse.Namespace
             ) -> Outcome:
    """One run: ``route(i)`` gives query i's candidates best first (one for the load-unaware strategies)."""
    clock = Clock()
    replicas = [Replica(m, args.slots, Load(args.slots, args.service_s, clock)) for m, n in pool.items()
                for _ in range(n)]
    by_model: dict[str, list[Replica]] = {}
    for replica in replicas:
        by_model.setdefault(replica.model, []).append(replica)
    out = Outcome()
    events: list[tuple[float, int, str, int, int]] = []  # (time, order, kind, query, replica)
    order = 0
    started: dict[int, float] = {}
    waiting: deque[tuple[int, float]] = deque()  # the router's queue: (query, deadline)

    def push(t: float, kind: str, query: int, replica: int = -1) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, query, replica))

    def start(r: int, query: int) -> None:
        replica = replicas[r]
        replica.running += 1
        out.ttft.append(clock.now - arrivals[query] + args.prefill_s)
        out.scores.append(score(query, replica.model))
        started[query] = clock.now
        push(clock.now + service[query], "done", query, r)

    def send(query: int, model: str) -> None:
        r = min((i for i, x in enumerate(replicas) if x.model == model), key=lambda i: replicas[i].in_flight)
        if replicas[r].running < replicas[r].slots:
            start(r, query)
        else:
            replicas[r].queue.append(query)

    def place(query: int) -> bool:
        names = route(query)
        for name in names:
            best = min(by_model[name], key=lambda x: x.in_flight)
            if best.load.queue_seconds(best.in_flight) <= args.max_queue_s:
                out.spilled += name != names[0]
                send(query, name)
                return True
        return False

    rr = 0
    for i, t in enumerate(arrivals):
        push(t, "arrive", i)
    while events:
        clock.now, _, kind, query, r = heapq.heappop(events)
        if kind == "arrive":
            if strategy != "load-aware":
                if strategy == "round-robin":
                    model, rr = list(pool)[rr % len(pool)], rr + 1
                else:
                    model = route(query)[0]
                send(query, model)
            elif not place(query):
                if len(waiting) >= args.queue_size:
                    out.refused += 1
                else:
                    waiting.append((query, clock.now + args.queue_timeout_s))
                    push(clock.now + args.queue_timeout_s, "timeout", query)
        elif kind == "done":
            replica = replicas[r]
            replica.running -= 1
            replica.busy_s += service[query]
            replica.load.observe(clock.now - started.pop(query))
            if replica.queue:
                start(r, replica.queue.popleft())
            for _ in range(len(waiting)):  # a place freed: the router's queue looks again, oldest first
                waiter, deadline = waiting.popleft()
                if not place(waiter):
                    waiting.append((waiter, deadline))
        elif kind == "timeout":
            kept = deque(w for w in waiting if w[0] != query)
            if len(kept) < len(waiting):
                out.refused += 1
                waiting = kept
    horizon = max(clock.now, arrivals[-1])
    for i, x in enumerate(replicas):
        out.utilisation[f"{x.model.split('/')[-1]}#{i}"] = x.busy_s / (x.slots * horizon)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pool_sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--queries", type=int, default=3000, help="test queries sampled (each arrives once)")
    p.add_argument("--loads", default="0.3,0.8,1.5", help="offered load, times the pool's capacity")
    p.add_argument("--knob", type=float, default=0.5)
    p.add_argument("--slots", type=int, default=8, help="sequences one replica serves at a time")
    p.add_argument("--service-s", type=float, default=2.5, help="mean time a request holds its slot")
    p.add_argument("--prefill-s", type=float, default=0.05, help="first token after the slot is taken")
    p.add_argument("--ttft-budget-s", type=float, default=2.0)
    p.add_argument("--max-queue-s", type=float, default=0.5, help="load-aware: the queue budget (with the "
                   "router queue's timeout, it leaves a second of the first-token budget for the estimate's error)")
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--queue-timeout-s", type=float, default=0.5)
    p.add_argument("--plan-gpus", type=int, default=10, help="also: quality-only on triage plan's split of N, "
                   "at the 0.8x traffic of one replica per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="var/bench/pool_sim")
    args = p.parse_args(argv)

    from calibration.embeddings import EmbeddingCache
    from calibration.options import make_encoder
    from router.artifact import Artifact
    from router.embedding import weights_of
    from router.policy import Policy

    rows = [json.loads(line) for line in Path(args.data).read_text().split("\n") if line.strip()]
    test = [r for r in rows if r.get("split") == "test"]
    rng = np.random.default_rng(args.seed)
    # In the data file's order, a domain's queries come together; real traffic mixes them: a random order.
    sample = [test[i] for i in rng.choice(len(test), size=min(args.queries, len(test)), replace=False)]
    encoder = make_encoder(threads=1)  # MiniLM, as `triage calibrate` embeds by default
    artifact = Artifact.load(args.artifact, embedder_name=encoder.name, embedder_dim=encoder.dim,
                             embedder_weights=weights_of(encoder))
    policy = Policy(artifact)
    vectors = EmbeddingCache(encoder).embed([r["query"] for r in sample], progress=False)
    decisions: list[Decision] = policy.decide(vectors, args.knob)
    models = list(artifact.models)
    best_single = models[int(np.argmax(policy.overall_accuracy))]

    def score(i: int, model: str) -> float:
        return correct(sample[i], model)

    quality_shares = shares(models, [d.model for d in decisions])
    top = max(quality_shares, key=lambda m: quality_shares[m])
    on_top = [i for i, d in enumerate(decisions) if d.model == top]
    hindsight = max((statistics.fmean(score(i, m) for i in on_top), m) for m in models if m != top)
    print(f"{len(sample)} RouterDC test queries, knob {args.knob:g}; quality-only shares: "
          + ", ".join(f"{m.split('/')[-1]} {s:.1%}" for m, s in sorted(quality_shares.items(), key=lambda x: -x[1])))
    own = statistics.fmean(score(i, top) for i in on_top)
    print(f"on the {len(on_top)} queries sent to {top}: its accuracy {own:.1%}; the best other model in "
          f"hindsight, {hindsight[1]}, {hindsight[0]:.1%}")

    service = list(rng.lognormal(math.log(args.service_s) - 0.125, 0.5, size=len(sample)))
    per_replica = args.slots / args.service_s  # requests/s one replica sustains
    one_each = dict.fromkeys(models, 1)
    specs = dict.fromkeys(models, ReplicaSpec(per_replica))
    planned = {r.model: r.replicas for r in for_gpus(quality_shares, specs, args.plan_gpus)}
    # triage plan sized for the first-token budget (the wait for a slot within it, Erlang C): how much the split
    # of --plan-gpus holds within it, and the replicas it asks for at the 0.8x traffic
    budget = Budget(args.ttft_budget_s - args.prefill_s, args.slots)
    split_rows = for_gpus(quality_shares, specs, args.plan_gpus, budget)
    for_budget = {r.model: r.replicas for r in for_qps(quality_shares, specs, 0.8 * len(models) * per_replica, 0.8,
                                                       budget)}
    chains = [[d.model, artifact.generalist] if d.model != artifact.generalist else [d.model] for d in decisions]

    def quality(i: int) -> list[str]:
        return [decisions[i].model]

    def load_aware(i: int) -> list[str]:
        return candidates(decisions[i], chains[i])

    runs: list[dict[str, object]] = []
    for load in [float(x) for x in args.loads.split(",")]:
        plans = [(f"quality, plan of {args.plan_gpus}", planned), ("quality, plan for budget", for_budget)]
        for strategy, pool in [(s, one_each) for s in STRATEGIES] + plans:
            if strategy == "best-single":
                pool = {best_single: len(models)}
            if strategy.startswith("quality, plan") and load != 0.8:
                continue
            # A planned pool meets the same traffic as one replica per model at this load: does it then hold it?
            capacity = (len(models) if strategy.startswith("quality, plan") else sum(pool.values())) * per_replica
            gaps = rng.exponential(1 / (load * capacity), size=len(sample))
            arrivals = list(np.cumsum(gaps))
            route = {"load-aware": load_aware, "best-single": lambda i: [best_single]}.get(strategy, quality)
            result = simulate(strategy.split(",")[0], pool, arrivals, service, route, score, args)
            answered = len(result.ttft)
            good = sum(t <= args.ttft_budget_s for t in result.ttft)
            runs.append({
                "load": load, "strategy": strategy, "replicas": sum(pool.values()), "offered_qps": load * capacity,
                "accuracy": statistics.fmean(result.scores) if result.scores else math.nan,
                "ttft_p50": percentile(result.ttft, 50), "ttft_p99": percentile(result.ttft, 99),
                "goodput_qps": good / arrivals[-1], "goodput_share": good / len(sample), "refused": result.refused,
                "spilled": result.spilled, "answered": answered,
                "max_util": max(result.utilisation.values()), "utilisation": result.utilisation,
            })
    print()
    print(f"{'load':>5} {'strategy':<24} {'repl':>4} {'req/s':>6} {'accuracy':>8} {'ttft p50':>9} {'ttft p99':>9} "
          f"{'goodput/s':>9} {'good %':>6} {'429':>5} {'spill':>5} {'max util':>8}")
    for r in runs:
        print(f"{r['load']:>5.1f} {r['strategy']:<24} {r['replicas']:>4} {r['offered_qps']:>6.1f} "
              f"{r['accuracy']:>8.1%} {r['ttft_p50']:>8.2f}s {r['ttft_p99']:>8.2f}s {r['goodput_qps']:>9.2f} "
              f"{r['goodput_share']:>6.1%} {r['refused']:>5} {r['spilled']:>5} {r['max_util']:>8.0%}")
    print(f"\nreplicas per model from triage plan's split of {args.plan_gpus}: "
          + ", ".join(f"{m.split('/')[-1]} {n}" for m, n in planned.items()))
    print(f"  sized for the budget (--first-token-budget-s {budget.seconds:g} --slots {args.slots}) the split is "
          + ", ".join(f"{r.model.split('/')[-1]} {r.replicas}" for r in split_rows)
          + f"; it holds {min(r.load_held() for r in split_rows):.1f} queries/s within the budget, against "
          f"{0.8 * len(models) * per_replica:.1f} offered at 0.8x")
    print(f"triage plan --qps {0.8 * len(models) * per_replica:.1f} within the budget: {sum(for_budget.values())} "
          "replicas, " + ", ".join(f"{m.split('/')[-1]} {n}" for m, n in for_budget.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool_sim.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    plot(runs, args, out / "pool_sim.png")
    print(f"wrote {out / 'pool_sim.json'} and {out / 'pool_sim.png'}")
    return 0


def plot(runs: list[dict[str, Any]], args: argparse.Namespace, path: Path, strategies: Sequence[str] = STRATEGIES,
         title: str | None = None) -> None:
    """p99 first token, accuracy and goodput against load, one line per strategy (bench.pool_live draws it too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for strategy in strategies:
        mine = [r for r in runs if r["strategy"] == strategy]
        loads = [float(str(r["load"])) for r in mine]
        for ax, key, scale in ((axes[0], "ttft_p99", 1.0), (axes[1], "accuracy", 100.0),
                               (axes[2], "goodput_share", 100.0)):
            ax.plot(loads, [float(str(r[key])) * scale for r in mine], marker="o", label=strategy,
                    color=f"C{STRATEGIES.index(strategy)}" if strategy in STRATEGIES else None)
    axes[0].axhline(args.ttft_budget_s, color="grey", linestyle="--", label=f"{args.ttft_budget_s:g} s budget")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("p99 time to first token (s, log scale)" + getattr(args, "ttft_note", ""))
    axes[1].set_ylabel("accuracy of the answers (%)")
    axes[2].set_ylabel(f"answers with first token within {args.ttft_budget_s:g} s (% of offered)")
    for ax in axes:
        ax.set_xlabel("offered load (x the pool's capacity)")
        ax.set_xticks(sorted({float(str(r["load"])) for r in runs}))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title or f"Simulated pool, one replica per model ({args.slots} slots, {args.service_s:g} s mean "
                 "service); RouterDC test queries, real per-model outcomes")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
