"""Start and stop model-server processes and wait until they answer.

Each server runs in its own session (process group), because vLLM forks an engine-core process: stopping
only the API server's PID would leave the engine holding gigabytes of memory. The run dir records, per
server, ``<name>.json`` (pid, port, argv, served names) and ``<name>.log``; ``down`` reads those files,
so it works from another shell and after the starting shell is gone.

    LauncherError
     └── StartTimeout       the process is alive but /v1/models did not answer in time
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

DEFAULT_RUN_DIR = Path("var/run/specialists")
# Servers this process started, kept so their exit status is collected (no zombies) and Popen does not warn
# that it was dropped while its process was still running. `down` from another shell works by PID alone.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LauncherError(Exception):
    """A server could not be started or stopped; the message says which and where its log is."""


class StartTimeout(LauncherError):
    pass


@dataclass(frozen=True)
class RunningServer:
    name: str
    pid: int
    port: int
    host: str
    served_names: list[str]
    argv: list[str]
    log: str
    started_at: float

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def read_records(run_dir: Path) -> list[RunningServer]:
    records = []
    for path in sorted(run_dir.glob("*.json")):
        try:
            records.append(RunningServer(**json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue  # not one of ours, or half-written by a crash: ignore rather than fail `down`
    return records


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers signal 0.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def models_ready(base_url: str, expected: Sequence[str], timeout: float = 2.0) -> bool:
    """True when GET {base_url}/models answers 200 and lists every expected model id."""
    try:
        response = httpx.get(f"{base_url}/models", timeout=timeout)
        if response.status_code != 200:
            return False
        served = {m.get("id") for m in response.json().get("data", [])}
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return set(expected) <= served


def start(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    served_names: Sequence[str],
    run_dir: Path = DEFAULT_RUN_DIR,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> RunningServer:
    """Spawn ``argv`` in its own session with output to ``<run_dir>/<name>.log``; does not wait."""
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = next((r for r in read_records(run_dir) if r.name == name), None)
    if existing is not None and is_alive(existing.pid):
        raise LauncherError(f"{name} is already running (pid {existing.pid}); run `down` first")
    log_path = run_dir / f"{name}.log"
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )
        except OSError as exc:
            raise LauncherError(f"cannot start {name}: {argv[0]}: {exc.strerror}") from None
    _CHILDREN[process.pid] = process
    record = RunningServer(
        name, process.pid, port, host, list(served_names), list(argv), str(log_path), time.time()
    )
    record_path(run_dir, name).write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


def wait_ready(
    server: RunningServer,
    timeout: float,
    *,
    progress: Callable[[str], None] | None = None,
    interval: float = 1.0,
    every: float = 10.0,
) -> float:
    """Poll /v1/models until the server lists its names; returns the seconds it took.

    Raises LauncherError (with the log's tail) if the process exits, StartTimeout if time runs out.
    """
    started = time.monotonic()
    last_report = started
    while True:
        if models_ready(server.base_url, server.served_names):
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        if not is_alive(server.pid):
            _reap(server.pid)
            raise LauncherError(f"{server.name} exited after {elapsed:.0f} s; its log ({server.log}) ends:\n"
                                f"{log_tail(Path(server.log))}")
        if elapsed >= timeout:
            raise StartTimeout(
                f"{server.name} (pid {server.pid}) did not answer {server.base_url}/models within "
                f"{timeout:.0f} s; it is still running (stop it with `down`); raise --timeout or read "
                f"{server.log}:\n"
                f"{log_tail(Path(server.log))}"
            )
        if progress is not None and time.monotonic() - last_report >= every:
            progress(f"{server.name}: waiting for {server.base_url}/models ({elapsed:.0f}/{timeout:.0f} s)")
            last_report = time.monotonic()
        time.sleep(interval)


def stop(server: RunningServer, grace: float = 20.0) -> bool:
    """SIGTERM the server's whole process group, SIGKILL after ``grace`` seconds. True if it was running."""
    if not is_alive(server.pid):
        _reap(server.pid)
        return False
    _signal_group(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(server.pid):
            break
        time.sleep(0.2)
    else:
        _signal_group(server.pid, signal.SIGKILL)
        time.sleep(0.2)
    _reap(server.pid)
    return True


def stop_all(run_dir: Path = DEFAULT_RUN_DIR, grace: float = 20.0) -> list[tuple[RunningServer, bool]]:
    """Stop every server recorded in ``run_dir`` and remove its record (logs stay)."""
    results = []
    for record in read_records(run_dir):
        results.append((record, stop(record, grace)))
        record_path(run_dir, record.name).unlink(missing_ok=True)
    return results


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (vLLM's engine core is a child)."""
    total = 0
    for child in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{child}/status").read_text().split("\n")
        except OSError:
            continue
        rss = next((line.split()[1] for line in fields if line.startswith("VmRSS:")), "0")
        total += int(rss) * 1024
    return total


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The server is its session's leader, so its PID is the group id; fall back to the PID alone if the
    # group is gone (already exited) or was never ours.
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _reap(pid: int) -> None:
    """Collect the exit status when this process started the server, so it does not linger as a zombie."""
    process = _CHILDREN.pop(pid, None)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
