"""Which prices a calibration or evaluation run costs its rows with, and whether two runs used the same ones.

A score matrix without per-row cost is costed from a prices file (USD per 1M tokens). Left without one, every
model costs the same, the knob trades nothing and AIQ measures nothing about cost, so that is said loudly.
A data set's own prices usually sit beside it, named after it (``llmrouter_prices.json`` next to
``llmrouter_dcrouter.jsonl``): ``priced_scores`` takes that file when no ``--prices`` is given, and says so.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration.data import DataError, ScoreMatrix, load_prices, load_scores

PRICES_SUFFIX = "_prices.json"
SHIPPED_PRICES = Path(__file__).parent / "prices"  # public list prices kept with the code


@dataclass(frozen=True)
class Pricing:
    """The prices a run's costs came from: ``path`` None when none were read (per-row cost, or equal cost)."""

    path: Path | None
    found_beside: bool
    digest: str | None  # prices_digest of the models' prices, None when no prices were read

    def describe(self) -> str:
        if self.path is None:
            return "none"
        return self.path.name + (" (found beside the data)" if self.found_beside else "")


def prices_digest(path: Path, models: list[str]) -> str:
    """A short hash of the models' (input, output) prices: notes, formatting and other models do not count."""
    prices = load_prices(path)
    canonical = json.dumps({m: prices[m] for m in sorted(models) if m in prices}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def covers(path: Path, models: list[str]) -> bool:
    """Whether ``path`` is a readable prices file with a price for every one of ``models``."""
    try:
        prices = load_prices(path)
    except DataError:
        return False
    return all(m in prices for m in models)


def prices_beside(data_path: Path, models: list[str]) -> Path | None:
    """The prices file named after ``data_path``'s data set in its folder (``<prefix>_prices.json`` where the
    data file's name starts with ``<prefix>``, the longest such prefix first) that prices every model."""
    stem = data_path.name.split(".")[0]
    candidates = [p for p in data_path.parent.glob(f"*{PRICES_SUFFIX}")
                  if stem.startswith(p.name.removesuffix(PRICES_SUFFIX))]
    for path in sorted(candidates, key=lambda p: (-len(p.name), p.name)):
        if covers(path, models):
            return path
    return None


def shipped_covering(models: list[str]) -> list[Path]:
    """The prices files kept in calibration/prices/ that price every one of ``models``."""
    return [p for p in sorted(SHIPPED_PRICES.glob("*.json")) if covers(p, models)]


def priced_scores(data_path: Path, prices_path: Path | None, command: str) -> tuple[ScoreMatrix, Pricing]:
    """The score matrix costed as ``--prices`` asks, or from the prices beside it when it has no per-row cost
    and no ``--prices`` is given; a run left at equal cost prints a warning on stderr naming the way out."""
    data = load_scores(data_path, prices_path)
    found = False
    if prices_path is None and data.cost_source == "equal":
        beside = prices_beside(data_path, data.models)
        if beside is not None:
            print(f"triage {command}: cost: the rows have none, so the prices beside the data are used: "
                  f"{beside.name} (pass --prices to choose others)", file=sys.stderr)
            data, prices_path, found = load_scores(data_path, beside), beside, True
        else:
            print(equal_cost_warning(command, data.models), file=sys.stderr)
    if prices_path is None or data.cost_source == "rows":  # a row's own cost wins over any prices
        return data, Pricing(None, False, None)
    return data, Pricing(prices_path, found, prices_digest(prices_path, data.models))


def equal_cost_warning(command: str, models: list[str]) -> str:
    shipped = shipped_covering(models)
    hint = (f" ({', '.join('calibration/prices/' + p.name for p in shipped)} prices these models)" if shipped
            else "")
    return (f"triage {command}: WARNING: EVERY MODEL COSTS THE SAME. The rows have no cost, no --prices was given "
            f"and no *{PRICES_SUFFIX} for this data set sits beside it, so the knob trades nothing and AIQ says "
            f"nothing about cost. Pass --prices FILE (USD per 1M tokens){hint} unless the models really cost the "
            "same.")


def pricing_mismatch(manifest: Mapping[str, Any], cost_source: str, pricing: Pricing) -> str | None:
    """How an evaluation's cost differs from the one the artifact was fitted with, or None when they agree.

    Compared by the prices' digest where the manifest records one, else (artifacts written before it was
    recorded) by cost source and prices file name."""
    data: Mapping[str, Any] = manifest.get("data") or {}
    if "cost_source" not in data:
        return None  # nothing recorded to compare with
    fit_source, fit_name = str(data["cost_source"]), data.get("prices")
    eval_name = pricing.path.name if pricing.path is not None else None
    if "prices_sha256" in data:
        same = fit_source == cost_source and data["prices_sha256"] == pricing.digest
    else:
        same = fit_source == cost_source and fit_name == eval_name
    if same:
        return None
    fitted = fit_source + (f" ({fit_name})" if fit_name else "")
    evaluated = cost_source + (f" ({eval_name})" if eval_name else "")
    return (f"the costs differ from the artifact's: it was fitted with cost = {fitted}, this evaluation uses "
            f"{evaluated}; the router's cost estimates come from the fit, so what it chooses and the cost "
            "reported for it disagree")
