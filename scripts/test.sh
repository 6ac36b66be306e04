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
# The scale-out tests: Redis (shared state), haproxy (the balancer in front of 3 replicas), kubectl (kustomize).
# Debian ships kubectl as kubernetes-client. haproxy installs to /usr/sbin.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test] installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    # The tests start their own servers on free ports: keep Debian from starting the packages' services
    # (policy-rc.d exit 101 = "do not start"), so nothing has to be stopped afterwards, and nobody else's
    # process is touched.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; own_policy=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
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
