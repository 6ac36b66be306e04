"""Which out-of-domain detector: the kNN distance, the domain detector's line, or the line with the OOD margin?
Train rows only.

    .venv/bin/python -m bench.ood_detector [--datasets routerdc,llmrouter,routellm,routeprofile] [--grid | --parts
        | --weight]

The variants of each mode but ``--weight`` come from the same ``fit()`` (model selection does not depend on the
detector: it routes its validation rows with no OOD fallback), so each comparison differs in the OOD call alone.
``--grid`` compares the line alone with the OOD margin at 0.05, 0.075, 0.1 and 0.15 from scores 0.25, 0.5, 0.75;
``--parts`` the margin read from the detector's score (the larger part) or from the energy part alone;
``--weight`` the domain weight chosen on the validation slice (the default) against a fit with the weight fixed at 1
(``triage calibrate --domain-weight 1``), with the margin at 0.1, 0.15 and 0.2:

- **Leave one domain out** (each of the 8 largest domains with >= 100 train rows): ``fit()`` on the other
  domains' train rows, then that domain's train rows routed at knob 1; the difference to the generalist's
  accuracy on them, and the share flagged.
- **In domain**: three dev slices (20 % of the train rows by sha256("dev:" + id), "dev2:", "dev3:"), each
  routed by a fit on the rest; the validation objective (anchored AIQ, or knob-1 accuracy without a cost
  dimension), and the share flagged.

The figures in docs/results.md, "The domain OOD detector", "The OOD margin" and "RouterDC with the domain weight
fixed at 1", come from this command.

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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.harness.train_rows import TrainRows, load
from calibration.data import hash_fraction
from calibration.fit import FitConfig, FitResult
from calibration.lodo import policy_from
from calibration.selection import KNOBS, quality
from router.policy import Policy

# name -> None (the kNN distance) or the detector's (margin at the line, where it starts, the score it reads)
DEFAULT = {"kNN": None, "domain detector, line alone": (0.0, FitConfig.ood_margin_from, "max"),
           "with the OOD margin": (FitConfig.ood_margin, FitConfig.ood_margin_from, FitConfig.ood_margin_score)}
GRID = {"line alone": (0.0, 0.5, "max")} | {f"{m:g} from {s:g}": (m, s, "max") for m in (0.05, 0.075, 0.1, 0.15)
                                            for s in (0.25, 0.5, 0.75)}
# The margin read from the detector's score (the larger of its parts) or from the energy part alone.
PARTS = {"line alone": (0.0, 0.5, "max")} | {f"{m:g} from {s:g}, {p}": (m, s, p) for m, s in ((0.1, 0.5), (0.15, 0.5))
                                             for p in ("max", "energy")}
# The domain weight fixed at 1 (``--domain-weight 1``) instead of chosen on the validation slice, with the margin at
# 0.1, 0.15 and 0.2 (read from the energy part): the domain level alone carries the in-domain estimate, and the
# margin has to protect unseen domains from it. These variants are fitted with that weight (FIXED_WEIGHT).
WEIGHT = {"chosen weight, margin 0.1": (0.1, 0.5, "energy")} | {
    f"weight 1, margin {m:g}": (m, 0.5, "energy") for m in (0.1, 0.15, 0.2)}
FIXED_WEIGHT = {name: 1.0 for name in WEIGHT if name.startswith("weight 1")}
Variants = Mapping[str, tuple[float, float, str] | None]


def policies(data: TrainRows, rows: np.ndarray, variants: Variants) -> tuple[FitResult, dict[str, Policy]]:
    """One fit on ``rows`` (and one per weight FIXED_WEIGHT names), routed with each variant's OOD call."""
    result, _ = data.fit(rows, FitConfig(ood_method="domains"))
    fixed: dict[float, FitResult] = {}
    models, g = data.rows.models, data.generalist
    out = {}
    for name, margin in variants.items():
        fitted = result
        if name in FIXED_WEIGHT:
            w = FIXED_WEIGHT[name]
            if w not in fixed:
                fixed[w] = data.fit(rows, FitConfig(ood_method="domains", domain_weight=w))[0]
            fitted = fixed[w]
        assert fitted.ood_detector is not None
        detector = None if margin is None else dataclasses.replace(
            fitted.ood_detector, margin_at_line=margin[0], margin_from=margin[1], margin_score=margin[2])
        out[name] = policy_from(dataclasses.replace(fitted, ood_detector=detector), models, g)
    return result, out


def held_out(data: TrainRows, variants: Variants,
             limit: int = 8) -> list[tuple[str, float, float, dict[str, tuple[float, float]]]]:
    domains = np.array(data.rows.domains)
    counts = collections.Counter(domains.tolist())
    out = []
    for name, n in counts.most_common(limit):
        if n < 100:
            break
        mask = domains == name
        _, routers = policies(data, ~mask, variants)
        x, s = data.x[mask], data.rows.scores[mask]
        g = data.rows.models.index(data.generalist)
        res = {}
        for method, policy in routers.items():
            est = policy.estimate(x)
            chosen, reasons = policy.choose(est, np.ones(len(x)))
            res[method] = (float(s[np.arange(len(x)), chosen].mean() - s[:, g].mean()), ood_share(reasons))
        out.append((name, float(n), float(s[:, g].mean()), res))
    return out


def in_domain(data: TrainRows, salt: str, variants: Variants) -> tuple[FitResult, dict[str, tuple[float, float]]]:
    dev = np.array([hash_fraction(salt + i) < 0.2 for i in data.rows.ids])
    result, routers = policies(data, ~dev, variants)
    x, s, c = data.x[dev], data.rows.scores[dev], data.rows.costs[dev]
    rows = np.arange(len(x))
    res = {}
    for method, policy in routers.items():
        est = policy.estimate(x)
        points, share = [], 0.0
        for knob in KNOBS:
            chosen, reasons = policy.choose(est, np.full(len(x), knob))
            points.append((float(knob), float(s[rows, chosen].mean()), float(c[rows, chosen].mean())))
            share = ood_share(reasons)  # the last knob's: 1
        res[method] = (quality(points, s, c), share)
    return result, res


def ood_share(reasons: list[str]) -> float:
    """Rows the OOD call sent to the generalist: past the line, or by the margin before it."""
    return float(np.mean([r in ("ood_fallback", "ood_margin") for r in reasons]))


def speed(artifact: Path, rounds: int) -> None:
    from bench.harness.datasets import ROOT
    from calibration.embeddings import EmbeddingCache
    from calibration.options import make_encoder
    from router.artifact import Artifact

    art = Artifact.load(artifact)
    if art.ood_detector is None:
        raise SystemExit("this artifact has no domain detector (calibrate it with --ood-method domains)")
    rows = [json.loads(line) for line in (ROOT / "routerdc_7model.jsonl").read_text().split("\n") if line]
    queries = [r["query"] for r in rows if r["split"] == "test"][: min(rounds, 2000)]
    x = EmbeddingCache(make_encoder(2)).embed(queries, progress=False)
    # The kNN distance against the threshold the same validation rows gave.
    threshold = float(json.loads((artifact / "ood.json").read_text())["held_out_quantiles"]["0.95"])
    knn_art = replace(art, ood_detector=None, ood_threshold=threshold, ood_cluster_thresholds=None)
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
    parser.add_argument("--grid", action="store_true", help="the OOD margin's settings side by side")
    parser.add_argument("--parts", action="store_true",
                        help="the OOD margin read from the detector's score or from its energy part alone")
    parser.add_argument("--weight", action="store_true",
                        help="the chosen domain weight against weight 1 with margins 0.1, 0.15 and 0.2")
    args = parser.parse_args(argv)
    if args.speed:
        speed(args.speed, args.rounds)
        return 0
    variants = GRID if args.grid else PARTS if args.parts else WEIGHT if args.weight else DEFAULT
    names = list(variants)
    head = " | ".join(names)
    rule = "|---" * len(names)
    for name in args.datasets.split(","):
        data = load(name)
        print(f"\n## {name}\n\nLeave one domain out (train rows, knob 1), points against the generalist (% sent to "
              f"the generalist by the OOD call):\n\n| held-out domain | rows | {head} |\n|---|---{rule}|", flush=True)
        deltas: dict[str, list[float]] = {m: [] for m in names}
        for domain, n, _, res in held_out(data, variants):
            for m in names:
                deltas[m].append(100 * res[m][0])
            print(f"| {domain} | {n:.0f} | " + " | ".join(
                f"{100 * res[m][0]:+.2f} ({100 * res[m][1]:.1f})" for m in names) + " |", flush=True)
        if deltas[names[0]]:
            print("| **mean** / worst | | " + " | ".join(
                f"**{np.mean(deltas[m]):+.2f}** / {min(deltas[m]):+.2f}" for m in names) + " |")
        print(f"\nIn domain, three dev slices (objective, % sent to the generalist by the OOD call at knob 1):\n\n"
              f"| slice | chosen k / domain weight | {head} |\n|---|---{rule}|", flush=True)
        objective: dict[str, list[float]] = {m: [] for m in names}
        for salt in ("dev:", "dev2:", "dev3:"):
            result, res = in_domain(data, salt, variants)
            weight = result.domains.weight if result.domains is not None else 0.0
            for m in names:
                objective[m].append(res[m][0])
            print(f"| {salt} | {result.k} / {weight:g} | " + " | ".join(
                f"{res[m][0]:.4f} ({100 * res[m][1]:.1f})" for m in names) + " |", flush=True)
        print("| **mean** | | " + " | ".join(f"**{np.mean(objective[m]):.4f}**" for m in names) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
