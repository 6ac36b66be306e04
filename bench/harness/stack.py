"""A whole bench stack: a calibrated artifact, one fake backend per artifact model, ``triage serve`` in front.

The artifact is calibrated once from the routerdc score matrix (``triage calibrate``) and reused from
``var/bench/artifact``; delete that directory to rebuild it. One written in an older artifact format is rebuilt
(it would load, but route without what the newer format adds).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.harness.fleet import FakeProcess, TriageProcess, fleet_config

# ../shared/data beside the checkout (as make run and make test expect)
DATA = str(Path(__file__).resolve().parents[3] / "shared" / "data" / "routing" / "routerdc_7model.jsonl")
GENERALIST = "meta-llama/Meta-Llama-3-8B"
# `triage calibrate` flags per embedder configuration (eval takes the same ones without --refine-ood).
CALIBRATE_FLAGS: dict[str, tuple[str, ...]] = {
    "minilm": (), "openvino": ("--embedder", "openvino"), "int8": ("--embedder", "int8"),
    "static": ("--embedder", "static"),
    "tiered": ("--embedder", "static", "--refine-ood"),
    # MiniLM reading only the first N tokens of each query (the routing window; "w256": the model's whole window).
    **{f"w{n}": ("--window", str(n)) for n in (32, 48, 64, 96, 128, 256)},
}


def ensure_artifact(out: Path, data: str = DATA, generalist: str = GENERALIST, flags: tuple[str, ...] = ()) -> Path:
    """Calibrate with the project's own CLI (extra ``flags``, e.g. the embedder) unless ``out`` holds an artifact
    in the current format with this ``generalist`` and the routing window the flags (or the default) ask for."""
    from router.artifact import stale
    from router.settings import EmbedderSettings

    window = (int(flags[flags.index("--window") + 1]) if "--window" in flags
              else None if "static" in flags else EmbedderSettings().window)  # a static model reads its own window
    if stale(out, generalist, window):
        shutil.rmtree(out)
    if not (out / "manifest.json").exists():
        from calibration.cli import main as calibrate

        out.parent.mkdir(parents=True, exist_ok=True)
        code = calibrate(["calibrate", "--data", data, "--out", str(out), "--generalist", generalist, *flags])
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
        window = (config.get("embedder") or {}).get("window")  # the artifact must record the router's window
        self.artifact = ensure_artifact(artifact, flags=() if window is None else ("--window", str(window)))
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
            self.triage = TriageProcess(self.router_config(config), self.workdir).start()
        except BaseException:
            self.close()
            raise
        return self

    def router_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The router's config as ``triage serve`` gets it (a subclass may change it: prices, say)."""
        return config

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        triage = getattr(self, "triage", None)
        if triage is not None:
            triage.stop()
        for fake in self.fakes.values():
            fake.kill()
