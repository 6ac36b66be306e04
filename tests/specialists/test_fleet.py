"""Fleet files: the shipped ones parse and agree with the data; bad ones fail with a clear message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from router.settings import ConfigError, load_settings
from specialists.fleet import LaunchSpec, load_fleet, parse_fleet

REPO = Path(__file__).resolve().parents[2]
FLEETS = REPO / "specialists" / "fleets"
DATA = Path(os.environ.get("TRIAGE_TEST_DATA", REPO.parent / "shared" / "data"))
ROUTERDC = DATA / "routing" / "routerdc_7model.jsonl"


def routerdc_models() -> list[str]:
    if not ROUTERDC.exists():
        pytest.skip(f"routing data not found at {ROUTERDC}")
    with ROUTERDC.open() as rows:
        return sorted(json.loads(next(rows))["scores"])


def test_local_cpu_fleet_is_one_server_with_a_served_name_per_model() -> None:
    fleet = load_fleet(FLEETS / "local-cpu.yaml")

    assert sorted(b.name for b in fleet.backends) == routerdc_models()
    assert len(fleet.servers) == 1
    server = fleet.servers[0]
    assert server.launch.device == "cpu" and server.launch.port == 8101 and server.launch.enforce_eager
    assert len({b.model for b in fleet.backends}) == 7
    assert set(server.launch.served_model_names) == {b.model for b in fleet.backends}
    assert all(b.stand_in_for and "stand-in" in b.stand_in_for for b in fleet.backends)
    assert len({(b.price_per_mtok.input, b.price_per_mtok.output) for b in fleet.backends}) == 1
    assert server.launch.environment() == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_gpu_fleet_serves_the_same_models_on_gpus() -> None:
    fleet = load_fleet(FLEETS / "gpu.yaml")

    assert sorted(b.name for b in fleet.backends) == routerdc_models()
    assert fleet.servers and all(s.launch.device == "gpu" for s in fleet.servers)
    assert all(b.stand_in_for is None for b in fleet.backends)


@pytest.mark.parametrize("name", ["local-cpu.yaml", "gpu.yaml"])
def test_router_settings_accept_the_fleet(name: str, tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, artifact=str(tmp_path), fleet=str(FLEETS / name))

    assert settings.generalist_name == "cognitivecomputations/dolphin-2.9-llama3-8b"
    assert len(settings.backends) == 7


def test_argv_is_vllms_openai_server_with_resolved_paths(tmp_path: Path) -> None:
    spec = LaunchSpec(model="../models/m", python="../venv/bin/python", port=8101,
                      served_model_names=("a", "b"), max_model_len=2048, enforce_eager=True,
                      cpu_kvcache_gib=2)

    argv = spec.argv(tmp_path / "fleets", port=9000)

    # Not resolved: a venv's python is a symlink to the base interpreter, which would lose the venv.
    assert argv[0] == str(tmp_path / "fleets" / "../venv/bin/python")
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str((tmp_path / "models" / "m").resolve())
    assert argv[argv.index("--served-model-name") + 1:][:2] == ["a", "b"]
    assert argv[argv.index("--port") + 1] == "9000"
    assert "--enforce-eager" in argv and "--max-model-len" in argv
    assert spec.environment() == {"VLLM_CPU_KVCACHE_SPACE": "2"}


def test_hf_model_ids_and_lora_modules_pass_through() -> None:
    spec = LaunchSpec(model="mistralai/Mistral-7B-v0.1", port=8000, served_model_names=("base",),
                      device="gpu", gpu_memory_utilization=0.9, enable_lora=True,
                      lora_modules={"math": "org/math-lora"})

    argv = spec.argv(Path("/nonexistent"))

    assert argv[0] == "python3"
    assert argv[argv.index("--model") + 1] == "mistralai/Mistral-7B-v0.1"
    assert argv[argv.index("--lora-modules") + 1] == "math=org/math-lora"
    assert spec.answers_to == {"base", "math"}


def _fleet(backends: list[dict[str, object]]) -> dict[str, object]:
    return {"backends": backends}


def _backend(name: str, model: str, **launch: object) -> dict[str, object]:
    spec = {"model": "m", "port": 8101, "served_model_names": ["a", "b"], **launch}
    return {"name": name, "base_url": "http://127.0.0.1:8101/v1", "model": model, "launch": spec}


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        ([_backend("x", "c")], "not among its server's served_model_names"),
        ([_backend("x", "a"), _backend("y", "b", max_model_len=4096)], "share port 8101"),
        ([_backend("x", "a"), _backend("x", "b")], "duplicate backend names"),
        ([_backend("x", "a", gpu_memory_utilization=0.9)], "need device: gpu"),
        ([_backend("x", "a", lora_modules={"l": "p"})], "needs enable_lora"),
        ([_backend("x", "a", unknown_flag=1)], "backends[0]"),
        ([], "non-empty list"),
    ],
)
def test_bad_fleets_are_refused_with_a_reason(backends: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_fleet(_fleet(backends), Path("fleet.yaml"))


def test_unknown_generalist_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"generalist": "nope", "backends": [_backend("x", "a")]}))

    with pytest.raises(ConfigError, match="generalist 'nope'"):
        load_fleet(path)
