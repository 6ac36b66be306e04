#!/usr/bin/env bash
# The test suite with its real parts: the embedding model, a CPU vLLM server, a Prometheus server.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRIAGE_TEST_DATA="${DATA:-../shared/data}"
# Real servers and tools the tests use: Prometheus (+ promtool) and docker-compose (validates the compose file;
# PyPI's docker-compose needs PyYAML < 6, so Debian's).
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test] installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian may start prometheus as a service; the tests run their own on a free port.
    pkill -x prometheus 2>/dev/null || true
  else
    echo "[test] missing ${missing[*]} and not root: install the Debian packages first" >&2
    exit 1
  fi
fi
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "[test] pytest collected no tests" >&2; exit 1; fi
exit "$rc"
