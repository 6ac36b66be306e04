#!/usr/bin/env bash
# Triage on this machine, from nothing: calibrate from real routing data, start the CPU vLLM backend,
# start the router, send one request through the official openai SDK, print how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-../shared/data}"
TRIAGE=.venv/bin/triage
ARTIFACT=var/artifacts/routerdc
PORT="${PORT:-8000}"
mkdir -p var/log var/run

# The generalist the fleet names (config/local.yaml -> specialists/fleets/local-cpu.yaml). An artifact from an older
# Triage still loads (the router reads every earlier format) but routes without what the newer format adds, and one
# calibrated with another generalist or routing window would be refused: either is removed and calibrated again.
CHOICE=$(.venv/bin/python - "$ARTIFACT" <<'EOF'
import shutil, sys
from pathlib import Path
from router.artifact import stale
from router.settings import load_settings
settings = load_settings("config/local.yaml")
generalist = settings.generalist_name
if stale(Path(sys.argv[1]), generalist, settings.embedder.window):
    print(f"[run] {sys.argv[1]} was written in an older artifact format, for another generalist or another "
          "routing window: calibrating it again", file=sys.stderr)
    shutil.rmtree(sys.argv[1])
print(generalist, settings.embedder.window or "")
EOF
)
read -r GENERALIST WINDOW <<< "$CHOICE"
if [ ! -f "$ARTIFACT/manifest.json" ]; then
  echo "[run] calibrating the routing table from $DATA/routing/routerdc_7model.jsonl (train split; ~2 min)"
  "$TRIAGE" calibrate --data "$DATA/routing/routerdc_7model.jsonl" --out "$ARTIFACT" --generalist "$GENERALIST" \
    ${WINDOW:+--window "$WINDOW"}
fi

echo "[run] starting the CPU vLLM backend (SmolLM2-135M-Instruct standing in for the seven models)"
"$TRIAGE" specialists up --fleet specialists/fleets/local-cpu.yaml

if [ -f var/run/router.pid ] && kill -0 "$(cat var/run/router.pid)" 2>/dev/null; then
  echo "[run] the router is already running (pid $(cat var/run/router.pid))"
else
  # The previous run's log (and any traceback in it) is kept as router.log.1, not overwritten.
  if [ -s var/log/router.log ]; then mv -f var/log/router.log var/log/router.log.1; fi
  echo "[run] starting the router on 127.0.0.1:$PORT (log: var/log/router.log, the previous one: router.log.1)"
  nohup "$TRIAGE" serve --config config/local.yaml --port "$PORT" >var/log/router.log 2>&1 &
  echo $! >var/run/router.pid
fi
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  kill -0 "$(cat var/run/router.pid)" 2>/dev/null || { echo "[run] the router exited; see var/log/router.log" >&2; tail -20 var/log/router.log >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || { echo "[run] the router did not become ready in 120 s" >&2; exit 1; }

echo "[run] one request through the openai SDK:"
.venv/bin/python examples/quickstart.py --base-url "http://127.0.0.1:$PORT/v1"
cat <<EOT

Triage is running at http://127.0.0.1:$PORT/v1 (OpenAI-compatible).
  models:   curl -s http://127.0.0.1:$PORT/v1/models
  decision: curl -s http://127.0.0.1:$PORT/v1/route -H 'content-type: application/json' \\
              -d '{"model":"triage","messages":[{"role":"user","content":"Tom buys 3 notebooks at 4 dollars each and a pen for 2 dollars. How much does he spend in total?"}]}'
  metrics:  curl -s http://127.0.0.1:$PORT/metrics
  stop:     make down
EOT
