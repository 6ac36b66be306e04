"""Request and response models of Triage's OpenAI-compatible API.

Requests validate the fields Triage reads and keep every other field (``extra="allow"``) so it passes
through to the backend unchanged. Fields follow the order of OpenAI's reference; Triage's own extensions
are in the marked block.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Self

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
    session: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                                description="conversation id: later turns stay on its backend (router/affinity.py)")
    fresh: bool = Field(False, description="decide this turn anew, ignoring the conversation's backend")
    max_queue_ms: float | None = Field(None, ge=0, le=600_000, description="queue budget: a model whose expected "
                                       "wait is longer hands the request to the next eligible one")


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


class _ValidText(BaseModel):
    """A request body whose text the embedder and the backends can read."""

    @model_validator(mode="after")
    def _valid_unicode(self) -> Self:
        # Refused here, per request: text the tokenizer cannot read must never reach a shared embedding batch.
        if _invalid_unicode(self):
            raise ValueError("the request contains invalid Unicode (a lone UTF-16 surrogate such as \\udc80); "
                             "send valid UTF-8 text")
        return self


class _Common(_ValidText):
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
        """The last user turn, with the system prompt before it: what places the query. Assistant turns and tool
        results are never routing text: in an agent loop every turn after the first routes on the user's ask."""
        system = [m.text() for m in self.messages if m.role in ("system", "developer")]
        users = [m.text() for m in self.messages if m.role == "user"]
        last = users[-1] if users else self.messages[-1].text()
        return "\n".join([*system[:1], last]).strip()

    def conversation_start(self) -> str | None:
        """The system prompt and first user turn: what identifies a conversation whose client resends its
        history (the same on every turn of it)."""
        system = next((m.text() for m in self.messages if m.role in ("system", "developer")), "")
        first = next((m.text() for m in self.messages if m.role == "user"), "")
        return system + "\x00" + first

    def later_turn(self) -> bool:
        """The conversation has turns before this one (an assistant answer or a tool result)."""
        return any(m.role in ("assistant", "tool") for m in self.messages)

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

    def conversation_start(self) -> str | None:
        return None  # a completion prompt carries no turns

    def later_turn(self) -> bool:
        return False

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


class ResponsesRequest(_ValidText):
    """OpenAI's Responses API (``POST /v1/responses``): what Triage reads; everything else passes through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    previous_response_id: str | None = Field(None, min_length=1, max_length=256)
    stream: bool | None = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    # --- Triage extensions -------------------------------------------------------------------
    triage: TriageOptions | None = None

    # What the limits read, under the names the other endpoints use.
    n: None = None
    stream_options: None = None

    @property
    def max_tokens(self) -> int | None:
        return self.max_output_tokens

    def _texts(self, role: str) -> list[str]:
        if isinstance(self.input, str):
            return [self.input] if role == "user" else []
        out = []
        for item in self.input:
            if item.get("role") != role or item.get("type", "message") != "message":
                continue  # function calls, their outputs and reasoning items are not routing text
            content = item.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out.append("\n".join(str(p.get("text", "")) for p in content
                                     if isinstance(p, dict) and p.get("type") in ("input_text", "text")))
        return out

    def routing_text(self) -> str:
        """``instructions`` and the last user message of ``input``."""
        users = self._texts("user")
        system = [self.instructions] if self.instructions else self._texts("system")[:1] or self._texts("developer")[:1]
        return "\n".join([*system, users[-1] if users else ""]).strip()

    def conversation_start(self) -> str | None:
        users = self._texts("user")
        return (self.instructions or "") + "\x00" + (users[0] if users else "")

    def later_turn(self) -> bool:
        return bool(self.previous_response_id) or (not isinstance(self.input, str) and any(
            i.get("role") == "assistant" or i.get("type") in ("function_call", "function_call_output")
            for i in self.input))

    def prompt_chars(self) -> int:
        return len(self.instructions or "") + (len(self.input) if isinstance(self.input, str) else sum(
            len(json.dumps(item)) for item in self.input))

    def backend_body(self, backend_model: str) -> dict[str, Any]:
        body = self.model_dump(exclude_unset=True, exclude={"triage", "n", "stream_options"})
        body["model"] = backend_model
        return body


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
