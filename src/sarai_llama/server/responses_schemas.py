"""OpenAI's Responses API on the wire: the request body, the ``response`` object, output items.

Field names and shapes are OpenAI's (``POST /v1/responses``); input items,
tools and ``text.format`` stay plain dicts, checked where
:mod:`.responses_routes` reads them, so that an item or tool type this server
does not take gets a 400 naming it rather than a list of every type's fields.
"""

from __future__ import annotations

from typing import Any

from .blocks import Block
from .openai_schemas import Body

__all__ = ["ResponsesBody", "item", "response", "usage"]


class ResponsesBody(Body):
    """``/v1/responses``. ``store``, ``previous_response_id``, ``background`` and ``conversation``
    are read only to refuse them: this server keeps no responses (stateless)."""

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = False
    metadata: dict[str, Any] | None = None
    user: str | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    # llama.cpp's sampling extensions, as chat completions take them
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None


def usage(input_tokens: int, output_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """``cached_tokens``: prompt tokens whose KV cache a previous request left (prefix reuse)."""
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached_tokens},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def item(block: Block, item_id: str, text: str, status: str) -> dict[str, Any]:
    """One output item for an answer's ``block`` holding ``text`` (the whole text, or "" as it starts):
    a ``message`` with one ``output_text`` part, a ``function_call``, or a ``reasoning`` item."""
    if block.kind == "tool_call":
        return {"type": "function_call", "id": item_id, "call_id": block.call_id, "name": block.name,
                "arguments": text, "status": status}
    if block.kind == "reasoning":
        return {"type": "reasoning", "id": item_id, "summary": [], "status": status,
                "content": [part(block, text)] if text else []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [part(block, text)] if text else []}


def part(block: Block, text: str) -> dict[str, Any]:
    """The content part of a message (``output_text``) or reasoning item (``reasoning_text``)."""
    if block.kind == "reasoning":
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response(rid: str, created: int, model: str, body: ResponsesBody, status: str, output: list[dict[str, Any]],
             use: dict[str, Any] | None) -> dict[str, Any]:
    """The ``response`` object: ``status`` "in_progress", "completed" or "incomplete" (``max_output_tokens``
    reached); what the request set is echoed back, ``store`` is always false."""
    return {
        "id": rid, "object": "response", "created_at": created, "status": status, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": model,
        "output": output, "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": None, "store": False, "temperature": body.temperature, "top_p": body.top_p,
        "text": body.text or {"format": {"type": "text"}}, "tool_choice": body.tool_choice or "auto",
        "tools": body.tools or [], "truncation": "disabled", "metadata": body.metadata or {}, "user": body.user,
        "usage": use,
    }
