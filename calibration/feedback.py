"""Fold observed outcomes from the decision log into the next artifact.

    decision logs (router/decisionlog.py, rotated files included; several files or a directory of them, one
    per replica: feedback may be logged by another replica than the one that served the request)
      -> join feedback to decisions by request id (the last feedback for a request wins)
      -> per (cluster, backend): n observed, sum of scores
      -> add them to each cell's Beta posterior (the same one calibration fitted), recompute the band and cliffs
      -> a new artifact, written beside and validated exactly like a calibrated one

Only routed decisions (cluster >= 0) count: a pinned request has no cluster. Models the artifact does not
know are reported and skipped. The kNN part of the estimate (``reference_scores.npy``) is left as it was:
feedback carries no query text by design (the log never stores prompts), so it cannot add reference points.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scipy.stats import norm

from calibration.bundle import publish
from calibration.data import DataError
from router.artifact import Artifact


@dataclass
class Observed:
    n: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    correct: dict[tuple[int, str], float] = field(default_factory=lambda: defaultdict(float))
    decisions: int = 0
    feedback: int = 0
    joined: int = 0
    skipped_models: set[str] = field(default_factory=set)


Logs = Path | Sequence[Path]


def log_files(logs: Logs) -> list[Path]:
    """Every file of the given logs, each log's rotated predecessors (``decisions.jsonl.1`` ...) first. A
    directory stands for every ``*.jsonl`` log in it."""
    paths = [logs] if isinstance(logs, Path) else list(logs)
    files: list[Path] = []
    for path in paths:
        bases = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        if path.is_dir() and not bases:
            raise DataError(f"no decision logs (*.jsonl) in {path.name}")
        for base in bases:
            files += _one_log(base)
    return list(dict.fromkeys(files))


def _one_log(path: Path) -> list[Path]:
    rotated = sorted(
        path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0
    )
    files = [p for p in rotated if p.suffix[1:].isdigit()] + ([path] if path.exists() else [])
    if not files:
        raise DataError(f"decision log not found: {path.name}")
    return files


def read_log(path: Logs, models: list[str]) -> Observed:
    decisions: dict[str, tuple[int, str]] = {}
    scores: dict[str, float] = {}
    observed = Observed()
    for file in log_files(path):
        for number, line in enumerate(file.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                kind = record["type"]
                request_id = str(record["request_id"])
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{file.name} line {number}: not a decision-log record") from None
            if kind == "decision":
                observed.decisions += 1
                cluster = int(record.get("cluster", -1))
                if cluster >= 0 and record.get("outcome", "ok") == "ok":
                    decisions[request_id] = (cluster, str(record["backend"]))
            elif kind == "feedback":
                score = float(record["score"])
                if not 0.0 <= score <= 1.0 or math.isnan(score):
                    raise DataError(f"{file.name} line {number}: feedback score {score} is outside [0, 1]")
                observed.feedback += 1
                scores[request_id] = score
    known = set(models)
    for request_id, score in scores.items():
        if request_id not in decisions:
            continue
        cluster, backend = decisions[request_id]
        if backend not in known:
            observed.skipped_models.add(backend)
            continue
        observed.joined += 1
        observed.n[(cluster, backend)] += 1
        observed.correct[(cluster, backend)] += score
    return observed


def fold(artifact: Artifact, observed: Observed) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The artifact's table and cliffs with the observations added to each cell's Beta posterior."""
    if artifact.path is None:
        raise ValueError("feedback is folded into an artifact read from a directory")
    table = json.loads((artifact.path / "table.json").read_text())
    shrinkage = artifact.manifest.get("shrinkage", {})
    prior = float(shrinkage.get("prior_strength", 10.0))
    confidence = float(shrinkage.get("cliff_confidence", 0.9))
    margin = float(shrinkage.get("cliff_margin", 0.0))  # the rule calibration used (absent: the original, 0)
    z = norm.ppf(0.95)
    generalist = artifact.generalist
    cliffs: dict[str, list[int]] = {m: [] for m in artifact.models}
    for cluster in table["clusters"]:
        cid = int(cluster["id"])
        posterior: dict[str, tuple[float, float]] = {}
        changed: set[str] = set()
        for model, cell in cluster["models"].items():
            # The fitted cell is Beta(alpha, beta) with alpha + beta = prior + n and mean = estimate.
            total = prior + cell["n"]
            alpha, beta = cell["estimate"] * total, (1 - cell["estimate"]) * total
            extra_n, extra_correct = observed.n.get((cid, model), 0), observed.correct.get((cid, model), 0.0)
            if extra_n:
                changed.add(model)
                alpha, beta = alpha + extra_correct, beta + extra_n - extra_correct
                cell["accuracy"] = round((cell["accuracy"] * cell["n"] + extra_correct) / (cell["n"] + extra_n), 6)
                cell["n"] = int(cell["n"] + extra_n)
                cell["feedback_n"] = int(cell.get("feedback_n", 0) + extra_n)
            posterior[model] = (alpha, beta)
        var = {m: a * b / ((a + b) ** 2 * (a + b + 1)) for m, (a, b) in posterior.items()}
        mean = {m: a / (a + b) for m, (a, b) in posterior.items()}
        # Cells without new observations keep their fitted numbers; a cliff is re-judged where either side moved.
        rejudge = set(cluster["models"]) if generalist in changed else changed
        for model, cell in cluster["models"].items():
            if model in changed:
                sd = math.sqrt(var[model])
                cell["estimate"] = round(mean[model], 6)
                cell["lower"] = round(max(0.0, mean[model] - z * sd), 6)
                cell["upper"] = round(min(1.0, mean[model] + z * sd), 6)
            if model in rejudge:
                p_below = norm.cdf((mean[generalist] - mean[model] - margin) / math.sqrt(var[model] + var[generalist]))
                cell["cliff"] = bool(model != generalist and p_below > confidence)
            if cell["cliff"]:
                cliffs[model].append(cid)
    return table, cliffs


def write_folded(artifact: Artifact, observed: Observed, out: Path, log: Logs) -> Artifact:
    """Copy the artifact, replace table and cliffs, record the feedback in the manifest, validate, rename."""
    if artifact.path is None:
        raise ValueError("feedback is folded into an artifact read from a directory")
    table, cliffs = fold(artifact, observed)
    source = artifact.path

    def fill(tmp: Path) -> Artifact:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        (tmp / "table.json").write_text(json.dumps(table, indent=1))
        (tmp / "cliffs.json").write_text(json.dumps(cliffs, indent=1))
        manifest = dict(artifact.manifest)
        manifest["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest["feedback"] = [
            *manifest.get("feedback", []),
            {
                "log": _names(log),
                "decisions": observed.decisions,
                "feedback": observed.feedback,
                "joined": observed.joined,
                "parent_created_at": artifact.manifest.get("created_at"),
            },
        ]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return Artifact.load(tmp, embedder_name=artifact.embedder_name, embedder_dim=artifact.embedder_dim,
                             embedder_weights=artifact.embedder_weights,
                             embedder_window=artifact.embedder_window or None)

    return replace(publish(out, fill), path=out.resolve())  # as validated, where it now lives


def _names(logs: Logs) -> str:
    return ", ".join(p.name for p in ([logs] if isinstance(logs, Path) else logs))


def from_log(log: Logs, artifact_dir: Path, out: Path) -> str:
    """``triage calibrate --from-log LOG [LOG|DIR ...] --artifact DIR --out NEW``: a one-paragraph summary."""
    artifact = Artifact.load(artifact_dir)
    observed = read_log(log, artifact.models)
    if observed.joined == 0:
        raise DataError(
            f"{_names(log)}: no feedback joins a routed decision ({observed.decisions} decisions, "
            f"{observed.feedback} feedback records); nothing to fold"
        )
    write_folded(artifact, observed, out, log)
    cells = len(observed.n)
    skipped = (
        f"; skipped unknown backends: {', '.join(sorted(observed.skipped_models))}"
        if observed.skipped_models
        else ""
    )
    return (
        f"folded {observed.joined} observed outcomes into {cells} (cluster, model) cells "
        f"from {observed.decisions} decisions and {observed.feedback} feedback records{skipped}"
    )
