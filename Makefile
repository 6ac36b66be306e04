# Triage: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
DATA ?= ../shared/data

.PHONY: setup run down test test-fast check lint bench

setup:            ## both environments: .venv (router) and .venv-vllm (CPU backend) + the local model
	scripts/setup-router.sh
	scripts/setup-backend.sh

run: setup        ## set up, calibrate, start the CPU vLLM backend and the router, send one request
	DATA=$(DATA) scripts/run-local.sh

down:             ## stop everything `make run` started
	scripts/stop-local.sh

test: setup       ## the whole test suite (CI runs exactly this)
	DATA=$(DATA) scripts/test.sh

test-fast: setup  ## the suite without the real vLLM server and the slow tests (a few minutes)
	DATA=$(DATA) scripts/test.sh -m "not vllm and not slow"

lint:
	.venv/bin/ruff check router calibration specialists tests bench
	.venv/bin/mypy --explicit-package-bases router calibration specialists bench

check: lint test
