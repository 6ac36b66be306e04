"""LiteLLM's proxy in front of a fake backend, for a side-by-side row in bench/proxy_overhead.py.

LiteLLM is not a dependency of Triage: it runs from its own environment (``python -m venv .venv-litellm;
.venv-litellm/bin/pip install 'litellm[proxy]'``), offline (``LITELLM_LOCAL_MODEL_COST_MAP``: no fetch of
its price list), on 127.0.0.1 with one worker (as Triage runs), with a random master key because it
refuses to start without one.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.harness.fleet import FakeProcess, free_port, terminate, wait_healthy


@dataclass
class LiteLLMProcess:
    script: str
    fake: FakeProcess
    workdir: Path
    port: int = 0
    key: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> LiteLLMProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.key = free_port(), "sk-bench-" + secrets.token_hex(16)
        config = {"model_list": [{"model_name": "fast", "litellm_params": {
            "model": f"openai/{self.fake.served_name}", "api_base": self.fake.base_url, "api_key": "sk-unused"}}],
            "litellm_settings": {"telemetry": False}}
        (self.workdir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
        env = {**os.environ, "LITELLM_MASTER_KEY": self.key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
        with open(self.workdir / "litellm.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(self.script).resolve()), "--config", "config.yaml", "--host", "127.0.0.1",
                 "--port", str(self.port), "--num_workers", "1"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_healthy(self.proc, self.url + "/health/liveliness", "litellm", self.workdir / "litellm.log",
                         timeout, interval=0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None
