#!/usr/bin/env bash
# The router's environment (.venv): torch 2.13.0 CPU first (a bare `torch` pulls a multi-GB CUDA build),
# then Triage with its dev extras. Idempotent and quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.triage-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing torch 2.13.0 (CPU) and Triage into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev,onnx-export,static]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, sentence_transformers, fastapi, openai, openvino" \
    || { echo "[setup] the router environment is broken; see the pip output above" >&2; exit 1; }
  touch "$stamp"
fi
# The same embedding model exported to ONNX (same vectors; no torch at run time), and its int8 copy (its own
# vectors: an option, bench/README.md); both reused when up to date.
.venv/bin/python -m router.embedding_tools.export --out models/minilm-onnx --int8-out models/minilm-onnx-int8
# The static (model2vec) table distilled from it: an option for speed (bench/README.md says what it costs).
# TQDM_DISABLE: model2vec draws a progress bar over ~30k tokens, which a log file keeps as hundreds of updates.
[ -f models/minilm-static/triage.json ] \
  || TQDM_DISABLE=1 .venv/bin/python -m router.embedding_tools.distil --out models/minilm-static
echo "[setup] router environment ready (.venv, models/minilm-onnx, models/minilm-onnx-int8, models/minilm-static)"
