"""Bursts: n streams that reach one backend through Triage at the same moment, on warm connections.

    .venv/bin/python -m bench.burst [--sizes 1,8,32,64] [--repeats 5] [--pools 1,8]

One fake backend (bench/harness/fake_openai.py: first token after 20 ms at 50 tokens/s, 16 tokens) and one
``triage serve`` per ``connections.pools`` value, all running at once; every burst is sent to each target in
turn (``direct`` is the fake itself), so they share the machine's noise. Each burst first opens its
connections (an unmeasured burst of the same size), then n pinned streaming requests start together.
Printed per target and size: the first token's min / p50 / max over all requests of all repeats, in ms.
With one large pool per backend, httpcore re-examines its connections on every request start and end, so
the last stream of a burst waits for all the others' bookkeeping (router/connections.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench.harness.fleet import FakeProcess, TriageProcess, fleet_config
from bench.harness.outcomes import percentile
from bench.harness.rawhttp import Pool
from bench.harness.stack import artifact_models, ensure_artifact
from bench.harness.timing import timed_raw


def body(model: str) -> dict[str, object]:
    return {"model": model, "max_tokens": 16, "stream": True,
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}


async def bursts(targets: dict[str, tuple[str, str]], sizes: list[int], repeats: int) -> list[str]:
    pool = Pool()
    firsts: dict[tuple[str, int], list[float]] = {}
    try:
        for size in sizes:
            for _ in range(repeats):
                for name, (url, model) in targets.items():
                    for measured in (False, True):  # the first burst opens the connections
                        timed = await asyncio.gather(*(timed_raw(pool, url + "/chat/completions", body(model), {})
                                                       for _ in range(size)))
                        if measured:
                            firsts.setdefault((name, size), []).extend(
                                t.first_token * 1000 for t in timed if t.first_token is not None)
                    await asyncio.sleep(0.3)
    finally:
        pool.close()
    header = f"{'target':<22}{'burst':>6}{'n':>6}{'min ms':>9}{'p50 ms':>9}{'max ms':>9}"
    rows = []
    for (name, size), values in sorted(firsts.items(), key=lambda item: (item[0][1], item[0][0])):
        values.sort()
        rows.append(f"{name:<22}{size:>6}{len(values):>6}{values[0]:>9.1f}{percentile(values, 0.5):>9.1f}"
                    f"{values[-1]:>9.1f}")
    return [header, *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,8,32,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pools", default="1,8", help="connections.pools of each Triage, comma-separated")
    parser.add_argument("--artifact", default="var/bench/artifact")
    parser.add_argument("--workdir", default="var/bench/burst")
    args = parser.parse_args(argv)
    artifact = ensure_artifact(Path(args.artifact))
    models, generalist = artifact_models(artifact)
    fake = FakeProcess("fast", {"latency_ms": 0, "tokens_per_s": 50, "completion_tokens": 16}).start()
    routers: list[TriageProcess] = []
    try:
        targets = {"direct": (fake.base_url, fake.served_name)}
        for pools in (int(p) for p in args.pools.split(",")):
            config = fleet_config(artifact.resolve(), models, generalist, [fake.base_url] * len(models),
                                  [fake.served_name] * len(models), health={"probe_interval_s": 0})
            config["connections"] = {"pools": pools}
            routers.append(TriageProcess(config, Path(args.workdir) / f"pools-{pools}").start())
            targets[f"triage, {pools} pool{'s' if pools > 1 else ''}"] = (routers[-1].url + "/v1", models[0])
        lines = asyncio.run(bursts(targets, [int(s) for s in args.sizes.split(",")], args.repeats))
    finally:
        for router in routers:
            router.stop()
        fake.kill()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
