"""Which out-of-domain detector: the kNN distance or the domain detector? Train rows only.

    .venv/bin/python -m bench.ood_detector [--datasets routerdc,llmrouter,routellm,routeprofile]

Both detectors come from the same ``fit()`` (model selection does not depend on the detector: it routes its
validation rows with no OOD fallback), so each comparison below differs in the OOD flag alone:

- **Leave one domain out** (each of the 8 largest domains with >= 100 train rows): ``fit()`` on the other
  domains' train rows, then that domain's train rows routed at knob 1; the difference to the generalist's
  accuracy on them, and the share flagged.
- **In domain**: three dev slices (20 % of the train rows by sha256("dev:" + id), "dev2:", "dev3:"), each
  routed by a fit on the rest; the validation objective (anchored AIQ, or knob-1 accuracy without a cost
  dimension), and the share flagged.

The figures in docs/results.md, "The domain OOD detector", come from this command.

    .venv/bin/python -m bench.ood_detector --speed ARTIFACT [--rounds 2000]

times ``Policy.decide`` on one query at a time (RouterDC test queries, embedded beforehand) with the artifact's
domain detector and with the kNN distance instead (the same artifact, its detector removed), interleaved, and
prints the medians: the policy's share of a decision, embedding aside.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.devsplit import TrainRows, load
from calibration.data import hash_fraction
from calibration.fit import KNOBS, FitConfig, FitResult, quality
from calibration.lodo import policy_from
from router.policy import Policy

METHODS = ("knn", "domains")


def policies(data: TrainRows, rows: np.ndarray) -> tuple[FitResult, dict[str, Policy]]:
    """One fit on ``rows``, routed with either detector."""
    result, _ = data.fit(rows, FitConfig(ood_method="domains"))
    knn = dataclasses.replace(result, ood_detector=None)
    models, g = data.rows.models, data.generalist
    return result, {"knn": policy_from(knn, models, g), "domains": policy_from(result, models, g)}


def held_out(data: TrainRows, limit: int = 8) -> list[tuple[str, float, float, dict[str, tuple[float, float]]]]:
    domains = np.array(data.rows.domains)
    counts = collections.Counter(domains.tolist())
    out = []
    for name, n in counts.most_common(limit):
        if n < 100:
            break
        mask = domains == name
        _, routers = policies(data, ~mask)
        x, s = data.x[mask], data.rows.scores[mask]
        g = data.rows.models.index(data.generalist)
        res = {}
        for method, policy in routers.items():
            est = policy.estimate(x)
            chosen, _ = policy.choose(est, np.ones(len(x)))
            res[method] = (float(s[np.arange(len(x)), chosen].mean() - s[:, g].mean()), float(est.is_ood.mean()))
        out.append((name, float(n), float(s[:, g].mean()), res))
    return out


def in_domain(data: TrainRows, salt: str) -> tuple[FitResult, dict[str, tuple[float, float]]]:
    dev = np.array([hash_fraction(salt + i) < 0.2 for i in data.rows.ids])
    result, routers = policies(data, ~dev)
    x, s, c = data.x[dev], data.rows.scores[dev], data.rows.costs[dev]
    rows = np.arange(len(x))
    res = {}
    for method, policy in routers.items():
        est = policy.estimate(x)
        points = []
        for knob in KNOBS:
            chosen, _ = policy.choose(est, np.full(len(x), knob))
            points.append((float(knob), float(s[rows, chosen].mean()), float(c[rows, chosen].mean())))
        res[method] = (quality(points, s, c), float(est.is_ood.mean()))
    return result, res


def speed(artifact: Path, rounds: int) -> None:
    from bench.embedder_quality import ROOT
    from calibration.cli import make_encoder
    from calibration.embeddings import EmbeddingCache
    from router.artifact import Artifact

    art = Artifact.load(artifact)
    if art.ood_detector is None:
        raise SystemExit("this artifact has no domain detector (calibrate it with --ood-method domains)")
    rows = [json.loads(line) for line in (ROOT / "routerdc_7model.jsonl").read_text().split("\n") if line]
    queries = [r["query"] for r in rows if r["split"] == "test"][: min(rounds, 2000)]
    x = EmbeddingCache(make_encoder(2)).embed(queries, progress=False)
    knn_art = Artifact.load(artifact)
    knn_art.ood_detector = None  # the kNN distance against the threshold the same validation rows gave
    knn_art.ood_threshold = float(json.loads((artifact / "ood.json").read_text())["held_out_quantiles"]["0.95"])
    knn_art.ood_cluster_thresholds = np.full(knn_art.k, knn_art.ood_threshold)
    policies = {"domain detector": Policy(art), "kNN distance": Policy(knn_art)}
    times: dict[str, list[float]] = {name: [] for name in policies}
    for i in range(rounds):
        v = x[i % len(x)][None, :]
        for name, policy in policies.items():
            start = time.perf_counter()
            policy.decide(v, 1.0)
            times[name].append(time.perf_counter() - start)
    print(f"Policy.decide, one query, {rounds} rounds interleaved (knn_weight {art.knn_weight:g}, "
          f"{len(art.reference)} reference rows):")
    for name, t in times.items():
        print(f"  {name}: p50 {1000 * statistics.median(t):.3f} ms, p90 {1000 * np.quantile(t, 0.9):.3f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_detector", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="routerdc,llmrouter,routellm,routeprofile")
    parser.add_argument("--speed", type=Path, metavar="ARTIFACT", help="time the policy with either detector")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.speed:
        speed(args.speed, args.rounds)
        return 0
    for name in args.datasets.split(","):
        data = load(name)
        print(f"\n## {name}\n\nLeave one domain out (train rows, knob 1), points against the generalist "
              "(flagged %):\n\n| held-out domain | rows | kNN | domain detector |\n|---|---|---|---|", flush=True)
        deltas: dict[str, list[float]] = {m: [] for m in METHODS}
        for domain, n, _, res in held_out(data):
            for m in METHODS:
                deltas[m].append(100 * res[m][0])
            print(f"| {domain} | {n:.0f} | " + " | ".join(
                f"{100 * res[m][0]:+.2f} ({100 * res[m][1]:.1f})" for m in METHODS) + " |", flush=True)
        if deltas["knn"]:
            print("| **mean** / worst | | " + " | ".join(
                f"**{np.mean(deltas[m]):+.2f}** / {min(deltas[m]):+.2f}" for m in METHODS) + " |")
        print("\nIn domain, three dev slices (objective, flagged %):\n\n| slice | chosen k / domain weight | kNN "
              "| domain detector |\n|---|---|---|---|", flush=True)
        objective: dict[str, list[float]] = {m: [] for m in METHODS}
        for salt in ("dev:", "dev2:", "dev3:"):
            result, res = in_domain(data, salt)
            weight = result.domains.weight if result.domains is not None else 0.0
            for m in METHODS:
                objective[m].append(res[m][0])
            print(f"| {salt} | {result.k} / {weight:g} | " + " | ".join(
                f"{res[m][0]:.4f} ({100 * res[m][1]:.1f})" for m in METHODS) + " |", flush=True)
        print("| **mean** | | " + " | ".join(f"**{np.mean(objective[m]):.4f}**" for m in METHODS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
