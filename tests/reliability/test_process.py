"""`triage serve` as a process: SIGHUP reloads the artifact, SIGTERM drains in-flight streams, then exits."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.harness.fleet import TriageProcess, fleet_config
from router.artifact import Artifact
from tests.reliability.rig import MATH

pytestmark = pytest.mark.slow


def start(rel_artifact: Artifact, fake_fleet: dict, artifact_dir: Path, workdir: Path) -> TriageProcess:
    models = list(rel_artifact.models)
    config = fleet_config(artifact_dir, models, rel_artifact.generalist,
                          [fake_fleet[m].base_url for m in models], [fake_fleet[m].served_name for m in models],
                          health={"probe_interval_s": 0})
    return TriageProcess(config, workdir).start()


def test_sighup_reloads_the_artifact_and_keeps_a_bad_one_out(
    rel_artifact: Artifact, fake_fleet: dict, tmp_path: Path
) -> None:
    artifact_dir = tmp_path / "artifact"
    shutil.copytree(rel_artifact.path, artifact_dir)
    triage = start(rel_artifact, fake_fleet, artifact_dir, tmp_path / "serve")
    try:
        assert triage.proc is not None
        before = httpx.get(triage.url + "/ready").json()["artifact"]
        manifest = (artifact_dir / "manifest.json").read_text()
        (artifact_dir / "manifest.json").write_text(manifest.replace(before, "2099-01-01T00:00:00+00:00"))
        triage.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(triage.url + "/ready").json()["artifact"] != "2099-01-01T00:00:00+00:00":
            assert time.monotonic() < deadline, "SIGHUP did not reload the artifact"
            time.sleep(0.2)
        (artifact_dir / "centroids.npy").write_bytes(b"corrupt")
        triage.proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert httpx.get(triage.url + "/ready").json()["artifact"] == "2099-01-01T00:00:00+00:00"
        routed = httpx.post(triage.url + "/v1/route", json={"model": "triage",
                                                            "messages": [{"role": "user", "content": MATH}]})
        assert routed.status_code == 200
        assert triage.log_path is not None and "rejected" in triage.log_path.read_text()
    finally:
        triage.stop()


def test_sigterm_drains_an_in_flight_stream_before_exiting(
    rel_artifact: Artifact, fake_fleet: dict, tmp_path: Path
) -> None:
    for fake in fake_fleet.values():
        fake.configure(tokens_per_s=10, completion_tokens=30)  # a 3-second stream
    triage = start(rel_artifact, fake_fleet, rel_artifact.path, tmp_path / "serve")
    body: list[bytes] = []
    try:
        assert triage.proc is not None

        def read_stream() -> None:
            with httpx.stream("POST", triage.url + "/v1/chat/completions", timeout=60, json={
                    "model": "triage", "stream": True, "messages": [{"role": "user", "content": MATH}]}) as response:
                body.extend(response.iter_bytes())

        reader = threading.Thread(target=read_stream)
        reader.start()
        time.sleep(1.0)  # the stream is under way
        triage.proc.send_signal(signal.SIGTERM)
        reader.join(timeout=60)
        # uvicorn re-raises the captured SIGTERM once it has shut down gracefully: -15 is the clean exit here.
        assert triage.proc.wait(timeout=60) in (0, -signal.SIGTERM)
        text = b"".join(body).decode()
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
        assert text.count("chat.completion.chunk") >= 30
    finally:
        for fake in fake_fleet.values():
            fake.configure(tokens_per_s=0, completion_tokens=16)
        triage.stop()
