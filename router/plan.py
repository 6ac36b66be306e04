"""``triage plan``: how many replicas each model needs, from the shares the router would give a traffic sample.

    triage plan --artifact DIR --traffic QUERIES.jsonl --qps N --replica-throughput FILE|N [--knob K]
    triage plan --artifact DIR --traffic QUERIES.jsonl --gpus N --replica-throughput FILE|N [--knob K]

The traffic is routed exactly as ``triage route`` does (the artifact's embedder, the policy at the knob, every
model available). With ``--qps``, each model needs ``ceil(qps * share / (throughput * max_utilisation))``
replicas, at least one (every model must stay reachable: a rare query still goes to it). With ``--gpus``, a pool
of N replicas is split by repeatedly giving one more to the model that saturates first, starting from one each;
that maximises the load the pool holds with the same shares, which is printed. A replica past
``max_utilisation`` queues without bound under bursty arrivals, so the load held is quoted at it and at
saturation.

A utilisation cap is a mean; a first-token budget is a tail. With ``--first-token-budget-s B --slots S`` the
replicas are sized for the budget instead: a model's replicas are S * n slots fed by Poisson arrivals, and the
share of requests that wait longer than B for a slot is Erlang C's (M/M/c, the replicas taken as one queue, as
least-outstanding balancing nearly makes them). Exponential service times are more variable than completions
usually are, so the estimate errs on the side of more replicas. ``--qps`` then gives each model the fewest
replicas that keep its ``--percentile`` wait within B; ``--gpus`` gives each next replica to the model that
first breaks the budget, and prints the load the pool holds within it.

``--replica-throughput`` is a number (requests/s one replica sustains, for every model), or a JSON/YAML file
``{model: requests_per_s | {qps, usd_per_hour}, "default": ...}`` (measured: ``triage specialists smoke``, or
vLLM's benchmark figures for the request lengths at hand). ``--usd-per-replica-hour`` prices replicas the file
does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class PlanError(Exception):
    """Bad input to ``triage plan``; the message says which and why."""


@dataclass(frozen=True)
class ReplicaSpec:
    """What one replica of a model sustains (requests/s) and costs (USD/hour)."""

    qps: float
    usd_per_hour: float = 0.0

    def __post_init__(self) -> None:
        if not self.qps > 0 or not math.isfinite(self.qps):
            raise PlanError(f"a replica's throughput must be a positive number of requests/s, not {self.qps}")
        if self.usd_per_hour < 0:
            raise PlanError("a replica's price per hour cannot be negative")


def erlang_c(servers: int, offered: float) -> float:
    """The chance that an arrival waits in an M/M/c queue with ``servers`` and ``offered`` = rate / service rate
    (< servers); from Erlang B's recurrence, which stays finite for hundreds of servers."""
    blocked = 1.0
    for k in range(1, servers + 1):
        blocked = offered * blocked / (k + offered * blocked)
    return servers * blocked / (servers - offered * (1 - blocked))


@dataclass(frozen=True)
class Budget:
    """``percentile`` % of requests should wait at most ``seconds`` for a slot, on replicas of ``slots`` slots."""

    seconds: float
    slots: int
    percentile: float = 99.0

    def __post_init__(self) -> None:
        if not self.seconds > 0 or self.slots < 1 or not 0 < self.percentile < 100:
            raise PlanError("a first-token budget needs seconds > 0, slots >= 1 and a percentile in (0, 100)")

    def wait(self, replicas: int, spec: ReplicaSpec, rate: float) -> float:
        """The percentile wait for a slot at ``rate`` requests/s on ``replicas`` replicas (M/M/c)."""
        servers = replicas * self.slots
        per_slot = spec.qps / self.slots  # one slot's service rate
        if rate <= 0:
            return 0.0
        if rate >= servers * per_slot:
            return math.inf
        tail = 1 - self.percentile / 100
        waits = erlang_c(servers, rate / per_slot)
        return 0.0 if waits <= tail else math.log(waits / tail) / (servers * per_slot - rate)

    def held(self, replicas: int, spec: ReplicaSpec) -> float:
        """The most requests/s ``replicas`` replicas take with the percentile wait within the budget."""
        low, high = 0.0, replicas * spec.qps
        for _ in range(50):
            middle = (low + high) / 2
            low, high = (middle, high) if self.wait(replicas, spec, middle) <= self.seconds else (low, middle)
        return low


@dataclass(frozen=True)
class Row:
    model: str
    share: float
    replicas: int
    spec: ReplicaSpec
    within_budget: float | None = None  # requests/s this model's replicas take within a first-token budget

    def capacity(self) -> float:
        return self.replicas * self.spec.qps

    def saturation(self) -> float:
        """Total queries/s at which this model's replicas saturate (its share of them fills its capacity)."""
        return math.inf if self.share == 0 else self.capacity() / self.share

    def load_held(self) -> float:
        """Total queries/s this model holds: within the budget when there is one, else at saturation."""
        if self.within_budget is None:
            return self.saturation()
        return math.inf if self.share == 0 else self.within_budget / self.share


def read_specs(value: str, models: Sequence[str], usd_per_hour: float) -> dict[str, ReplicaSpec]:
    """``--replica-throughput``: one number for every model, or a file of per-model figures."""
    try:
        qps = float(value)
    except ValueError:
        qps = math.nan
    if math.isfinite(qps):
        return {m: ReplicaSpec(qps, usd_per_hour) for m in models}
    path = Path(value)
    try:
        data = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except FileNotFoundError:
        raise PlanError(f"--replica-throughput {value!r} is neither a number nor a file") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"{path.name} is not valid JSON or YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path.name}: expected a mapping of model to requests/s")

    def spec(entry: Any, model: str) -> ReplicaSpec:
        if isinstance(entry, int | float):
            return ReplicaSpec(float(entry), usd_per_hour)
        if isinstance(entry, dict) and isinstance(entry.get("qps"), int | float):
            return ReplicaSpec(float(entry["qps"]), float(entry.get("usd_per_hour", usd_per_hour)))
        raise PlanError(f"{path.name}: {model!r} needs a number or {{qps, usd_per_hour}}")

    unknown = sorted(set(data) - set(models) - {"default"})
    if unknown:
        raise PlanError(f"{path.name} names models the artifact does not have: {', '.join(unknown)}")
    missing = [m for m in models if m not in data and "default" not in data]
    if missing:
        raise PlanError(f"{path.name} has no throughput for {', '.join(missing)} (and no default)")
    return {m: spec(data.get(m, data.get("default")), m) for m in models}


def shares(models: Sequence[str], chosen: Sequence[str]) -> dict[str, float]:
    counts = Counter(chosen)
    total = max(len(chosen), 1)
    return {m: counts[m] / total for m in models}


def for_qps(share: Mapping[str, float], specs: Mapping[str, ReplicaSpec], qps: float,
            max_utilisation: float, budget: Budget | None = None) -> list[Row]:
    """Replicas per model to carry ``qps`` with no replica past ``max_utilisation`` (or, with a budget, the
    percentile wait within it); at least one each."""
    if budget is None:
        return [Row(m, s, max(1, math.ceil(qps * s / (specs[m].qps * max_utilisation) - 1e-9)), specs[m])
                for m, s in share.items()]
    rows = []
    for m, s in share.items():
        n = 1
        while budget.wait(n, specs[m], qps * s) > budget.seconds:
            n += 1
        rows.append(Row(m, s, n, specs[m], budget.held(n, specs[m])))
    return rows


def for_gpus(share: Mapping[str, float], specs: Mapping[str, ReplicaSpec], gpus: int,
             budget: Budget | None = None) -> list[Row]:
    """``gpus`` replicas split over the models, one each first, then each next one to the model that saturates
    (or, with a budget, breaks it) first: greedy on the bottleneck maximises the load held, the minimum over
    models, since each model's load held grows with its replicas."""
    if gpus < len(share):
        raise PlanError(f"--gpus {gpus} is fewer than the {len(share)} models: each needs a replica")
    replicas = dict.fromkeys(share, 1)

    def row(model: str) -> Row:
        n = replicas[model]
        return Row(model, share[model], n, specs[model], budget.held(n, specs[model]) if budget else None)

    for _ in range(gpus - len(share)):
        replicas[min(share, key=lambda m: row(m).load_held())] += 1
    return [row(m) for m in share]


def render(rows: Sequence[Row], qps: float | None, max_utilisation: float, n_queries: int, knob: float,
           budget: Budget | None = None) -> str:
    held = min(r.load_held() for r in rows)
    saturates = min(r.saturation() for r in rows)
    aim = (f"the {budget.percentile:g}th-percentile wait for a slot within {budget.seconds:g} s ({budget.slots} "
           "slots a replica, M/M/c)" if budget else f"replicas planned to run at most {max_utilisation:.0%} busy")
    lines = [f"routed {n_queries} queries at knob {knob:g}; {aim}", ""]
    header = f"{'model':<44} {'share':>7} {'req/s':>8} {'per replica':>12} {'replicas':>8} {'busy':>6} {'USD/h':>8}"
    lines += [header, "-" * len(header)]
    at = qps if qps is not None else held if budget else held * max_utilisation
    for r in sorted(rows, key=lambda r: -r.share):
        demand = at * r.share
        lines.append(f"{r.model[:44]:<44} {r.share:>7.1%} {demand:>8.2f} {r.spec.qps:>12.2f} {r.replicas:>8d} "
                     f"{demand / r.capacity():>6.0%} {r.replicas * r.spec.usd_per_hour:>8.2f}")
    lines.append("-" * len(header))
    total = sum(r.replicas for r in rows)
    cost = sum(r.replicas * r.spec.usd_per_hour for r in rows)
    lines.append(f"{'pool':<44} {1:>7.0%} {at:>8.2f} {'':>12} {total:>8d} {'':>6} {cost:>8.2f}")
    bottleneck = min(rows, key=lambda r: r.load_held())
    if budget:
        lines += ["", f"the pool holds {held:.2f} queries/s with the {budget.percentile:g}th-percentile wait for a "
                  f"slot within {budget.seconds:g} s ({bottleneck.model} first over it), and saturates at "
                  f"{saturates:.2f} queries/s"]
    else:
        lines += ["", f"the pool holds {held * max_utilisation:.2f} queries/s with every replica at most "
                  f"{max_utilisation:.0%} busy, and saturates at {held:.2f} queries/s ({bottleneck.model} first)"]
    if qps is None:
        lines.append(f"(req/s and busy above: at {at:.2f} queries/s)")
    return "\n".join(lines)


def read_traffic(path: Path, split: str | None) -> list[str]:
    """Queries from JSONL rows with a ``query`` (the routing data's rows, or ``triage route``'s input)."""
    queries = []
    # split on "\n" only: queries contain U+2028/U+0085, which str.splitlines() would treat as line ends
    for number, line in enumerate(path.read_text().split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query = row["query"]
        except (ValueError, KeyError, TypeError):
            raise PlanError(f"line {number} of the traffic needs JSON with a 'query'") from None
        if split is None or row.get("split") == split:
            queries.append(str(query))
    if not queries:
        raise PlanError("the traffic file has no queries" + (f" in split {split!r}" if split else ""))
    return queries


def route_shares(artifact_dir: str, queries: list[str], knob: float, config: str | None) -> tuple[list[str],
                                                                                                    list[str]]:
    """(models, the model chosen for each query), as ``triage route`` decides, every model available."""
    import numpy as np

    from router.artifact import Artifact, recorded_window
    from router.embedding import identity, load_encoder
    from router.policy import Policy
    from router.settings import EmbedderSettings, load_settings

    # Without a config: the default embedder with the artifact's routing window, on every core (a batch job).
    settings = (load_settings(config).embedder if config
                else EmbedderSettings(window=recorded_window(artifact_dir), threads=os.cpu_count() or 1))
    embedder = load_encoder(settings)
    artifact = Artifact.load(artifact_dir, **identity(embedder))
    refine = None
    if artifact.refine is not None:
        refine_encoder = load_encoder(settings, settings.refine_backend)
        refine = lambda picked: refine_encoder.encode([queries[int(i)] for i in picked])  # noqa: E731
    decisions = Policy(artifact).decide(embedder.encode(queries), np.full(len(queries), knob), refine=refine)
    return list(artifact.models), [d.model for d in decisions]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="triage plan", description="Replicas per model for a traffic sample.")
    p.add_argument("--artifact", required=True)
    p.add_argument("--traffic", required=True, help="JSONL rows with a 'query' (e.g. the routing data)")
    p.add_argument("--split", help="only rows with this 'split' (e.g. test)")
    load = p.add_mutually_exclusive_group(required=True)
    load.add_argument("--qps", type=float, help="queries/s the pool must carry")
    load.add_argument("--gpus", type=int, help="replicas in the pool (one per GPU or GPU group)")
    p.add_argument("--replica-throughput", required=True, help="requests/s per replica, or a JSON/YAML file")
    p.add_argument("--usd-per-replica-hour", type=float, default=0.0, help="price of a replica-hour")
    p.add_argument("--knob", type=float, default=0.5)
    p.add_argument("--max-utilisation", type=float, default=0.8, help="plan each replica this busy at most")
    p.add_argument("--first-token-budget-s", type=float, help="size for this wait for a slot instead of the "
                   "utilisation cap (needs --slots)")
    p.add_argument("--slots", type=int, help="sequences one replica serves at a time (vLLM's max_num_seqs)")
    p.add_argument("--percentile", type=float, default=99.0, help="with a budget: this share of requests in it")
    p.add_argument("--config", help="the server's YAML config: route with its embedder settings")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from router.artifact import ArtifactError
    from router.embedding import EmbedderError
    from router.settings import ConfigError

    try:
        if not 0 <= args.knob <= 1:
            raise PlanError(f"--knob {args.knob} is outside [0, 1]")
        if not 0 < args.max_utilisation <= 1:
            raise PlanError("--max-utilisation must be in (0, 1]")
        if args.qps is not None and not args.qps > 0:
            raise PlanError("--qps must be positive")
        budget = None
        if args.first_token_budget_s is not None:
            if args.slots is None:
                raise PlanError("--first-token-budget-s needs --slots (sequences a replica serves at a time)")
            budget = Budget(args.first_token_budget_s, args.slots, args.percentile)
        queries = read_traffic(Path(args.traffic), args.split)
        models, chosen = route_shares(args.artifact, queries, args.knob, args.config)
        specs = read_specs(args.replica_throughput, models, args.usd_per_replica_hour)
        share = shares(models, chosen)
        if args.qps is not None:
            rows = for_qps(share, specs, args.qps, args.max_utilisation, budget)
        else:
            rows = for_gpus(share, specs, args.gpus, budget)
    except (PlanError, ArtifactError, ConfigError, EmbedderError, OSError) as exc:
        print(f"triage plan: {exc}", file=sys.stderr)
        return 2
    print(render(rows, args.qps, args.max_utilisation, len(queries), args.knob, budget))
    return 0
