"""What the Grafana dashboard would show, rendered with matplotlib (no Grafana on these machines).

Runs Triage (``triage serve``) in front of fake backends, a real Prometheus scraping it, and real traffic:
test-split queries of routerdc_7model at several knobs, out-of-domain queries, pinned requests, one backend
killed for the middle third of the run. Feedback is *real*: for each routed query the data set says whether
the chosen model answered it correctly, and that is what ``POST /v1/feedback`` reports. Then every panel's
PromQL is evaluated over the run (``query_range``) and drawn as a grid of small multiples.

    .venv/bin/python -m bench.dashboard_snapshot --seconds 90 --out docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness.prometheus import dashboard_queries, grafana_to_promql, run_prometheus
from bench.harness.stack import BenchStack

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "triage.json"
LEGEND_MAX = 16  # more series than this in a panel: a count instead of a legend
OOD = [
    "Plan a three-day honeymoon itinerary in Lisbon with restaurants and a sunset boat tour.",
    "Write a limerick about a cat who learns to play the bagpipes.",
    "What should I pack for a week of winter camping in Lapland?",
    "Draft a polite email declining a wedding invitation.",
]


def test_rows(data: Path, limit: int, seed: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in data.read_text().split("\n") if line.strip()]
    rows = [r for r in rows if r["split"] == "test"]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


async def drive(url: str, rows: list[dict[str, Any]], seconds: float, stack: BenchStack, concurrency: int) -> dict[
        str, int]:
    counts = {"routed": 0, "ood": 0, "pinned": 0, "feedback": 0, "errors": 0}
    started = time.monotonic()
    victim = stack.models[1]
    killed = restarted = False
    rng = random.Random(1)
    queue = iter(rows)

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal killed, restarted
        while (elapsed := time.monotonic() - started) < seconds:
            if not killed and elapsed > seconds / 3:
                killed = True
                stack.fakes[victim].kill()
            if killed and not restarted and elapsed > 2 * seconds / 3:
                restarted = True
                stack.fakes[victim].restart()
            roll = rng.random()
            if roll < 0.08:
                body: dict[str, Any] = {"model": "triage", "messages": [{"role": "user", "content": rng.choice(OOD)}]}
                kind, row = "ood", None
            elif roll < 0.14:
                body = {"model": rng.choice(stack.models), "messages": [{"role": "user", "content": "hi"}]}
                kind, row = "pinned", None
            else:
                row = next(queue, None) or rows[rng.randrange(len(rows))]
                knob = rng.choice(["triage:quality", "triage:balanced", "triage:cost", "triage"])
                body = {"model": knob, "messages": [{"role": "user", "content": row["query"]}], "max_tokens": 16}
                kind = "routed"
            try:
                response = await client.post(url + "/v1/chat/completions", json=body, timeout=30)
            except httpx.HTTPError:
                counts["errors"] += 1
                continue
            counts[kind] += 1
            if response.status_code != 200:
                counts["errors"] += 1
            elif row is not None:
                backend = response.headers["x-triage-backend"]
                score = 1.0 if row["scores"].get(backend, 0) > 0 else 0.0  # the data set's real outcome
                await client.post(url + "/v1/feedback",
                                  json={"request_id": response.headers["x-request-id"], "score": score})
                counts["feedback"] += 1

    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
    return counts


def render(series: list[tuple[str, list[tuple[str, str, dict[str, Any]]]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(series) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (panel, targets) in zip(axes.flat, series, strict=False):
        t0 = None
        for legend, _expr, answer in targets:
            for result in answer.get("data", {}).get("result", []):
                values = result.get("values") or []
                if not values:
                    continue
                t0 = t0 if t0 is not None else float(values[0][0])
                xs = [float(t) - t0 for t, _ in values]
                ys = [float(v) for _, v in values]
                label = legend or ""
                for key, value in result.get("metric", {}).items():
                    label = label.replace("{{" + key + "}}", value)
                label = label or ",".join(f"{k}={v}" for k, v in result.get("metric", {}).items()) or "value"
                ax.plot(xs, ys, label=label[:38], linewidth=1.2)
        ax.set_title(panel, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("seconds into the run", fontsize=7)
        handles, _ = ax.get_legend_handles_labels()
        if len(handles) > LEGEND_MAX:  # e.g. one line per cluster: a legend that tall would squeeze every panel
            ax.text(0.99, 0.97, f"{len(handles)} series", ha="right", va="top", fontsize=7, transform=ax.transAxes)
        elif handles:
            ax.legend(fontsize=6, loc="best")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routing" /
                        "routerdc_7model.jsonl")
    parser.add_argument("--artifact", type=Path, default=ROOT / "var" / "bench" / "artifact")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "reports" / "dashboard.png")
    args = parser.parse_args()
    rows = test_rows(args.data, 5000, seed=0)
    with tempfile.TemporaryDirectory() as tmp, run_prometheus(Path(tmp) / "prometheus", scrape_s=1) as prom, \
            BenchStack(args.artifact, Path(tmp) / "stack", health={"probe_interval_s": 1.0}, fake_options={
                "latency_ms": 20, "tokens_per_s": 400}) as stack:
        prom.scrape("triage", stack.triage.url.removeprefix("http://"))
        time.sleep(2)
        start = time.time()
        counts = asyncio.run(drive(stack.triage.url, rows, args.seconds, stack, args.concurrency))
        time.sleep(3)
        end = time.time()
        by_panel: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        for panel, legend, expr in dashboard_queries(DASHBOARD):
            promql = grafana_to_promql(expr, rate_interval="15s", range_=f"{int(end - start)}s")
            by_panel.setdefault(panel, []).append((legend, expr, prom.query_range(promql, start, end, 2)))
    print(f"traffic over {args.seconds:.0f} s: {counts}")
    render(list(by_panel.items()), args.out,
           f"Triage dashboard queries over a {args.seconds:.0f} s run: {counts['routed']} routed, {counts['ood']} "
           f"out-of-domain, {counts['pinned']} pinned; backend {stack.models[1]} killed for the middle third")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
