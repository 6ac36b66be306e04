"""The real CPU vLLM server for tests: SmolLM2-135M-Instruct answering to the seven served names of
specialists/fleets/local-cpu.yaml, on a free port, started through the same launcher as `triage specialists`.

    server = start_local_vllm(tmp_dir)      # ~30-45 s on 2 cores; ~3.4 GiB RSS
    server.base_url, server.served_names
    server.stop()

Meant to run once per test session (a session fixture in tests/conftest.py). It first runs
scripts/setup-backend.sh, which returns in seconds when .venv-vllm and the converted model exist.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.harness.fleet import free_port
from specialists import launcher
from specialists.fleet import load_fleet

REPO = Path(__file__).resolve().parent.parent
LOCAL_FLEET = REPO / "specialists" / "fleets" / "local-cpu.yaml"
SETUP = REPO / "scripts" / "setup-backend.sh"
START_TIMEOUT_S = 300.0


@dataclass
class LocalVLLM:
    base_url: str
    served_names: list[str]
    backend_models: dict[str, str]  # backend name (the artifact's model) -> served name
    server: launcher.RunningServer

    def stop(self) -> None:
        launcher.stop(self.server, grace=20)



def start_local_vllm(
    tmp_dir: Path, fleet_path: Path = LOCAL_FLEET, timeout: float = START_TIMEOUT_S
) -> LocalVLLM:
    """Start the fleet's single CPU server on a free port; raises launcher.LauncherError if it fails."""
    setup = subprocess.run([str(SETUP)], cwd=REPO, capture_output=True, text=True)
    if setup.returncode != 0:
        output = setup.stdout[-2000:] + setup.stderr[-2000:]
        raise launcher.LauncherError(f"scripts/setup-backend.sh failed:\n{output}")
    fleet = load_fleet(fleet_path)
    [server] = fleet.servers  # the local fleet is one server by design
    port = free_port()
    spec = server.launch
    env = {**spec.environment(), "VLLM_CPU_KVCACHE_SPACE": "1"}
    argv = spec.argv(fleet.base_dir, port=port)
    if "--enforce-eager" not in argv:
        # Compiled mode gave wrong tokens on vllm-cpu 0.32 and starts 3-4x slower.
        argv.append("--enforce-eager")
    running = launcher.start(f"test-vllm-{port}", argv, port=port, served_names=list(spec.served_model_names),
                             run_dir=Path(tmp_dir), env=env)
    try:
        launcher.wait_ready(running, timeout)
    except launcher.LauncherError:
        launcher.stop(running, grace=5)
        raise
    return LocalVLLM(
        base_url=running.base_url,
        served_names=list(spec.served_model_names),
        backend_models={b.name: b.model for b in server.backends},
        server=running,
    )
