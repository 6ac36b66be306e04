"""The shared routing datasets the quality benches read: where each score matrix and its prices are.

The data sits in ../shared/data beside the checkout (as ``make run`` and ``make test`` expect).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness.stack import DATA

ROOT = Path(DATA).parent
PRICES_ROUTELLM = str(Path(__file__).resolve().parents[2] / "calibration" / "prices" / "routellm_public.json")
DATASETS: dict[str, dict[str, Any]] = {
    "routerdc": {"data": "routerdc_7model.jsonl"},  # its generalist: ROUTERDC_GENERALIST
    "llmrouter": {"data": "llmrouter_dcrouter.jsonl", "prices": str(ROOT / "llmrouter_prices.json")},
    "routeprofile": {"data": "routeprofile_test.jsonl"},
    "routellm": {"data": "routellm_mmlu_gsm8k.jsonl", "prices": PRICES_ROUTELLM},
}

# RouterDC's generalist as ``triage calibrate`` chooses it on train rows (docs/results.md).
ROUTERDC_GENERALIST = "cognitivecomputations/dolphin-2.9-llama3-8b"


def correct(row: dict[str, Any], model: str) -> float:
    """How right ``model`` was on a routing row, by ``triage eval``'s rule (calibration.data.correctness: a
    multiple-choice score > 0 is a right answer, 1; other fractional scores are kept)."""
    from calibration.data import correctness

    return correctness(str(row.get("task", row.get("domain", ""))), float(row["scores"][model]))
