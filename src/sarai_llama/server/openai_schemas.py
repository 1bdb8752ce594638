"""OpenAI's request bodies for completions and chat, with llama-server's extension fields;
``Body``, the base of every route's body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Body", "ChatBody", "CompletionBody", "Generation", "Message", "StreamOptions"]


class Body(BaseModel):
    # Unknown fields are ignored, as llama-server and OpenAI do: clients written for
    # either (and their newer fields) keep working.
    model_config = ConfigDict(extra="ignore")


class StreamOptions(Body):
    include_usage: bool = False


class Generation(Body):
    """Fields shared by completions and chat: OpenAI's, then llama.cpp's extensions."""

    model: str | None = None
    max_tokens: int | None = None
    n_predict: int | None = None  # llama-server's name; -1 = until the context ends
    temperature: float | None = None
    top_p: float | None = None
    # Optional with defaults: some clients send explicit nulls for fields they leave unset.
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None
    # llama.cpp extensions
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    penalty_last_n: int | None = None
    mirostat: int | None = None
    mirostat_mode: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    grammar: str | None = None
    ignore_eos: bool | None = False
    cache_prompt: bool | None = True  # prefix reuse is always on; accepted for llama-server clients
    n_probs: int | None = None
    response_format: dict[str, Any] | None = None
    json_schema: dict[str, Any] | None = None
    # llama-server's per-request speculation limits (None: the server's --draft-max / --draft-min)
    speculative_n_max: int | None = Field(None, alias="speculative.n_max")
    speculative_n_min: int | None = Field(None, alias="speculative.n_min")


class CompletionBody(Generation):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None


class Message(Body):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a "tool" message answers this call


class ChatBody(Generation):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None  # OpenAI's deprecated form of tools
    function_call: str | dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # llama-server's extra template variables
    reasoning_format: str | None = None  # llama-server's per-request --reasoning-format
