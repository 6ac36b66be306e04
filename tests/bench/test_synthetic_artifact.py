"""The synthetic artifact the benches (bench/scaling.py) and this suite's fallback use must stay a valid,
routable artifact as the fit's fields change: it is built from calibration's own FitResult and writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.synthetic import EMBEDDER_DIM, EMBEDDER_NAME, write_synthetic_artifact
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
