"""The request side of ``safereason serve``: OpenAI's chat request as far as it is honoured, validated into
:class:`ChatRequest`, and :class:`ApiError`, the OpenAI-style error every refusal of a request becomes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safereason.errors import SafereasonError


class ServeError(SafereasonError):
    """The server cannot start as configured (no API key for a public address, port in use, a binary scorer)."""


class ApiError(Exception):
    """An error answered to the client as an OpenAI-style error object."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


# -- request schema ----------------------------------------------------------------------------------

class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_Part] | None = None

    def text(self, index: int) -> str:
        if isinstance(self.content, list):
            if any(p.type != "text" or p.text is None for p in self.content):
                raise ApiError(400, f"messages[{index}]: only text content parts are supported",
                               param=f"messages.{index}.content")
            return "\n".join(p.text or "" for p in self.content)
        return self.content or ""


#: most completions one request may ask for (``n``): each is a full defended generation
MAX_N = 8


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool | None = None


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request that is honoured; unknown fields are ignored, but fields whose
    meaning would be silently dropped (tools, logprobs, JSON mode, n > 1 with streaming) are refused in
    :meth:`check`."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)
    model: str | None = None
    messages: list[_Message]
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)  # vLLM's extension
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def check(self) -> None:
        if (self.n or 1) > MAX_N:
            raise ApiError(400, f"n={self.n} is over this server's limit of {MAX_N} completions per request",
                           param="n")
        if self.stream and (self.n or 1) > 1:
            raise ApiError(400, "n > 1 is served without streaming only; send stream=false, or one streaming "
                                "request per completion", param="n")
        if self.stream_options is not None and not self.stream:
            raise ApiError(400, "stream_options is only allowed with stream=true", param="stream_options")
        if self.tools or self.functions:
            raise ApiError(400, "tools and function calling are not supported", param="tools")
        if self.logprobs:
            raise ApiError(400, "logprobs are not supported", param="logprobs")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ApiError(400, "only response_format type 'text' is supported", param="response_format")
        if not self.messages:
            raise ApiError(400, "messages must hold at least one user message", param="messages")
        for s in self.stops():
            if not s:
                raise ApiError(400, "stop strings must be non-empty", param="stop")
        if len(self.stops()) > 16:
            raise ApiError(400, "at most 16 stop strings", param="stop")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


def parse_request(body: bytes) -> ChatRequest:
    """Validate a request body; every problem becomes a 400 naming the offending field."""
    try:
        req = ChatRequest.model_validate_json(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "json_invalid":
            raise ApiError(400, f"request body is not valid JSON: {msg.removeprefix('Invalid JSON: ')}") from None
        raise ApiError(400, f"invalid request: {loc + ': ' if loc else ''}{msg}", param=loc or None) from None
    req.check()
    return req
