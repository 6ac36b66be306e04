"""The backends' part of the settings tree: each model's replicas, prices and timeouts; health checks, connection
pools and the pool's queue budget. ``router.settings.Settings`` holds them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


class Prices(BaseModel):
    """USD per one million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class Timeouts(BaseModel):
    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(120.0, gt=0, description="seconds until the backend starts answering")
    total: float = Field(600.0, gt=0)


class DiscoverSettings(BaseModel):
    """Replicas found by DNS: every address ``dns`` resolves to (a Kubernetes headless Service) is one replica."""

    dns: str = Field(min_length=1, pattern=r"^[A-Za-z0-9.-]+$")
    port: int = Field(8000, ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    path: str = Field("/v1", pattern=r"^(/[A-Za-z0-9._~-]*)*$")
    refresh_s: float = Field(5.0, gt=0, description="seconds between lookups")

    def url_for(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{self.path}".rstrip("/")


class BackendSettings(BaseModel):
    """One OpenAI-compatible backend (one model), served by one or more replicas. ``name`` is the artifact's model
    name for this backend. Give ``base_url`` (one replica), ``replicas`` (several), or ``discover`` (by DNS)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._/:-]+$")
    base_url: str = Field(description="OpenAI base URL, e.g. http://127.0.0.1:8101/v1; with replicas: or "
                          "discover: and no base_url, the first replica's URL or the discovered name's")
    replicas: list[str] = Field(default_factory=list, description="OpenAI base URLs of replicas serving this "
                                "model; requests go to the one with the fewest in flight")
    discover: DiscoverSettings | None = None
    model: str = Field(description="the model id the backend serves (substituted into requests)")
    role: Literal["specialist", "generalist"] = "specialist"
    price_per_mtok: Prices = Field(default_factory=Prices)
    api_key: SecretStr | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    # How to start it; read only by `triage specialists` (schema in specialists/fleet.py).
    launch: dict[str, Any] | None = None
    stand_in_for: str | None = Field(None, description="label: this backend is a local stand-in for a model")
    max_concurrency: int | None = Field(None, ge=1, description="sequences one replica serves at a time (vLLM's "
                                        "max_num_seqs); beyond it requests queue. None: known only from a scrape")

    @model_validator(mode="before")
    @classmethod
    def _default_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("base_url"):
            replicas, discover = data.get("replicas"), data.get("discover")
            if isinstance(replicas, list) and replicas and isinstance(replicas[0], str):
                data = {**data, "base_url": replicas[0]}
            elif isinstance(discover, dict | DiscoverSettings):
                found = DiscoverSettings.model_validate(discover)
                data = {**data, "base_url": found.url_for(found.dns)}
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http(value)

    @field_validator("replicas")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        urls = [_http(v) for v in values]
        if len(set(urls)) != len(urls):
            raise ValueError("a replica URL is listed twice")
        return urls

    @model_validator(mode="after")
    def _one_source(self) -> BackendSettings:
        if self.replicas and self.discover is not None:
            raise ValueError("give replicas: or discover:, not both")
        return self

    def replica_urls(self) -> list[str]:
        """The configured replicas: ``base_url`` first, then ``replicas`` (a DNS name's are found at run time)."""
        return list(dict.fromkeys([self.base_url, *self.replicas]))


def _http(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class HealthSettings(BaseModel):
    probe_interval_s: float = Field(10.0, ge=0, description="0 disables the background /v1/models probe")
    failure_threshold: int = Field(3, ge=1, description="consecutive failures that open a circuit")
    open_seconds: float = Field(15.0, gt=0, description="time before a half-open probe")
    retries: int = Field(1, ge=0, description="other backends tried before the first byte")


class ConnectionSettings(BaseModel):
    max_per_backend: int = Field(256, ge=1, description="open connections to one backend, at most")
    pools: int = Field(8, ge=1, description="connection pools per backend, the least busy taken first; one large "
                       "pool is slow to serve a burst (router/connections.py)")


class PoolSettings(BaseModel):
    """Load-aware routing (router/admission.py): a request spills over to the next best eligible model when the
    best one's replicas would keep it queued past its budget, waits in a bounded queue when every one would,
    and gets 429 with retry-after when the wait runs out."""

    max_queue_ms: float | None = Field(None, ge=0, description="default budget for the expected queue delay; "
                                       "None: choose by quality and price only (requests may still set one)")
    queue_size: int = Field(64, ge=0, description="requests that may wait for room at once; more get 429")
    queue_timeout_s: float = Field(2.0, ge=0, description="the longest a request waits for room before 429")
    scrape_interval_s: float = Field(1.0, ge=0, description="vLLM /metrics of each replica scraped this often "
                                     "(requests waiting and running); 0 disables: Triage's own in-flight counts")
    service_s: float = Field(1.0, gt=0, description="a request's service time until one has been measured")
