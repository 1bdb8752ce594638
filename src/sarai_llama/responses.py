"""OpenAI-shaped results as pure builders: completions, chat, chunks, embeddings, usage, ids.

``Llama`` and the server build every dict they return here, so both speak the
same shapes (those of the OpenAI API and llama-cpp-python). No model, no I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from .engine_io import TokenLogprob

__all__ = [
    "ChatLogprobs",
    "CompletionLogprobs",
    "Usage",
    "chat_chunk",
    "chat_completion",
    "chat_id",
    "chat_logprobs",
    "completion",
    "completion_chunk",
    "completion_id",
    "completion_logprobs",
    "embeddings",
    "usage",
]

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"] | None


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(TypedDict):
    """llama-cpp-python's / OpenAI's legacy completion logprobs (one list entry per token)."""

    tokens: list[str]
    text_offset: list[int]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]


class ChatTopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(TypedDict):
    """The chat API's logprobs: ``{"content": [...]}``, one entry per token."""

    content: list[ChatTokenLogprob]


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4()}"


def chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4()}"


def now() -> int:
    """``created``: seconds since the epoch."""
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_logprobs(records: Sequence[TokenLogprob] | None) -> CompletionLogprobs | None:
    """The engine's records in the completions API's (and llama-cpp-python's) shape: parallel
    lists, one entry per token; None when logprobs were not asked for."""
    if records is None:
        return None
    return {"tokens": [r.token for r in records], "text_offset": [r.text_offset for r in records],
            "token_logprobs": [r.logprob for r in records], "top_logprobs": [dict(r.top) for r in records]}


def completion(cid: str, created: int, model: str, text: str, finish: FinishReason,
               logprobs: Sequence[TokenLogprob] | None, use: Usage, index: int = 0) -> dict[str, Any]:
    """A ``text_completion`` with one choice, number ``index``."""
    return {
        "id": cid, "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": text, "index": index, "logprobs": completion_logprobs(logprobs),
                     "finish_reason": finish}],
        "usage": use,
    }


def completion_chunk(cid: str, created: int, model: str, text: str, finish: FinishReason,
                     logprobs: Sequence[TokenLogprob] | None, index: int = 0) -> dict[str, Any]:
    """One streamed ``text_completion`` chunk of choice ``index``."""
    return {
        "id": cid, "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": text, "index": index, "logprobs": completion_logprobs(logprobs),
                     "finish_reason": finish}],
    }


def chat_logprobs(records: Sequence[TokenLogprob] | None) -> ChatLogprobs | None:
    """The engine's records in the chat API's ``{"content": [...]}`` shape."""
    if records is None:
        return None
    content: list[ChatTokenLogprob] = []
    for r in records:
        alternatives: list[ChatTopLogprob] = [
            {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in r.top
        ]
        content.append({"token": r.token, "logprob": float(r.logprob), "bytes": list(r.token.encode("utf-8")),
                        "top_logprobs": alternatives})
    return {"content": content}


def chat_completion(cid: str, created: int, model: str, content: str | dict[str, Any], finish: FinishReason,
                    logprobs: Sequence[TokenLogprob] | None, use: Usage, index: int = 0) -> dict[str, Any]:
    """``content``: the answer's text, or a whole assistant message (with ``tool_calls``); one
    choice, number ``index``."""
    message = content if isinstance(content, dict) else {"role": "assistant", "content": content}
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": index, "message": message,
                     "logprobs": chat_logprobs(logprobs), "finish_reason": finish}],
        "usage": use,
    }


def chat_chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: FinishReason,
               logprobs: Sequence[TokenLogprob] | None = None, index: int = 0) -> dict[str, Any]:
    """One streamed ``chat.completion.chunk`` of choice ``index``."""
    return {
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": chat_logprobs(logprobs),
                     "finish_reason": finish}],
    }


def embeddings(vectors: list[list[float]], model: str, n_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
