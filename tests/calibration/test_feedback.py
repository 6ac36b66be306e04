"""Folding feedback from the decision log into the next artifact (triage calibrate --from-log)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.data import DataError
from calibration.feedback import from_log, read_log
from router.artifact import Artifact
from router.decisionlog import DecisionLog
from router.settings import DecisionLogSettings


def cell(artifact: Artifact, cluster: int, model: str) -> dict[str, float]:
    table = json.loads((artifact.path / "table.json").read_text())
    return dict(table["clusters"][cluster]["models"][model])


def write_log(path: Path, records: list[tuple[int, str, float | None]], max_bytes: int = 10_000_000) -> None:
    log = DecisionLog(DecisionLogSettings(path=str(path), max_bytes=max_bytes, backups=5))
    for i, (cluster, backend, score) in enumerate(records):
        log.decision({"request_id": f"r{i}", "backend": backend, "cluster": cluster, "outcome": "ok"})
        if score is not None:
            log.feedback(f"r{i}", score, 0.0)
    log.close()


def test_bad_feedback_lowers_an_estimate_and_can_create_a_cliff(artifact: Artifact, tmp_path: Path) -> None:
    specialist = next(m for j, m in enumerate(artifact.models) if m != artifact.generalist and not artifact.cliff[0, j])
    before = cell(artifact, 0, specialist)
    log = tmp_path / "decisions.jsonl"
    write_log(log, [(0, specialist, 0.0)] * 400 + [(0, artifact.generalist, 1.0)] * 400 + [(-1, specialist, 1.0)] * 5)
    summary = from_log(log, artifact.path, tmp_path / "next")
    assert "folded 800 observed outcomes into 2" in summary
    folded = Artifact.load(tmp_path / "next")
    after = cell(folded, 0, specialist)
    assert after["n"] == before["n"] + 400 and after["feedback_n"] == 400
    assert after["estimate"] < before["estimate"] - 0.1
    assert folded.cliff[0, folded.models.index(specialist)]
    assert folded.manifest["feedback"][0]["joined"] == 800
    assert cell(folded, 1, specialist) == cell(artifact, 1, specialist)  # other clusters untouched


def test_rotated_logs_are_read_and_pinned_or_unanswered_requests_ignored(artifact: Artifact, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    model = artifact.models[0]
    write_log(log, [(2, model, 1.0)] * 300 + [(2, model, None)] * 10 + [(-1, model, 1.0)] * 10, max_bytes=16_384)
    assert list(tmp_path.glob("decisions.jsonl.*")), "the log should have rotated"
    observed = read_log(log, artifact.models)
    assert observed.joined == 300 and observed.n[(2, model)] == 300
    assert observed.correct[(2, model)] == pytest.approx(300.0)


def test_a_log_without_feedback_is_refused_and_nothing_is_written(artifact: Artifact, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    write_log(log, [(0, artifact.models[0], None)] * 5)
    with pytest.raises(DataError, match="no feedback joins"):
        from_log(log, artifact.path, tmp_path / "next")
    assert not (tmp_path / "next").exists()


def test_a_corrupt_line_names_the_file_and_line(artifact: Artifact, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    log.write_text('{"type": "decision", "request_id": "a", "backend": "x", "cluster": 0}\nnot json\n')
    with pytest.raises(DataError, match="decisions.jsonl line 2"):
        read_log(log, artifact.models)


def test_the_folded_artifact_routes(artifact: Artifact, tmp_path: Path) -> None:
    from router.policy import Policy

    log = tmp_path / "decisions.jsonl"
    write_log(log, [(0, artifact.models[0], 1.0)] * 20)
    from_log(log, artifact.path, tmp_path / "next")
    folded = Artifact.load(tmp_path / "next")
    vectors = np.load(artifact.path / "centroids.npy")[:2]
    assert len(Policy(folded).decide(vectors, 1.0)) == 2


def test_the_command_line(artifact: Artifact, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calibration.cli import main

    log = tmp_path / "decisions.jsonl"
    write_log(log, [(1, artifact.models[0], 1.0)] * 30)
    assert main(["calibrate", "--from-log", str(log), "--artifact", str(artifact.path), "--out",
                 str(tmp_path / "next")]) == 0
    assert "folded 30 observed outcomes" in capsys.readouterr().out
    assert Artifact.load(tmp_path / "next").manifest["feedback"][0]["joined"] == 30
    assert main(["calibrate", "--from-log", str(log), "--out", str(tmp_path / "other")]) == 2
    assert "--from-log needs --artifact" in capsys.readouterr().err


def test_folding_uses_the_cliff_margin_recorded_in_the_manifest(artifact: Artifact, tmp_path: Path) -> None:
    import shutil

    specialist = next(m for j, m in enumerate(artifact.models) if m != artifact.generalist and not artifact.cliff[0, j])
    log = tmp_path / "decisions.jsonl"
    # Specialist 50 % right, generalist 100 %, in cluster 0: about 0.45 apart after shrinkage.
    write_log(log, [(0, specialist, float(i % 2)) for i in range(400)] + [(0, artifact.generalist, 1.0)] * 400)
    from_log(log, artifact.path, tmp_path / "strict")  # the fixture's manifest has no margin: the original rule
    strict = Artifact.load(tmp_path / "strict")
    assert strict.cliff[0, strict.models.index(specialist)]
    wide = tmp_path / "wide"
    shutil.copytree(artifact.path, wide)
    manifest = json.loads((wide / "manifest.json").read_text())
    manifest.setdefault("shrinkage", {})["cliff_margin"] = 0.6
    (wide / "manifest.json").write_text(json.dumps(manifest))
    from_log(log, wide, tmp_path / "wide_next")
    folded = Artifact.load(tmp_path / "wide_next")
    assert not folded.cliff[0, folded.models.index(specialist)]  # within the margin: not a cliff
