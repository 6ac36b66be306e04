"""Which prices calibrate and eval cost rows with: ``--prices``, the data set's prices beside it, or a loud
warning that every model costs the same; and eval's warning when its prices are not the artifact's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibration.cli import main
from calibration.pricing import Pricing, priced_scores, prices_beside, pricing_mismatch
from router.artifact import Artifact
from tests.calibration.conftest import MODELS, FakeEncoder, synthetic_rows, write_jsonl

PRICES = {"general": (3.0, 9.0), "mathy": (0.5, 1.0), "cheap": (0.1, 0.2)}


def write_prices(path: Path, prices: dict[str, tuple[float, float]]) -> Path:
    path.write_text(json.dumps({m: {"input_price": i, "output_price": o, "note": "x"} for m, (i, o) in prices.items()}))
    return path


def test_the_data_sets_own_prices_are_found_beside_it(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "bench_scores.jsonl", synthetic_rows(n_per_domain=3, with_cost=False))
    assert prices_beside(data, MODELS) is None
    write_prices(tmp_path / "other_prices.json", PRICES)  # named for another data set
    write_prices(tmp_path / "bench_prices.json", {"general": (1.0, 1.0)})  # does not price every model
    assert prices_beside(data, MODELS) is None
    ours = write_prices(tmp_path / "bench_scores_prices.json", PRICES)
    assert prices_beside(data, MODELS) == ours


def test_priced_scores_uses_prices_beside_or_warns_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "bench.jsonl", synthetic_rows(n_per_domain=3, with_cost=False))
    matrix, pricing = priced_scores(data, None, "calibrate")
    assert matrix.cost_source == "equal" and pricing == Pricing(None, False, None)
    assert "WARNING: EVERY MODEL COSTS THE SAME" in capsys.readouterr().err
    write_prices(tmp_path / "bench_prices.json", PRICES)
    matrix, pricing = priced_scores(data, None, "calibrate")
    assert matrix.cost_source == "prices x estimated tokens" and matrix.has_cost
    assert pricing.path == tmp_path / "bench_prices.json" and pricing.found_beside and pricing.digest
    err = capsys.readouterr().err
    assert "bench_prices.json" in err and "WARNING" not in err
    # Rows that carry their own cost need no prices, and none are reported as used.
    costed = write_jsonl(tmp_path / "bench_costed.jsonl", synthetic_rows(n_per_domain=3))
    matrix, pricing = priced_scores(costed, None, "calibrate")
    assert matrix.cost_source == "rows" and pricing.path is None and capsys.readouterr().err == ""


def test_mismatch_by_digest_or_for_older_artifacts_by_name(tmp_path: Path) -> None:
    a = write_prices(tmp_path / "a_prices.json", PRICES)
    same = Pricing(a, False, "d1")
    new = {"data": {"cost_source": "prices x estimated tokens", "prices": "a_prices.json", "prices_sha256": "d1"}}
    assert pricing_mismatch(new, "prices x estimated tokens", same) is None
    assert pricing_mismatch(new, "prices x estimated tokens", Pricing(a, False, "d2")) is not None
    message = pricing_mismatch(new, "equal", Pricing(None, False, None))
    assert message is not None and "fitted with cost = prices x estimated tokens (a_prices.json)" in message
    old = {"data": {"cost_source": "prices x estimated tokens", "prices": "a_prices.json"}}
    assert pricing_mismatch(old, "prices x estimated tokens", Pricing(a, False, "d9")) is None
    assert pricing_mismatch({}, "equal", Pricing(None, False, None)) is None


def test_calibrate_records_the_prices_and_eval_warns_when_its_own_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder = FakeEncoder()
    data = write_jsonl(tmp_path / "bench.jsonl", synthetic_rows(n_per_domain=60, with_cost=False))
    write_prices(tmp_path / "bench_prices.json", PRICES)
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    art = tmp_path / "art"
    assert main(["calibrate", "--out", str(art), "--generalist", "general", *common], encoder=encoder) == 0
    recorded = Artifact.load(art).manifest["data"]
    assert recorded["prices"] == "bench_prices.json" and recorded["cost_source"] == "prices x estimated tokens"
    assert recorded["prices_sha256"]
    assert "cost: prices x estimated tokens (bench_prices.json, found beside the data)" in (
        art / "report.md").read_text()
    capsys.readouterr()
    assert main(["eval", "--artifact", str(art), "--out", str(tmp_path / "r1"), *common], encoder=encoder) == 0
    assert "differ" not in capsys.readouterr().err  # the same prices, found the same way
    report = (tmp_path / "r1" / "report.md").read_text()
    assert "| mean cost (USD per query) |" in report and "Cheapest knob matching" in report
    dearer = write_prices(tmp_path / "dearer.json", {m: (10 * i, 10 * o) for m, (i, o) in PRICES.items()})
    argv = ["eval", "--artifact", str(art), "--out", str(tmp_path / "r2"), "--prices", str(dearer), *common]
    assert main(argv, encoder=encoder) == 0
    assert "WARNING: the costs differ from the artifact's" in capsys.readouterr().err
    assert "**Warning**: the costs differ" in (tmp_path / "r2" / "report.md").read_text()
    info = json.loads((tmp_path / "r2" / "report.json").read_text())["info"]
    assert "dearer.json" in info["cost_mismatch"]


def test_equal_cost_is_said_and_no_cheapest_knob_is_claimed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder = FakeEncoder()
    data = write_jsonl(tmp_path / "bench.jsonl", synthetic_rows(n_per_domain=60, with_cost=False))
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    art = tmp_path / "art"
    assert main(["calibrate", "--out", str(art), "--generalist", "general", *common], encoder=encoder) == 0
    assert "EVERY MODEL COSTS THE SAME" in capsys.readouterr().err
    assert "cost: **equal for every model**" in (art / "report.md").read_text()
    assert main(["eval", "--artifact", str(art), "--out", str(tmp_path / "r"), *common], encoder=encoder) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Every model costs the same here" in report and "Cheapest knob" not in report
    assert "| mean cost (all equal) |" in report
