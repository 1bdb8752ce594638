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


# ------------------------------------------------------------------ the shapes as types
# llama-cpp-python's ``llama_types`` names for what the builders above return and what
# requests carry (re-exported by :mod:`sarai_llama.llama_types`). Keys a result may lack
# are in ``total=False`` classes (``NotRequired`` needs Python 3.11).

JsonType = None | int | str | bool | list[Any] | dict[str, Any]


class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class Embedding(TypedDict):
    index: int
    object: str
    embedding: list[float] | list[list[float]]


class CreateEmbeddingResponse(TypedDict):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class CompletionChoice(TypedDict):
    text: str
    index: int
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


CompletionUsage = Usage


class _CreateCompletionResponse(TypedDict):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]


class CreateCompletionResponse(_CreateCompletionResponse, total=False):
    usage: CompletionUsage  # absent from stream chunks


class ChatCompletionResponseFunctionCall(TypedDict):
    name: str
    arguments: str


class ChatCompletionMessageToolCallFunction(TypedDict):
    name: str
    arguments: str


class ChatCompletionMessageToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: ChatCompletionMessageToolCallFunction


ChatCompletionMessageToolCalls = list[ChatCompletionMessageToolCall]


class _ChatCompletionResponseMessage(TypedDict):
    content: str | None
    role: Literal["assistant", "function"]


class ChatCompletionResponseMessage(_ChatCompletionResponseMessage, total=False):
    tool_calls: ChatCompletionMessageToolCalls
    function_call: ChatCompletionResponseFunctionCall


class _ChatCompletionFunction(TypedDict):
    name: str
    parameters: dict[str, JsonType]


class ChatCompletionFunction(_ChatCompletionFunction, total=False):
    description: str


ChatCompletionTopLogprobToken = ChatTopLogprob
ChatCompletionLogprobToken = ChatTokenLogprob


class ChatCompletionLogprobs(TypedDict):
    content: list[ChatCompletionLogprobToken] | None
    refusal: list[ChatCompletionLogprobToken] | None


class ChatCompletionResponseChoice(TypedDict):
    index: int
    message: ChatCompletionResponseMessage
    logprobs: ChatCompletionLogprobs | None
    finish_reason: str | None


class CreateChatCompletionResponse(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: CompletionUsage


class ChatCompletionMessageToolCallChunkFunction(TypedDict):
    name: str | None
    arguments: str


class ChatCompletionMessageToolCallChunk(TypedDict):
    index: int
    id: str | None
    type: Literal["function"]
    function: ChatCompletionMessageToolCallChunkFunction


class ChatCompletionStreamResponseDeltaEmpty(TypedDict):
    pass


class ChatCompletionStreamResponseDeltaFunctionCall(TypedDict):
    name: str
    arguments: str


class ChatCompletionStreamResponseDelta(TypedDict, total=False):
    content: str | None
    function_call: ChatCompletionStreamResponseDeltaFunctionCall | None
    tool_calls: list[ChatCompletionMessageToolCallChunk] | None
    role: Literal["system", "user", "assistant", "tool"] | None


class ChatCompletionStreamResponseChoice(TypedDict):
    index: int
    delta: ChatCompletionStreamResponseDelta | ChatCompletionStreamResponseDeltaEmpty
    finish_reason: str | None
    logprobs: ChatCompletionLogprobs | None


class CreateChatCompletionStreamResponse(TypedDict):
    id: str
    model: str
    object: Literal["chat.completion.chunk"]
    created: int
    choices: list[ChatCompletionStreamResponseChoice]


class _ChatCompletionFunctions(TypedDict):
    name: str
    parameters: dict[str, JsonType]


class ChatCompletionFunctions(_ChatCompletionFunctions, total=False):
    description: str


class ChatCompletionFunctionCallOption(TypedDict):
    name: str


class _ChatCompletionRequestResponseFormat(TypedDict):
    type: Literal["text", "json_object"]


class ChatCompletionRequestResponseFormat(_ChatCompletionRequestResponseFormat, total=False):
    schema: JsonType


class ChatCompletionRequestMessageContentPartText(TypedDict):
    type: Literal["text"]
    text: str


class _ChatCompletionRequestMessageContentPartImageImageUrl(TypedDict):
    url: str


class ChatCompletionRequestMessageContentPartImageImageUrl(_ChatCompletionRequestMessageContentPartImageImageUrl,
                                                           total=False):
    detail: Literal["auto", "low", "high"]


class ChatCompletionRequestMessageContentPartImage(TypedDict):
    type: Literal["image_url"]
    image_url: str | ChatCompletionRequestMessageContentPartImageImageUrl


ChatCompletionRequestMessageContentPart = (
    ChatCompletionRequestMessageContentPartText | ChatCompletionRequestMessageContentPartImage
)


class ChatCompletionRequestSystemMessage(TypedDict):
    role: Literal["system"]
    content: str | None


class ChatCompletionRequestUserMessage(TypedDict):
    role: Literal["user"]
    content: str | list[ChatCompletionRequestMessageContentPart] | None


class ChatCompletionRequestAssistantMessageFunctionCall(TypedDict):
    name: str
    arguments: str


class _ChatCompletionRequestAssistantMessage(TypedDict):
    role: Literal["assistant"]


class ChatCompletionRequestAssistantMessage(_ChatCompletionRequestAssistantMessage, total=False):
    content: str | None
    tool_calls: ChatCompletionMessageToolCalls
    function_call: ChatCompletionRequestAssistantMessageFunctionCall  # deprecated by OpenAI


class ChatCompletionRequestToolMessage(TypedDict):
    role: Literal["tool"]
    content: str | None
    tool_call_id: str


class ChatCompletionRequestFunctionMessage(TypedDict):
    role: Literal["function"]
    content: str | None
    name: str


ChatCompletionRequestMessage = (
    ChatCompletionRequestSystemMessage | ChatCompletionRequestUserMessage | ChatCompletionRequestAssistantMessage
    | ChatCompletionRequestToolMessage | ChatCompletionRequestFunctionMessage
)


class ChatCompletionRequestFunctionCallOption(TypedDict):
    name: str


ChatCompletionRequestFunctionCall = Literal["none", "auto"] | ChatCompletionRequestFunctionCallOption
ChatCompletionFunctionParameters = dict[str, JsonType]


class _ChatCompletionToolFunction(TypedDict):
    name: str
    parameters: ChatCompletionFunctionParameters


class ChatCompletionToolFunction(_ChatCompletionToolFunction, total=False):
    description: str


class ChatCompletionTool(TypedDict):
    type: Literal["function"]
    function: ChatCompletionToolFunction


class ChatCompletionNamedToolChoiceFunction(TypedDict):
    name: str


class ChatCompletionNamedToolChoice(TypedDict):
    type: Literal["function"]
    function: ChatCompletionNamedToolChoiceFunction


ChatCompletionToolChoiceOption = Literal["none", "auto", "required"] | ChatCompletionNamedToolChoice

# The older names llama-cpp-python still exports.
EmbeddingData = Embedding
CompletionChunk = CreateCompletionResponse
Completion = CreateCompletionResponse
CreateCompletionStreamResponse = CreateCompletionResponse
ChatCompletionMessage = ChatCompletionResponseMessage
ChatCompletionChoice = ChatCompletionResponseChoice
ChatCompletion = CreateChatCompletionResponse
ChatCompletionChunkDeltaEmpty = ChatCompletionStreamResponseDeltaEmpty
ChatCompletionChunkChoice = ChatCompletionStreamResponseChoice
ChatCompletionChunkDelta = ChatCompletionStreamResponseDelta
ChatCompletionChunk = CreateChatCompletionStreamResponse
ChatCompletionStreamResponse = CreateChatCompletionStreamResponse
ChatCompletionResponseFunction = ChatCompletionFunction
ChatCompletionFunctionCall = ChatCompletionResponseFunctionCall

#: llama-cpp-python's ``llama_types`` names, for :mod:`sarai_llama.llama_types`.
TYPE_NAMES = [
    "JsonType",
    "EmbeddingUsage",
    "Embedding",
    "CreateEmbeddingResponse",
    "CompletionLogprobs",
    "CompletionChoice",
    "CompletionUsage",
    "CreateCompletionResponse",
    "ChatCompletionResponseFunctionCall",
    "ChatCompletionResponseMessage",
    "ChatCompletionFunction",
    "ChatCompletionTopLogprobToken",
    "ChatCompletionLogprobToken",
    "ChatCompletionLogprobs",
    "ChatCompletionResponseChoice",
    "CreateChatCompletionResponse",
    "ChatCompletionMessageToolCallChunkFunction",
    "ChatCompletionMessageToolCallChunk",
    "ChatCompletionStreamResponseDeltaEmpty",
    "ChatCompletionStreamResponseDeltaFunctionCall",
    "ChatCompletionStreamResponseDelta",
    "ChatCompletionStreamResponseChoice",
    "CreateChatCompletionStreamResponse",
    "ChatCompletionFunctions",
    "ChatCompletionFunctionCallOption",
    "ChatCompletionRequestResponseFormat",
    "ChatCompletionRequestMessageContentPartText",
    "ChatCompletionRequestMessageContentPartImageImageUrl",
    "ChatCompletionRequestMessageContentPartImage",
    "ChatCompletionRequestMessageContentPart",
    "ChatCompletionRequestSystemMessage",
    "ChatCompletionRequestUserMessage",
    "ChatCompletionMessageToolCallFunction",
    "ChatCompletionMessageToolCall",
    "ChatCompletionMessageToolCalls",
    "ChatCompletionRequestAssistantMessageFunctionCall",
    "ChatCompletionRequestAssistantMessage",
    "ChatCompletionRequestToolMessage",
    "ChatCompletionRequestFunctionMessage",
    "ChatCompletionRequestMessage",
    "ChatCompletionRequestFunctionCallOption",
    "ChatCompletionRequestFunctionCall",
    "ChatCompletionFunctionParameters",
    "ChatCompletionToolFunction",
    "ChatCompletionTool",
    "ChatCompletionNamedToolChoiceFunction",
    "ChatCompletionNamedToolChoice",
    "ChatCompletionToolChoiceOption",
    "EmbeddingData",
    "CompletionChunk",
    "Completion",
    "CreateCompletionStreamResponse",
    "ChatCompletionMessage",
    "ChatCompletionChoice",
    "ChatCompletion",
    "ChatCompletionChunkDeltaEmpty",
    "ChatCompletionChunkChoice",
    "ChatCompletionChunkDelta",
    "ChatCompletionChunk",
    "ChatCompletionStreamResponse",
    "ChatCompletionResponseFunction",
    "ChatCompletionFunctionCall",
]
