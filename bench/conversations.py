"""Conversations built from RouterDC's test queries: does affinity stop bouncing, and does it still switch?

Two kinds of chain, drawn with a fixed seed from the test split (real queries, real per-model outcomes):
- same-domain chains: ``--turns`` queries of one domain;
- switching chains: half the turns from one domain, then half from another.

Each turn is decided by the production policy on the real embedding (``triage calibrate`` on the train split makes
the artifact), once alone (today's per-request routing) and once with the router's affinity rule
(``router.affinity.keeps`` with ``sessions.tolerance``): a later turn keeps the conversation's backend unless the
rule says why not. Printed: the backend switch rate between consecutive turns inside one domain, the share of
switching chains whose backend changes at the domain change (and within one turn after it), and the routed
accuracy (mean correctness of the chosen model on each turn) of both.

    python -m bench.conversations [--chains 300] [--turns 4] [--knob 0.5] [--tolerance 0.05]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.stack import DATA, ensure_artifact

GENERALIST = "cognitivecomputations/dolphin-2.9-llama3-8b"  # the make-run fleet's generalist
ARTIFACT = Path("var/bench/conversations/routerdc")


@dataclass
class Outcome:
    backends: list[str]
    correct: list[float]


def chains(domains: list[str], turns: int, count: int, switching: bool, seed: int) -> list[list[int]]:
    by_domain: dict[str, list[int]] = {}
    for i, domain in enumerate(domains):
        by_domain.setdefault(domain, []).append(i)
    names = sorted(d for d, rows in by_domain.items() if len(rows) >= turns)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if switching:
            first, second = rng.sample(names, 2)
            half = turns // 2
            out.append(rng.sample(by_domain[first], half) + rng.sample(by_domain[second], turns - half))
        else:
            out.append(rng.sample(by_domain[rng.choice(names)], turns))
    return out


def follow(chain: list[int], decisions: dict[int, Any], scores: np.ndarray, models: list[str],
           tolerance: float | None, follow_domain: bool = True) -> Outcome:
    """The backends of one conversation's turns: each alone (tolerance None) or with the affinity rule."""
    from router.affinity import keeps

    previous: str | None = None
    domain = ""
    backends, correct = [], []
    for row in chain:
        decision = decisions[row]
        backend = decision.model
        if tolerance is not None and previous is not None and keeps(
                decision, previous, tolerance, domain, follow_domain) is None:
            backend = previous
        previous, domain = backend, decision.domain
        backends.append(backend)
        correct.append(float(scores[row, models.index(backend)]))
    return Outcome(backends, correct)


def switch_rate(outcomes: list[Outcome], pairs: list[int]) -> float:
    changed = [o.backends[t] != o.backends[t - 1] for o in outcomes for t in pairs]
    return float(np.mean(changed)) if changed else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=300)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--knob", type=float, default=0.5)
    parser.add_argument("--tolerance", type=float, default=None, help="default: the config default")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from calibration.data import correctness, load_scores
    from calibration.embeddings import EmbeddingCache
    from calibration.options import make_encoder
    from router.artifact import Artifact
    from router.policy import Policy
    from router.settings import SessionSettings

    tolerance = SessionSettings().tolerance if args.tolerance is None else args.tolerance
    artifact = Artifact.load(ensure_artifact(ARTIFACT, DATA, GENERALIST))
    matrix = load_scores(Path(DATA))
    test = matrix.subset(matrix.mask_split("test"))
    same = chains(test.domains, args.turns, args.chains, switching=False, seed=args.seed)
    switching = chains(test.domains, args.turns, args.chains, switching=True, seed=args.seed + 1)
    rows = sorted({row for chain in same + switching for row in chain})
    encoder = make_encoder(threads=1)  # the same MiniLM (torch) calibration used, so its cache serves
    vectors = EmbeddingCache(encoder).embed([test.queries[i] for i in rows])
    decided = Policy(artifact).decide(vectors, args.knob)
    decisions = dict(zip(rows, decided, strict=True))
    correct = np.array([[correctness(test.domains[i], s) for s in test.scores[i]] for i in range(len(test))])
    models = test.models

    half = args.turns // 2
    print(f"RouterDC test split, {args.chains} chains of {args.turns} turns each kind, knob {args.knob}, "
          f"affinity tolerance {tolerance}; artifact calibrated on train ({ARTIFACT})")
    print("| routing | same domain: switch rate | switching chains: switch at the change | within one turn after "
          "| inside a segment | accuracy (same) | accuracy (switching) |")
    print("|---|---|---|---|---|---|---|")
    variants = (("each turn alone", None, False), ("affinity, accuracy tolerance only", tolerance, False),
                ("affinity, domain change or tolerance (default)", tolerance, True))
    for label, tol, by_domain in variants:
        kept = [follow(c, decisions, correct, models, tol, by_domain) for c in same]
        moved = [follow(c, decisions, correct, models, tol, by_domain) for c in switching]
        at_change = switch_rate(moved, [half])
        within_one = float(np.mean([o.backends[half] != o.backends[half - 1] or (
            half + 1 < args.turns and o.backends[half + 1] != o.backends[half - 1]) for o in moved]))
        inside = switch_rate(moved, [t for t in range(1, args.turns) if t != half])
        print(f"| {label} | {switch_rate(kept, list(range(1, args.turns))):.1%} | {at_change:.1%} | "
              f"{within_one:.1%} | {inside:.1%} | {np.mean([o.correct for o in kept]):.2%} | "
              f"{np.mean([o.correct for o in moved]):.2%} |")
    # What a real domain change looks like to the policy: how often the two domains' turns alone pick different
    # models at all (the ceiling for "switch at the change").
    differ = np.mean([decisions[c[half]].model != decisions[c[half - 1]].model for c in switching])
    print(f"\nswitching chains whose two turns around the change are routed to different models when each is routed "
          f"alone: {differ:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
