"""`triage specialists ...`: start, stop and inspect the model servers a fleet file describes.

    up --fleet FILE [--run-dir DIR] [--timeout S]   start every server of the fleet, wait until healthy
    down [--run-dir DIR]                            stop every server recorded in the run dir
    status [--run-dir DIR]                          pid, memory, health of each recorded server
    smoke [--run-dir DIR] [--question Q]            one real chat completion per server: answer, tokens/s
    convert [--out DIR] [--force]                   GGUF -> safetensors for the CPU backend (in .venv-vllm)

`up` is idempotent: a server already running and healthy is left alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from router.settings import ConfigError
from specialists import launcher, smoke
from specialists.fleet import Fleet, Server, load_fleet

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VLLM_PYTHON = Path(".venv-vllm/bin/python")


def up(fleet: Fleet, run_dir: Path, timeout: float) -> int:
    if not fleet.servers:
        launcher.eprint(f"[specialists] {fleet.path.name}: no backend has a launch: block; nothing to start")
        return 0
    running = {r.name: r for r in launcher.read_records(run_dir)}
    started: list[launcher.RunningServer] = []
    for server in fleet.servers:
        record = running.get(server.name)
        if (record is not None and launcher.is_alive(record.pid)
                and launcher.models_ready(record.base_url, record.served_names)):
            print(f"[specialists] {server.name} already running (pid {record.pid}) at {record.base_url}")
            continue
        python = server.launch.interpreter(fleet.base_dir)
        if "/" in python and not Path(python).exists():
            launcher.eprint(f"[specialists] {python} not found: run scripts/setup-backend.sh first")
            return 1
        argv = server.launch.argv(fleet.base_dir)
        names = sorted(server.launch.answers_to)
        print(f"[specialists] starting {server.name}: {len(server.backends)} backend(s) on port "
              f"{server.launch.port} ({server.launch.device}); log {run_dir / (server.name + '.log')}")
        try:
            started.append(launcher.start(
                server.name, argv, port=server.launch.port, served_names=names, run_dir=run_dir,
                host=_client_host(server), env=server.launch.environment(),
            ))
        except launcher.LauncherError as exc:
            launcher.eprint(f"[specialists] {exc}")
            return 1
    # Start all first, then wait: on a GPU pool the servers load their weights in parallel.
    for record in started:
        try:
            seconds = launcher.wait_ready(record, timeout, progress=_progress)
        except launcher.LauncherError as exc:
            launcher.eprint(f"[specialists] {exc}")
            return 1
        rss = launcher.rss_bytes(record.pid) / 2**30
        print(f"[specialists] {record.name} healthy after {seconds:.0f} s at {record.base_url} "
              f"(RSS {rss:.1f} GiB): {', '.join(record.served_names)}")
    return 0


def down(run_dir: Path) -> int:
    results = launcher.stop_all(run_dir)
    if not results:
        print(f"[specialists] nothing recorded in {run_dir}")
    for record, was_running in results:
        state = "stopped" if was_running else "was not running"
        print(f"[specialists] {record.name} (pid {record.pid}) {state}")
    return 0


def status(run_dir: Path) -> int:
    records = launcher.read_records(run_dir)
    if not records:
        print(f"[specialists] nothing recorded in {run_dir}")
        return 0
    unhealthy = 0
    for record in records:
        alive = launcher.is_alive(record.pid)
        ready = alive and launcher.models_ready(record.base_url, record.served_names)
        unhealthy += not ready
        state = "healthy" if ready else ("starting or unhealthy" if alive else "not running")
        uptime = f", up {time.time() - record.started_at:.0f} s" if alive else ""
        rss = f", RSS {launcher.rss_bytes(record.pid) / 2**30:.1f} GiB" if alive else ""
        print(f"{record.name}: {state} (pid {record.pid}{uptime}{rss}) {record.base_url} "
              f"[{', '.join(record.served_names)}] log {record.log}")
    return 1 if unhealthy else 0


def smoke_test(run_dir: Path, question: str, repeat: int) -> int:
    records = [r for r in launcher.read_records(run_dir) if launcher.is_alive(r.pid)]
    if not records:
        launcher.eprint(f"[specialists] no running server recorded in {run_dir}; run `up` first")
        return 1
    for record in records:
        model = record.served_names[0]
        for _ in range(repeat):
            try:
                result = smoke.ask(record.base_url, model, question)
            except httpx.HTTPError as exc:
                launcher.eprint(f"[specialists] {record.name}: {model}: {exc}")
                return 1
            print(f"{record.name} [{model}] {result.seconds:.2f} s, {result.prompt_tokens} prompt + "
                  f"{result.completion_tokens} completion tokens, {result.tokens_per_second:.1f} tokens/s: "
                  f"{result.answer.strip()!r}")
    return 0


def convert(args: argparse.Namespace) -> int:
    # The conversion needs transformers + gguf + accelerate, which live in the backend env, not the router's.
    python = Path(args.python)
    if not python.exists():
        launcher.eprint(f"[specialists] {python} not found: run scripts/setup-backend.sh first")
        return 1
    cmd = [str(python), "-m", "specialists.convert", "--out", str(args.out)]
    if args.force:
        cmd.append("--force")
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.call(cmd, env=env)


def _progress(message: str) -> None:
    print(f"[specialists] {message}", flush=True)


def _client_host(server: Server) -> str:
    # A server bound to all interfaces is reached on loopback from this machine.
    return "127.0.0.1" if server.launch.host in ("0.0.0.0", "::") else server.launch.host


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage specialists", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_dir = argparse.ArgumentParser(add_help=False)
    run_dir.add_argument("--run-dir", type=Path, default=launcher.DEFAULT_RUN_DIR, help="PID files and logs")
    p_up = commands.add_parser("up", parents=[run_dir], help="start the fleet's servers, wait until healthy")
    p_up.add_argument("--fleet", type=Path, required=True, help="fleet YAML")
    p_up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each server")
    commands.add_parser("down", parents=[run_dir], help="stop every recorded server")
    commands.add_parser("status", parents=[run_dir], help="show recorded servers; exit 1 if one is unhealthy")
    p_smoke = commands.add_parser("smoke", parents=[run_dir], help="one chat completion per running server")
    p_smoke.add_argument("--question", default=smoke.DEFAULT_QUESTION)
    p_smoke.add_argument("--repeat", type=int, default=1, help="ask this many times (the first warms up)")
    p_convert = commands.add_parser("convert", help="convert SmolLM2-135M-Instruct GGUF to safetensors")
    p_convert.add_argument("--out", type=Path, default=Path("models/smollm2-135m-instruct"))
    p_convert.add_argument("--python", default=str(DEFAULT_VLLM_PYTHON), help="backend env interpreter")
    p_convert.add_argument("--force", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        try:
            fleet = load_fleet(args.fleet)
        except ConfigError as exc:
            launcher.eprint(f"[specialists] {exc}")
            return 2
        return up(fleet, args.run_dir, args.timeout)
    if args.command == "down":
        return down(args.run_dir)
    if args.command == "status":
        return status(args.run_dir)
    if args.command == "smoke":
        return smoke_test(args.run_dir, args.question, args.repeat)
    return convert(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
