"""Fleet files that start the fake vLLM server (tests/specialists/fake_vllm.py) on free ports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bench.harness.fleet import free_port

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")



@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """An "interpreter" that runs the fake server with whatever vLLM command line it is given."""
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def fake_fleet(tmp_path: Path, fake_python: Path) -> Callable[..., Path]:
    """Writes a fleet of ``n`` backends served by one fake server; returns the file's path."""

    def write(n: int = 2, **launch_overrides: object) -> Path:
        port = free_port()
        names = [f"local/m{i}" for i in range(n)]
        launch = {"model": "fake-model", "python": str(fake_python), "port": port,
                  "served_model_names": names, **launch_overrides}
        backends = [{"name": f"org/model-{i}", "base_url": f"http://127.0.0.1:{port}/v1", "model": names[i],
                     "launch": launch} for i in range(n)]
        path = tmp_path / "fleet.yaml"
        path.write_text(yaml.safe_dump({"generalist": "org/model-0", "backends": backends}))
        return path

    return write
