"""Artifact hot reload: a bad artifact is refused with a reason and the old one keeps serving; a good one swaps."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.reliability.rig import Rig, RigFactory


def reload(rig: Rig) -> httpx.Response:
    return httpx.post(rig.url + "/admin/reload", timeout=60)


def still_serving(rig: Rig, created_at: object) -> None:
    assert httpx.get(rig.url + "/ready", timeout=10).json()["artifact"] == created_at
    response = rig.chat()
    assert response.status_code == 200 and response.headers["x-triage-reason"]


def corrupt_manifest(path: Path) -> None:
    (path / "manifest.json").write_text('{"format_version": ')


def wrong_embedder(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["embedder"] = {**manifest["embedder"], "name": "some-other-model"} if isinstance(
        manifest.get("embedder"), dict) else "some-other-model"
    if "embedder_name" in manifest:
        manifest["embedder_name"] = "some-other-model"
    (path / "manifest.json").write_text(json.dumps(manifest))


def missing_table(path: Path) -> None:
    largest = max((p for p in path.rglob("*") if p.is_file() and p.name != "manifest.json"
                   and p.suffix not in (".md", ".png")), key=lambda p: p.stat().st_size)
    largest.unlink()


def truncated_table(path: Path) -> None:
    largest = max((p for p in path.rglob("*") if p.is_file() and p.name != "manifest.json"
                   and p.suffix not in (".md", ".png")), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


@pytest.mark.parametrize("damage", [corrupt_manifest, wrong_embedder, missing_table, truncated_table],
                         ids=lambda f: f.__name__)
def test_a_bad_artifact_is_refused_and_the_old_one_keeps_serving(
    rig: RigFactory, artifact_copy: Path, damage: object
) -> None:
    with rig(artifact_dir=artifact_copy) as r:
        before = httpx.get(r.url + "/ready", timeout=10).json()["artifact"]
        assert callable(damage)
        damage(artifact_copy)
        refused = reload(r)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert "previous one keeps serving" in error["message"]
        assert str(artifact_copy) not in error["message"]  # no absolute paths to clients
        still_serving(r, before)


def test_a_good_artifact_swaps_in(rig: RigFactory, artifact_copy: Path) -> None:
    with rig(artifact_dir=artifact_copy) as r:
        manifest = json.loads((artifact_copy / "manifest.json").read_text())
        manifest["created_at"] = "2026-01-02T03:04:05+00:00"
        (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
        swapped = reload(r)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["created_at"] == "2026-01-02T03:04:05+00:00"
        still_serving(r, "2026-01-02T03:04:05+00:00")


def test_reload_under_traffic_drops_no_request(rig: RigFactory, artifact_copy: Path) -> None:
    """Reloads between requests on other connections: every request still completes."""
    import concurrent.futures

    with rig(artifact_dir=artifact_copy) as r, concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(r.chat) for _ in range(40)]
        codes = [reload(r).status_code for _ in range(5)]
        statuses = [f.result().status_code for f in futures]
    assert codes == [200] * 5
    assert statuses == [200] * 40
