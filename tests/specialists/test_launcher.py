"""The launcher and `triage specialists up/down/status` against a fake vLLM server (real processes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.harness.fleet import free_port
from specialists import cli, launcher

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def no_leftovers(tmp_path: Path) -> object:
    yield None
    launcher.stop_all(tmp_path / "run", grace=2)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_up_then_down_leaves_no_process(fake_fleet: Callable[..., Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"

    assert cli.main(["up", "--fleet", str(fake_fleet(3)), "--run-dir", str(run_dir), "--timeout", "30"]) == 0
    [record] = launcher.read_records(run_dir)
    assert launcher.models_ready(record.base_url, ["local/m0", "local/m1", "local/m2"])
    assert len(group_members(record.pid)) >= 2  # the server and its "engine core" child
    assert "healthy after" in capsys.readouterr().out
    assert cli.main(["status", "--run-dir", str(run_dir)]) == 0

    assert cli.main(["down", "--run-dir", str(run_dir)]) == 0

    assert group_members(record.pid) == []
    assert launcher.read_records(run_dir) == []
    assert Path(record.log).exists()  # logs stay for the post-mortem
    assert cli.main(["status", "--run-dir", str(run_dir)]) == 0


def test_up_twice_keeps_the_running_server(fake_fleet: Callable[..., Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    fleet, run_dir = str(fake_fleet(1)), str(tmp_path / "run")
    assert cli.main(["up", "--fleet", fleet, "--run-dir", run_dir]) == 0
    [first] = launcher.read_records(Path(run_dir))

    assert cli.main(["up", "--fleet", fleet, "--run-dir", run_dir]) == 0

    assert "already running" in capsys.readouterr().out
    assert [r.pid for r in launcher.read_records(Path(run_dir))] == [first.pid]


def test_timeout_names_the_url_the_log_and_what_to_do(fake_python: Path, tmp_path: Path) -> None:
    port = free_port()
    server = launcher.start("slow", [str(fake_python), "--model", "m", "--port", str(port)], port=port,
                            served_names=["m"], run_dir=tmp_path / "run", env={"FAKE_VLLM_DELAY": "30"})

    with pytest.raises(launcher.StartTimeout) as caught:
        launcher.wait_ready(server, timeout=1.5, interval=0.2)

    message = str(caught.value)
    assert f"http://127.0.0.1:{port}/v1/models within 2 s" in message
    assert "--timeout" in message and "slow.log" in message and "fake vllm: engine pid" in message
    assert launcher.stop(server, grace=5)
    assert group_members(server.pid) == []


def test_a_server_that_exits_fails_fast_with_its_log(fake_python: Path, tmp_path: Path) -> None:
    port = free_port()
    server = launcher.start("broken", [str(fake_python), "--model", "m", "--port", str(port)], port=port,
                            served_names=["m"], run_dir=tmp_path / "run", env={"FAKE_VLLM_EXIT": "3"})
    started = time.monotonic()

    with pytest.raises(launcher.LauncherError, match="(?s)exited .*failing on purpose"):
        launcher.wait_ready(server, timeout=30, interval=0.1)

    assert time.monotonic() - started < 10


def test_cli_up_reports_a_missing_interpreter(fake_fleet: Callable[..., Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fleet = fake_fleet(1, python=str(tmp_path / "no-such-venv" / "bin" / "python"))

    assert cli.main(["up", "--fleet", str(fleet), "--run-dir", str(tmp_path / "run")]) == 1
    assert "setup-backend.sh" in capsys.readouterr().err


def test_cli_up_reports_an_invalid_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("backends: []\n")

    assert cli.main(["up", "--fleet", str(fleet), "--run-dir", str(tmp_path / "run")]) == 2
    assert "non-empty list" in capsys.readouterr().err


def test_stop_of_a_dead_pid_is_harmless(tmp_path: Path) -> None:
    record = launcher.RunningServer("gone", 2**22 + os.getpid() % 1000, 1, "127.0.0.1", [], [], "x.log", 0.0)

    assert launcher.stop(record) is False
