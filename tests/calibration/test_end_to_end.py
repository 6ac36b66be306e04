"""One real run: calibrate on a few hundred RouterDC rows with the real embedder, then eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibration.cli import main
from router.artifact import Artifact
from router.embedding.torch import Embedder

ROUTERDC = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing" / "routerdc_7model.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not ROUTERDC.exists(), reason="shared RouterDC data not present")
def test_calibrate_and_eval_on_routerdc(tmp_path: Path, embedder: Embedder) -> None:
    lines = ROUTERDC.read_text().splitlines()
    train = [ln for ln in lines if '"split": "train"' in ln][::25]  # ~300 rows over every train domain
    test = [ln for ln in lines if '"split": "test"' in ln][::60]  # ~170 rows
    data = tmp_path / "routerdc_small.jsonl"
    data.write_text("\n".join(train + test) + "\n")
    art, rep, cache = tmp_path / "art", tmp_path / "rep", tmp_path / "cache"
    generalist = "cognitivecomputations/dolphin-2.9-llama3-8b"
    argv = [
        "calibrate",
        "--data",
        str(data),
        "--out",
        str(art),
        "--generalist",
        generalist,
        "--cache-dir",
        str(cache),
        "--no-progress",
    ]
    assert main(argv, encoder=embedder) == 0
    artifact = Artifact.load(art, embedder_name=embedder.name, embedder_dim=embedder.dim)
    assert artifact.generalist == generalist and len(artifact.models) == 7
    assert artifact.manifest["data"]["train_rows"] == len(train)
    # RouterDC names its domains: the domain detector flags OOD, its scores in units of its thresholds
    assert artifact.ood_detector is not None and artifact.ood_threshold == 1.0
    assert artifact.ood_detector.mahalanobis_threshold > artifact.ood_detector.mahalanobis_center > 0
    assert (
        main(
            [
                "eval",
                "--artifact",
                str(art),
                "--data",
                str(data),
                "--out",
                str(rep),
                "--cache-dir",
                str(cache),
                "--no-progress",
            ],
            encoder=embedder,
        )
        == 0
    )
    report = json.loads((rep / "report.json").read_text())
    assert report["n"] == len(test) and not report["has_cost"]
    singles = [v["accuracy"] for v in report["single"].values()]
    knob1 = report["triage"][-1]["accuracy"]
    # On ~200 test rows a 7-model router should be at least about as good as the best single model.
    assert knob1 >= max(singles) - 0.03
    assert knob1 <= report["oracle"]["accuracy"]
    assert min(singles) <= report["random"]["accuracy"] <= max(singles)
    for name in ("report.md", "frontier.png", "cluster_accuracy.png", "cliff.png"):
        assert (rep / name).stat().st_size > 1000
    assert (art / "report.md").read_text().startswith("# Triage calibration report")
