"""A stand-in for `python -m vllm.entrypoints.openai.api_server` in launcher tests.

Takes vLLM's command line (the launcher passes it unchanged after ``-m vllm.entrypoints.openai.api_server``),
answers GET /v1/models with the served names, and forks a child process the way vLLM forks its engine core,
so tests can check that `down` stops the whole process group. Environment knobs for the tests:
FAKE_VLLM_DELAY (seconds before listening), FAKE_VLLM_EXIT (exit with this code at once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> int:
    if argv[:2] == ["-m", "vllm.entrypoints.openai.api_server"]:
        argv = argv[2:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _unknown = parser.parse_known_args(argv)
    if "FAKE_VLLM_EXIT" in os.environ:
        print("fake vllm: failing on purpose", flush=True)
        return int(os.environ["FAKE_VLLM_EXIT"])
    names = args.served_model_name or [args.model]
    # The "engine core": a child in the same process group that outlives a SIGTERM to the parent alone.
    engine = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                               "signal.SIG_DFL); time.sleep(3600)"])
    print(f"fake vllm: engine pid {engine.pid}", flush=True)
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's method name)
            if self.path != "/v1/models":
                self.send_error(404)
                return
            models = [{"id": name, "object": "model"} for name in names]
            body = json.dumps({"object": "list", "data": models}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"fake vllm: listening on {args.host}:{args.port} as {names}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
