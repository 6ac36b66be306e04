"""The synthetic artifact the benches (bench/scaling.py) and this suite's fallback use must stay a valid,
routable artifact as the fit's fields change: it is built from calibration's own FitResult and writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.synthetic import EMBEDDER_DIM, EMBEDDER_NAME, write_synthetic_artifact
from router.artifact import Artifact
from router.policy import Policy


def test_the_synthetic_artifact_loads_and_routes(tmp_path: Path) -> None:
    models = ["general", "spec-a", "spec-b"]
    written = write_synthetic_artifact(tmp_path / "art", k=8, models=models, n_reference=500)
    artifact = Artifact.load(tmp_path / "art", embedder_name=EMBEDDER_NAME, embedder_dim=EMBEDDER_DIM)
    assert artifact.models == written.models == models and artifact.k == 8 and artifact.generalist == "general"
    # Queries at the references themselves are in domain and get one of the fleet's models.
    decisions = Policy(artifact).decide(artifact.reference[:20], 1.0)
    assert len(decisions) == 20 and {d.model for d in decisions} <= set(models)
    assert not any(d.is_ood for d in decisions)
    assert np.isfinite([d.ood_score for d in decisions]).all()


def test_bench_artifacts_in_an_older_format_or_for_another_generalist_are_rebuilt(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """bench/harness/stack.py reuses its calibrated artifact, unless an older Triage wrote it (that one would load but
    route without what the newer format adds, the OOD margin since format 4) or it names another generalist
    than the bench asks for (the router would refuse the mismatch)."""
    import calibration.cli
    from bench.harness.stack import GENERALIST, ensure_artifact
    from router.artifact import FORMAT_VERSION

    calls: list[list[str]] = []

    def calibrate(argv: list[str]) -> int:
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        generalist = argv[argv.index("--generalist") + 1]
        (out / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "generalist": generalist}))
        return 0

    monkeypatch.setattr(calibration.cli, "main", calibrate)
    current, old, other = tmp_path / "current", tmp_path / "old", tmp_path / "other"
    for path, version, generalist in ((current, FORMAT_VERSION, GENERALIST), (old, FORMAT_VERSION - 1, GENERALIST),
                                      (other, FORMAT_VERSION, "some/other-model")):
        path.mkdir()
        (path / "manifest.json").write_text(json.dumps({"format_version": version, "generalist": generalist}))
        (path / "stale.npy").write_text("")
    assert ensure_artifact(current, data="d.jsonl") == current and not calls
    assert ensure_artifact(old, data="d.jsonl") == old and len(calls) == 1
    assert json.loads((old / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    assert not (old / "stale.npy").exists()
    assert ensure_artifact(other, data="d.jsonl") == other and len(calls) == 2
    assert json.loads((other / "manifest.json").read_text())["generalist"] == GENERALIST
    assert not (other / "stale.npy").exists()
    # Asked for the generalist the artifact names, the bench keeps it.
    assert ensure_artifact(other, data="d.jsonl", generalist=GENERALIST) == other and len(calls) == 2
