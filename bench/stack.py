"""A whole bench stack: a calibrated artifact, one fake backend per artifact model, ``triage serve`` in front.

The artifact is calibrated once from the routerdc score matrix (``triage calibrate``) and reused from
``var/bench/artifact``; delete that directory to rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.fleet import FakeProcess, TriageProcess, fleet_config

DATA = "/work/shared/data/routing/routerdc_7model.jsonl"
GENERALIST = "meta-llama/Meta-Llama-3-8B"


def ascii_jsonl(source: Path, target: Path) -> Path:
    """The same rows re-serialised with ASCII escapes.

    Some routerdc queries hold U+2028/U+2029, which ``str.splitlines()`` (calibration/data.py) takes for line
    ends; escaped, every row is one physical line again. Remove once the reader splits on "\\n" only.
    """
    if not target.exists():
        lines = [json.dumps(json.loads(line)) for line in source.read_text().split("\n") if line.strip()]
        target.write_text("\n".join(lines) + "\n")
    return target


def ensure_artifact(out: Path, data: str = DATA, generalist: str = GENERALIST) -> Path:
    """Calibrate with the project's own CLI unless ``out`` already holds an artifact."""
    if not (out / "manifest.json").exists():
        from calibration.cli import main as calibrate

        out.parent.mkdir(parents=True, exist_ok=True)
        rows = ascii_jsonl(Path(data), out.parent / (Path(data).stem + ".ascii.jsonl"))
        code = calibrate(["calibrate", "--data", str(rows), "--out", str(out), "--generalist", generalist])
        if code:
            raise RuntimeError(f"triage calibrate exited with {code}")
    return out


def artifact_models(path: Path) -> tuple[list[str], str]:
    from router.artifact import Artifact

    artifact = Artifact.load(path)
    return list(artifact.models), artifact.generalist


class BenchStack:
    """Context manager: starts everything on 127.0.0.1 and stops every process it started, by pid."""

    def __init__(self, artifact: Path, workdir: Path, health: dict[str, Any] | None = None,
                 fake_options: dict[str, Any] | None = None, **config: Any) -> None:
        self.artifact = ensure_artifact(artifact)
        self.workdir = workdir
        self.models, self.generalist = artifact_models(self.artifact)
        self.fakes: dict[str, FakeProcess] = {}
        self.health = {"probe_interval_s": 0.5, **(health or {})}
        self.fake_options = fake_options or {}
        self.config = config
        self.triage: TriageProcess

    def __enter__(self) -> BenchStack:
        try:
            for i, model in enumerate(self.models):
                self.fakes[model] = FakeProcess(f"served-{i}", dict(self.fake_options)).start()
            config = fleet_config(self.artifact.resolve(), self.models, self.generalist,
                                  [self.fakes[m].base_url for m in self.models],
                                  [self.fakes[m].served_name for m in self.models],
                                  health=self.health, **self.config)
            self.triage = TriageProcess(config, self.workdir).start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        triage = getattr(self, "triage", None)
        if triage is not None:
            triage.stop()
        for fake in self.fakes.values():
            fake.kill()
