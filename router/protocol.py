"""Request and response models of Triage's OpenAI-compatible API.

Requests validate the fields Triage reads and keep every other field (``extra="allow"``) so it passes
through to the backend unchanged. Fields follow the order of OpenAI's reference; Triage's own extensions
are in the marked block.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KNOB_ALIASES = {"quality": 1.0, "balanced": 0.5, "cost": 0.0}
VIRTUAL_MODEL = "triage"


def _invalid_unicode(value: Any) -> bool:
    """True if a string anywhere in ``value`` cannot be encoded as UTF-8 (a lone UTF-16 surrogate, which JSON's
    ``\\udc80`` escape can carry): neither the embedder's tokenizer nor a backend could read it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_invalid_unicode(k) or _invalid_unicode(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_invalid_unicode(v) for v in value)
    if isinstance(value, BaseModel):
        return _invalid_unicode(value.__dict__) or _invalid_unicode(value.__pydantic_extra__ or {})
    return False


class TriageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    knob: float | None = Field(None, ge=0, le=1, description="1 = most accurate, 0 = cheapest acceptable")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(min_length=1)
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "\n".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    user: str | None = None
    # --- Triage extensions -------------------------------------------------------------------
    triage: TriageOptions | None = None

    @model_validator(mode="after")
    def _valid_unicode(self) -> _Common:
        # Refused here, per request: text the tokenizer cannot read must never reach a shared embedding batch.
        if _invalid_unicode(self):
            raise ValueError("the request contains invalid Unicode (a lone UTF-16 surrogate such as \\udc80); "
                             "send valid UTF-8 text")
        return self

    def backend_body(self, backend_model: str) -> dict[str, Any]:
        """What the backend receives: the client's body, its own model id, no Triage extensions."""
        body = self.model_dump(exclude_unset=True, exclude={"triage"})
        body["model"] = backend_model
        return body


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def routing_text(self) -> str:
        """The last user turn, with the system prompt before it: what places the query."""
        system = [m.text() for m in self.messages if m.role in ("system", "developer")]
        users = [m.text() for m in self.messages if m.role == "user"]
        last = users[-1] if users else self.messages[-1].text()
        return "\n".join([*system[:1], last]).strip()

    def prompt_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)


class CompletionRequest(_Common):
    # Text, texts, token ids, or lists of token ids (as OpenAI and vLLM accept); token ids are routed by default.
    prompt: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], int | list):
            rows = value if isinstance(value[0], list) else [value]
            if not all(rows) or any(t < 0 for row in rows for t in row):
                raise ValueError("prompt: token ids must be non-empty lists of non-negative integers")
            return value
        if not (value if isinstance(value, str) else "".join(value)).strip():
            raise ValueError("prompt is empty")
        return value

    def token_ids(self) -> bool:
        """The prompt is token ids: there is no text to embed."""
        return isinstance(self.prompt, list) and not isinstance(self.prompt[0], str)

    def routing_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        last = self.prompt[-1]
        return last if isinstance(last, str) else ""

    def prompt_chars(self) -> int:
        if isinstance(self.prompt, str):
            return len(self.prompt)
        # A token id stands for a few characters; count each as one for the size limit.
        return sum(len(p) if isinstance(p, str | list) else 1 for p in self.prompt)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=128)
    score: float = Field(ge=0, le=1)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "triage"
    # --- Triage extensions -------------------------------------------------------------------
    role: str | None = None
    knob: float | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
