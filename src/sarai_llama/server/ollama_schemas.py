"""Ollama's API on the wire: request bodies, the model's description, answers, the error shape.

Field names and shapes are Ollama's (``/api/chat``, ``/api/generate``, ``/api/embed``,
``/api/tags``, ``/api/show``, ...); :mod:`.ollama_routes` maps them onto the shared
request path. Unknown fields are ignored, as Ollama ignores them; ``options`` keys
this server has no use for (``num_gpu``, ``num_thread``, ``use_mmap``, ...) too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from .errors import APIError
from .openai_schemas import Body

__all__ = ["VERSION", "ChatBody", "EmbedBody", "EmbeddingsBody", "GenerateBody", "Generation", "Message", "ModelBody", "Options",
           "error_reply", "metadata_value", "now", "parameter_size", "quantization"]

#: The version ``/api/version`` reports: clients check it against the least Ollama they need
#: (Open WebUI and Continue compare it; tools need 0.3, ``think`` 0.9), so it is a recent 0.x
#: release's number, not this package's.
VERSION = "0.9.0"

#: llama.cpp's ``llama_ftype`` (``general.file_type``) values by the names Ollama shows.
QUANTIZATIONS = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}


class Options(Body):
    """``options``: Ollama's names for the sampling fields, the budget and the context."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    seed: int | None = None
    num_predict: int | None = None  # -1: until the context ends; -2: fill the context
    num_ctx: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None


class ModelBody(Body):
    """A body naming a model: ``model``, or ``name`` as older clients send it."""

    model: str | None = None
    name: str | None = None

    @property
    def model_name(self) -> str | None:
        return self.model or self.name


class Generation(ModelBody):
    """Fields shared by chat and generate."""

    format: str | dict[str, Any] | None = None  # "json" or a JSON schema
    options: Options | None = None
    stream: bool | None = True  # Ollama streams unless told not to
    keep_alive: str | float | None = None  # accepted: the model stays loaded for the server's life
    think: bool | str | None = None  # True/False, or "low"/"medium"/"high" (gpt-oss)


class Message(Body):
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"function": {"name", "arguments": {...}}}]
    tool_name: str | None = None  # a "tool" message: the tool that answered


class ChatBody(Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateBody(Generation):
    prompt: str | None = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool | None = False
    images: list[Any] | None = None
    context: list[int] | None = None


class EmbedBody(ModelBody):
    input: str | list[str] = ""
    truncate: bool | None = True
    dimensions: int | None = None
    options: Options | None = None
    keep_alive: str | float | None = None


class EmbeddingsBody(ModelBody):
    prompt: str = ""
    options: Options | None = None
    keep_alive: str | float | None = None


def error_reply(exc: APIError) -> tuple[int, dict[str, Any]]:
    """Ollama's error shape, ``{"error": "message"}``, with the error's own status."""
    return exc.status, {"error": exc.message}


def now() -> str:
    """The time as Ollama writes ``created_at``: RFC 3339 with the offset."""
    return dt.datetime.now(dt.timezone.utc).isoformat()


def quantization(file_type: str | None) -> str:
    """``general.file_type`` as Ollama's ``quantization_level`` (``Q4_K_M``, ``F16``, ...)."""
    if file_type is None or not file_type.isdigit():
        return "unknown"
    return QUANTIZATIONS.get(int(file_type), "unknown")


def parameter_size(n_params: int) -> str:
    """The parameter count as Ollama's ``parameter_size``: ``270M``, ``3.2B``."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n_params >= scale:
            value = n_params / scale
            text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
            return text.removesuffix(".0") + unit
    return str(n_params)


def metadata_value(text: str) -> Any:
    """A GGUF metadata value (llama.cpp gives them as text) as the JSON type Ollama shows it in."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
