"""Anthropic's Messages API: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

A body becomes OpenAI-shaped chat messages and tools (the system prompt first,
``tool_use`` blocks an assistant's ``tool_calls``, ``tool_result`` blocks
``tool`` messages), goes through the model's own chat template and the shared
request path (:mod:`.requests`, :mod:`.runs`), and the answer's blocks
(:class:`.blocks.Blocks`) come back as Anthropic content blocks: one message, or
Anthropic's event sequence through the one SSE writer. Errors are in Anthropic's
shape (:func:`.anthropic_schemas.error_reply`, registered for these paths).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response

from .. import images
from ..chat_completion import ChatDeltas
from ..chat_template import RenderedChat
from .anthropic_schemas import CountTokensBody, MessagesBody, error_reply, message
from .blocks import Block, Blocks, Event, new_id, text_content
from .errors import APIError, bad, invalid
from .lifecycle import ServerState
from .requests import Sampling, max_tokens, prepare, render_chat, stops
from .runs import Run, collect, start, stream
from .served import Served
from .sse import EventStream, Item, event, write

__all__ = ["PREFIX", "router"]

#: The path under which errors take Anthropic's shape.
PREFIX = "/v1/messages"
#: Anthropic's keep-alive event, sent when a stream has had nothing to say for a while.
PING = event({"type": "ping"}, "ping")


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    async def messages(body: MessagesBody, http: HTTPRequest) -> Response:
        served = await state.acquire(body.model, http)
        rendered, tokens = await render(served, body, output_format(body))
        max_new = max_tokens(served, body.max_tokens, len(tokens))
        user_stops = stops(body.stop_sequences, "stop_sequences")
        sampling = Sampling(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
                            seed=body.seed, logit_bias=body.logit_bias)
        prepared = prepare(served, sampling, tokens, max_new, stop=user_stops, rendered=rendered)
        mid = new_id("msg_")
        (run,) = start(served, [prepared], 1, http, mid, bool(body.stream))
        if body.stream:
            await run.submitted()
            return EventStream(write([events(run, mid, served.name, user_stops)], ping=PING,
                                     error=lambda exc: event(error_reply(exc)[1], "error")), run.close)
        got = await collect(run)
        blocks = Blocks(tool_use_id)
        blocks.feed(prepared.output().update(got.text, partial=False))  # type: ignore[union-attr]
        blocks.close()
        reason, sequence = stop_reason(got.finish_reason, blocks.has_tool_calls, got.stop, user_stops)
        content = [content_block(b, b.text) for b in blocks.blocks]
        return JSONResponse(message(mid, served.name, content, reason, sequence, prepared.n_prompt,
                                    run.usage["completion_tokens"]))

    async def count_tokens(body: CountTokensBody, http: HTTPRequest) -> JSONResponse:
        served = await state.acquire(body.model, http)
        _, tokens = await render(served, body)
        return JSONResponse({"input_tokens": len(tokens)})

    api.add_api_route(PREFIX, messages, methods=["POST"])
    api.add_api_route(PREFIX + "/count_tokens", count_tokens, methods=["POST"])
    return api


def tool_use_id() -> str:
    return new_id("toolu_")


async def render(served: Served, body: CountTokensBody, response_format: dict[str, Any] | None = None
                 ) -> tuple[RenderedChat, list[int]]:
    """The body's prompt through the model's chat template, and its tokens."""
    tools, choice, parallel = chat_tools(body)
    try:
        return await render_chat(served, chat_messages(body), tools=tools, tool_choice=choice,
                                 parallel_tool_calls=parallel, response_format=response_format)
    except APIError as exc:
        if exc.param == "response_format":
            exc.param = "output_config.format"
        raise


def output_format(body: MessagesBody) -> dict[str, Any] | None:
    """``output_config.format`` (structured outputs) as chat's ``response_format``."""
    fmt = body.output_config.format if body.output_config is not None else None
    if fmt is None:
        return None
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise bad("output_config.format must be {\"type\": \"json_schema\", \"schema\": {...}}", "output_config.format")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _texts(content: Any, param: str) -> list[str | dict[str, Any]]:
    """The text of a string or of a list of ``text`` and ``image`` blocks (a 400 for anything else);
    an image becomes an OpenAI image part (a tool result may be a screenshot)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad(f"{param} must be a string or a list of text blocks", param)
    out: list[str | dict[str, Any]] = []
    for i, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "image":
            out.append(_image(block, f"{param}.{i}"))
            continue
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise bad(f"{param}.{i}: only text blocks are supported here, not {kind!r}", param)
        out.append(block["text"])
    return out


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    try:
        return images.anthropic_part(block, param)
    except ValueError as exc:
        raise invalid(exc, param) from None


def chat_messages(body: CountTokensBody) -> list[dict[str, Any]]:
    """The conversation as OpenAI chat messages, for the chat template.

    Earlier turns' ``thinking`` blocks are left out of the prompt (Anthropic drops
    them from the context too); a ``tool_result`` with ``is_error`` reads "Error: ..."
    to the model. A conversation ending with an assistant turn (a prefill of the
    answer) is a 400: templates close a finished turn, so it cannot be continued.
    """
    out: list[dict[str, Any]] = []
    if body.system:
        out.append({"role": "system", "content": text_content(_texts(body.system, "system"))})
    for i, msg in enumerate(body.messages):
        param = f"messages.{i}.content"
        if isinstance(msg.content, str):
            out.append({"role": msg.role, "content": msg.content})
            continue
        texts, calls, results = [], [], 0
        for j, block in enumerate(msg.content):
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "image" and msg.role == "user":
                texts.append(_image(block, f"{param}.{j}"))
            elif kind == "tool_use" and msg.role == "assistant":
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                    raise bad(f"{param}.{j}: a tool_use block needs an id and a name", param)
                calls.append({"id": block["id"], "type": "function", "function": {
                    "name": block["name"], "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
            elif kind == "tool_result" and msg.role == "user":
                if not isinstance(block.get("tool_use_id"), str):
                    raise bad(f"{param}.{j}: a tool_result block needs a tool_use_id", param)
                result = _texts(block.get("content", ""), f"{param}.{j}.content") or [""]
                if block.get("is_error"):
                    result = ["Error: " + result[0], *result[1:]] if isinstance(result[0], str) \
                        else ["Error: ", *result]
                out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text_content(result)})
                results += 1
            elif kind in ("thinking", "redacted_thinking") and msg.role == "assistant":
                continue
            else:
                raise bad(f"{param}.{j}: a {msg.role} message cannot hold a {kind!r} block here "
                          "(supported: text; image, tool_result from the user; tool_use from the assistant)", param)
        if texts or calls or not results:
            turn: dict[str, Any] = {"role": msg.role, "content": text_content(texts) if texts else
                                    (None if calls else "")}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
    if body.messages and body.messages[-1].role == "assistant":
        raise bad("the last message is the assistant's: continuing (prefilling) an assistant turn is not "
                  "supported by this server; end the conversation with a user message", "messages")
    return out


def chat_tools(body: CountTokensBody) -> tuple[list[dict[str, Any]] | None, Any, bool]:
    """(tools, tool_choice, parallel_tool_calls) in OpenAI's terms: ``any`` is "required", a named
    ``tool`` a named function; parallel calls unless ``disable_parallel_tool_use``, as Anthropic."""
    tools = []
    for i, tool in enumerate(body.tools or ()):
        if tool.type not in (None, "custom"):
            raise bad(f"tool type {tool.type!r} is a server tool, which this server does not have; "
                      "give the tool a name and an input_schema instead", f"tools.{i}.type")
        fn: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            fn["description"] = tool.description
        tools.append({"type": "function", "function": fn})
    tc = body.tool_choice
    if tc is None:
        return tools or None, None, True
    if tc.type == "tool" and not tc.name:
        raise bad("tool_choice of type 'tool' needs the tool's name", "tool_choice.name")
    choice: Any = {"auto": "auto", "any": "required", "none": "none"}.get(tc.type) or \
        {"type": "function", "function": {"name": tc.name}}
    return tools or None, choice, not tc.disable_parallel_tool_use


def stop_reason(finish: str | None, called: bool, stop: str | None, user_stops: list[str]) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` (only a caller's stop sequence is one: a
    template's own end strings are the end of the turn)."""
    if finish == "length":
        return "max_tokens", None
    if called:
        return "tool_use", None
    if stop is not None and stop in user_stops:
        return "stop_sequence", stop
    return "end_turn", None


def content_block(block: Block, text: str) -> dict[str, Any]:
    """``block`` as an Anthropic content block holding ``text`` ("" in ``content_block_start``)."""
    if block.kind == "text":
        return {"type": "text", "text": text}
    if block.kind == "reasoning":
        return {"type": "thinking", "thinking": text, "signature": ""}
    try:
        args = json.loads(text) if text else {}
    except ValueError:  # cut by max_tokens mid-call: stop_reason says so
        args = {}
    return {"type": "tool_use", "id": block.call_id, "name": block.name, "input": args if isinstance(args, dict) else {}}


_DELTA = {"text": ("text_delta", "text"), "reasoning": ("thinking_delta", "thinking"),
          "tool_call": ("input_json_delta", "partial_json")}


def block_event(ev: Event) -> tuple[str, dict[str, Any]]:
    kind, block, text = ev
    if kind == "start":
        return "content_block_start", {"type": "content_block_start", "index": block.index,
                                       "content_block": content_block(block, "")}
    if kind == "delta":
        type_, key = _DELTA[block.kind]
        return "content_block_delta", {"type": "content_block_delta", "index": block.index,
                                       "delta": {"type": type_, key: text}}
    return "content_block_stop", {"type": "content_block_stop", "index": block.index}


async def events(run: Run, mid: str, model: str, user_stops: list[str]) -> AsyncIterator[Item]:
    """One streamed answer in Anthropic's event sequence: ``message_start``, each block's
    ``content_block_start``/``delta``/``stop``, ``message_delta`` (stop reason, usage), ``message_stop``."""
    yield "message_start", {"type": "message_start",
                            "message": message(mid, model, [], None, None, run.prepared.n_prompt, 0)}
    deltas = ChatDeltas(run.prepared.output())  # type: ignore[arg-type]
    blocks = Blocks(tool_use_id)
    last = None
    async for piece in stream(run):
        if piece is None:
            yield None
            continue
        for ev in blocks.feed(deltas.feed(piece)):
            yield block_event(ev)
        last = piece
    for ev in blocks.close():
        yield block_event(ev)
    if last is None:  # the stream ends with a finished piece, or raises
        raise APIError(500, "the generation ended without a result", "server_error")
    reason, sequence = stop_reason(last.finish_reason, blocks.has_tool_calls, last.stop, user_stops)
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                            "usage": {"output_tokens": run.usage["completion_tokens"]}}
    yield "message_stop", {"type": "message_stop"}
