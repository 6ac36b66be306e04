"""What the Grafana dashboard would show, rendered with matplotlib (no Grafana on these machines).

Runs Triage (``triage serve``) in front of fake backends priced as a real fleet file prices them (``--fleet``,
default the ``make run`` fleet: one price for RouterDC's seven 7-8B models), a real Prometheus scraping it, and real
traffic: test-split queries of routerdc_7model at several knobs, out-of-domain queries, pinned requests, one backend
killed for the middle third of the run. Feedback is *real*: for each routed query the data set says whether
the chosen model answered it correctly, and that is what ``POST /v1/feedback`` reports. Then every panel's
PromQL is evaluated over the run (``query_range``) and drawn as a grid of small multiples, each axis in the
panel's unit.

    .venv/bin/python -m bench.dashboard_snapshot --seconds 90 --out docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

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


# Grafana unit id -> how the snapshot writes it on the axis (the units the dashboard uses)
UNIT_NAMES = {"currencyUSD": "USD", "percentunit": "%", "reqps": "req/s", "s": "s", "none": ""}


class FleetPricedStack(BenchStack):
    """The bench stack with each backend priced as ``prices`` (model -> price_per_mtok) says, not the bench fleet's
    ascending made-up prices: with those the savings panels showed what invented prices would cost."""

    def __init__(self, *args: Any, prices: Mapping[str, Mapping[str, float]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = set(self.models) - set(prices)
        if missing:
            raise ValueError(f"the fleet prices no backend for {sorted(missing)}")
        self.prices = prices

    def router_config(self, config: dict[str, Any]) -> dict[str, Any]:
        for backend in config["backends"]:
            backend["price_per_mtok"] = dict(self.prices[backend["name"]])
        return config


def embedder_settings(config: Path) -> dict[str, Any]:
    """A router config's ``embedder:`` block, its model path made absolute (it is relative to the config)."""
    embedder = dict(yaml.safe_load(config.read_text()).get("embedder") or {})
    if embedder.get("onnx_path"):
        embedder["onnx_path"] = str((config.parent / embedder["onnx_path"]).resolve())
    return embedder


def fleet_prices(path: Path) -> dict[str, dict[str, float]]:
    """model name -> price_per_mtok, from a fleet file (specialists/fleets/*.yaml)."""
    backends = yaml.safe_load(path.read_text())["backends"]
    return {b["name"]: dict(b["price_per_mtok"]) for b in backends}


def panel_units(path: Path) -> dict[str, dict[str, Any]]:
    """panel title -> {unit, label, states}: what each panel's axis says (Grafana's unit, axis label, mappings)."""
    out: dict[str, dict[str, Any]] = {}
    for panel in json.loads(path.read_text())["panels"]:
        if panel["type"] == "row":
            continue
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        states = {float(value): option["text"] for mapping in defaults.get("mappings", [])
                  for value, option in mapping.get("options", {}).items()}
        out[panel["title"]] = {"type": panel["type"], "unit": defaults.get("unit", "short"),
                               "label": defaults.get("custom", {}).get("axisLabel", ""), "states": states}
    return out


def axis_label(unit: dict[str, Any]) -> str:
    """The y-axis text for a panel: its axis label and its unit, e.g. 'USD per hour (USD)', 'share of requests (%)'."""
    name = unit["unit"].removeprefix("suffix:").strip() if unit["unit"].startswith("suffix:") else \
        UNIT_NAMES.get(unit["unit"], unit["unit"])
    label = unit["label"] or ("state" if unit["states"] else "")
    return f"{label} ({name})" if name and label else label or name


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


def render(series: list[tuple[str, list[tuple[str, str, dict[str, Any]]]]], out: Path, title: str,
           units: Mapping[str, dict[str, Any]], start: float) -> None:
    """One small plot per panel, x in seconds since ``start`` (the same clock for every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    cols = 4
    rows = (len(series) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.6 * cols, 3.0 * rows), squeeze=False)
    for ax, (panel, targets) in zip(axes.flat, series, strict=False):
        for legend, _expr, answer in targets:
            for result in answer.get("data", {}).get("result", []):
                values = result.get("values") or []
                if not values:
                    continue
                xs = [float(t) - start for t, _ in values]
                # Sums of equal floats differ by ~1e-18: drawn raw, an equal-price fleet's savings would jitter
                # around zero on an axis scaled to the jitter.
                ys = [round(float(v), 9) for _, v in values]
                label = legend or ""
                for key, value in result.get("metric", {}).items():
                    # backend names without their organisation: "MetaMath-Mistral-7B", not "meta-math/..."
                    label = label.replace("{{" + key + "}}", value.rsplit("/", 1)[-1])
                label = label or ",".join(f"{k}={v}" for k, v in result.get("metric", {}).items()) or "value"
                ax.plot(xs, ys, label=label[:38], linewidth=1.2)
        ax.set_title(panel, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("seconds into the run", fontsize=7)
        unit = units.get(panel, {"type": "timeseries", "unit": "short", "label": "", "states": {}})
        ax.set_ylabel(axis_label(unit), fontsize=7)
        if unit["unit"] == "percentunit":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        elif unit["unit"] == "currencyUSD":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"${v:,.4g}"))
        elif unit["states"]:
            ax.set_yticks(sorted(unit["states"]), [unit["states"][v] for v in sorted(unit["states"])])
            ax.set_ylim(min(unit["states"]) - 0.2, max(unit["states"]) + 0.2)
        if unit["type"] == "stat" and ax.lines and not unit["states"]:  # Grafana shows a stat's latest value
            latest = float(ax.lines[-1].get_ydata()[-1])
            text = f"{latest:.0%}" if unit["unit"] == "percentunit" else f"${latest:,.4f}" if \
                unit["unit"] == "currencyUSD" else f"{latest:.4g}"
            ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=22, alpha=0.35, transform=ax.transAxes)
        handles, _ = ax.get_legend_handles_labels()
        if len(handles) > LEGEND_MAX:  # e.g. one line per cluster: a legend that tall would squeeze every panel
            ax.text(0.99, 0.97, f"{len(handles)} series", ha="right", va="top", fontsize=7, transform=ax.transAxes)
        elif handles:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the data
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
    parser.add_argument("--fleet", type=Path, default=ROOT / "specialists" / "fleets" / "local-cpu.yaml",
                        help="the fleet file whose prices the backends get")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "local.yaml",
                        help="the router config whose embedder settings Triage serves with (make run's)")
    args = parser.parse_args()
    rows = test_rows(args.data, 5000, seed=0)
    with tempfile.TemporaryDirectory() as tmp, run_prometheus(Path(tmp) / "prometheus", scrape_s=1) as prom, \
            FleetPricedStack(args.artifact, Path(tmp) / "stack", prices=fleet_prices(args.fleet),
                             health={"probe_interval_s": 1.0}, embedder=embedder_settings(args.config),
                             fake_options={"latency_ms": 20, "tokens_per_s": 400}) as stack:
        prom.scrape("triage", stack.triage.url.removeprefix("http://"))
        time.sleep(2)
        start = time.time()
        counts = asyncio.run(drive(stack.triage.url, rows, args.seconds, stack, args.concurrency))
        time.sleep(3)
        end = time.time()
        by_panel: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        units = panel_units(DASHBOARD)  # read with the queries: the same version of the file
        for panel, legend, expr in dashboard_queries(DASHBOARD):
            promql = grafana_to_promql(expr, rate_interval="15s", range_=f"{int(end - start)}s")
            by_panel.setdefault(panel, []).append((legend, expr, prom.query_range(promql, start, end, 2)))
        spend = {name: prom.query(f"sum({metric})", at=end)["data"]["result"] for name, metric in (
            ("spend", "triage_cost_usd_total"), ("counterfactual", "triage_counterfactual_cost_usd_total"))}
    print(f"traffic over {args.seconds:.0f} s: {counts}")
    print("USD at the end: " + ", ".join(f"{name} {float(r[0]['value'][1]) if r else 0.0:.3g}"
                                         for name, r in spend.items()))
    render(list(by_panel.items()), args.out,
           f"Triage dashboard queries over a {args.seconds:.0f} s run: {counts['routed']} routed, {counts['ood']} "
           f"out-of-domain, {counts['pinned']} pinned; backend {stack.models[1]} killed for the middle third; "
           f"prices from {args.fleet.name}; latencies from a 2-core VM shared with other jobs", units, start)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
