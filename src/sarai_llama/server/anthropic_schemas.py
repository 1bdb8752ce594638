"""Anthropic's Messages API on the wire: request bodies, answers, stream events, the error shape.

Field names and shapes are Anthropic's (``/v1/messages``, API version
2023-06-01); :mod:`.anthropic_routes` maps them onto the shared request path.
Content blocks stay plain dicts (checked where they are read, with the field
named in the 400) so that block types this server does not take get a clear
message instead of a validation error listing every block type's fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .errors import APIError
from .openai_schemas import Body

__all__ = ["CountTokensBody", "MessagesBody", "error_reply", "message"]


class Message(Body):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class Tool(Body):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: str | None = None  # "custom" or absent; server tools (web search, bash, ...) are refused


class ToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutputConfig(Body):
    """Structured outputs: ``format`` ``{"type": "json_schema", "schema": {...}}`` (enforced by a grammar);
    ``effort`` is accepted and has no effect here."""

    format: dict[str, Any] | None = None
    effort: str | None = None


class CountTokensBody(Body):
    """``/v1/messages/count_tokens``: what the prompt is made of."""

    model: str | None = None
    messages: list[Message]
    system: str | list[dict[str, Any]] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class MessagesBody(CountTokensBody):
    """``/v1/messages``. ``max_tokens`` is required, as Anthropic requires it; ``metadata`` is accepted
    and ignored (it only tags requests for Anthropic's abuse detection)."""

    max_tokens: int
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    # llama.cpp's sampling extensions, as chat completions take them
    min_p: float | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens}


def message(mid: str, model: str, content: list[dict[str, Any]], stop_reason: str | None,
            stop_sequence: str | None, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """An assistant ``message`` object (the answer, or the stream's ``message_start`` with no content)."""
    return {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage(input_tokens, output_tokens)}


#: Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def error_reply(exc: APIError) -> tuple[int, dict[str, Any]]:
    """Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``, and its status.

    A full queue is Anthropic's 529 ``overloaded_error`` (the SDK's ``OverloadedError``);
    a server loading or draining stays 503 (the status load balancers and Kubernetes
    read), typed ``overloaded_error`` too. Both keep ``Retry-After`` and
    ``x-should-retry: false`` (:meth:`ServerState.retry_headers`).
    """
    status = 529 if exc.code == "server_busy" else exc.status
    if status == 503 and exc.code != "server_failed":
        type_ = "overloaded_error"
    else:
        type_ = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": type_, "message": exc.message}}

