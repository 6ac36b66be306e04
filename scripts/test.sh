#!/usr/bin/env bash
# The test suite with its real parts: the embedding model, a CPU vLLM server, a Prometheus server.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRIAGE_TEST_DATA="${DATA:-../shared/data}"
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test] installing Debian's prometheus (a real server for the observability tests)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus >/dev/null
    # Debian starts it as a service where it can; the tests run their own on a free port.
    pkill -x prometheus 2>/dev/null || true
  else
    echo "[test] prometheus is not installed and this is not root: install Debian's 'prometheus' package" >&2
    exit 1
  fi
fi
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "[test] pytest collected no tests" >&2; exit 1; fi
exit "$rc"
