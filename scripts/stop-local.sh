#!/usr/bin/env bash
# Stops what `make run` started: the router, then every specialist process the launcher recorded.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -f var/run/router.pid ]; then
  pid=$(cat var/run/router.pid)
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f var/run/router.pid
  echo "[down] router stopped"
fi
.venv/bin/triage specialists down
