"""OpenAI's Responses API: ``POST /v1/responses``, stateless.

``input`` (a string, or message, ``function_call`` and ``function_call_output``
items) and ``instructions`` become OpenAI chat messages, flat function tools
become chat tools, ``text.format`` a response format; they go through the
model's own chat template and the shared request path (:mod:`.requests`,
:mod:`.runs`), and the answer's blocks (:class:`.blocks.Blocks`) come back as
output items: one ``response`` object, or the Responses event stream (each event
numbered) through the one SSE writer.

Stateless: no response is kept, so ``previous_response_id``, ``store: true``,
``background``, ``conversation`` and ``item_reference`` inputs are 400s naming
the field; a client sends the whole conversation in ``input`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response

from .. import responses as oai
from ..chat_completion import ChatDeltas
from .blocks import Block, Blocks, Event, new_id, text_content
from .errors import APIError, bad
from .lifecycle import ServerState
from .requests import Sampling, max_tokens, prepare, render_chat
from .responses_schemas import ResponsesBody, item, part, response, usage
from .runs import Run, collect, start, stream
from .sse import EventStream, Item, event, write

__all__ = ["router"]

#: The request path's names for what the shared path calls by chat completions' names.
_PARAMS = {"messages": "input", "response_format": "text.format"}


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    async def create(body: ResponsesBody, http: HTTPRequest) -> Response:
        served = await state.acquire(body.model, http)
        for name in ("previous_response_id", "store", "background", "conversation"):
            if getattr(body, name):
                raise bad(f"{name} is not supported: this server keeps no responses (it is stateless); "
                          "send the whole conversation in input", name)
        try:
            rendered, tokens = await render_chat(
                served, chat_messages(body), "input", tools=chat_tools(body.tools),
                tool_choice=chat_tool_choice(body.tool_choice), parallel_tool_calls=body.parallel_tool_calls is not False,
                response_format=response_format(body.text))
        except APIError as exc:
            exc.param = _PARAMS.get(exc.param or "", exc.param)
            raise
        max_new = max_tokens(served, body.max_output_tokens, len(tokens), "max_output_tokens", "input")
        sampling = Sampling(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
                            seed=body.seed, logit_bias=body.logit_bias)
        prepared = prepare(served, sampling, tokens, max_new, rendered=rendered)
        answer = Answer(new_id("resp_"), oai.now(), served.name, body)
        (run,) = start(served, [prepared], 1, http, answer.rid, bool(body.stream))
        if body.stream:
            await run.submitted()
            return EventStream(write([answer.events(run)], error=answer.error), run.close)
        got = await collect(run)
        blocks = Blocks(call_id)
        blocks.feed(prepared.output().update(got.text, partial=False))  # type: ignore[union-attr]
        blocks.close()
        status = "incomplete" if got.finish_reason == "length" else "completed"
        return JSONResponse(answer.final(run, blocks.blocks, status))

    api.add_api_route("/v1/responses", create, methods=["POST"])
    return api


def call_id() -> str:
    return new_id("call_")


def _text(content: Any, param: str) -> str | list[dict[str, Any]]:
    """A message's content: a string, or its text parts (``input_text``, ``output_text``, ``text``) and
    ``input_image`` parts (read by ``images.take``)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad("content must be a string or a list of content parts", param)
    texts: list[str | dict[str, Any]] = []
    for i, p in enumerate(content):
        if isinstance(p, dict) and p.get("type") == "input_image":
            texts.append(p)
            continue
        if not isinstance(p, dict) or p.get("type") not in ("input_text", "output_text", "text") \
                or not isinstance(p.get("text"), str):
            kind = p.get("type") if isinstance(p, dict) else type(p).__name__
            raise bad(f"content part type {kind!r} is not supported (text and input_image parts only)",
                      f"{param}[{i}]")
        texts.append(p["text"])
    return text_content(texts) if texts else ""


def chat_messages(body: ResponsesBody) -> list[dict[str, Any]]:
    """``instructions`` and ``input`` as OpenAI chat messages. Consecutive ``function_call`` items join
    the assistant turn before them; earlier ``reasoning`` items are left out of the prompt."""
    out: list[dict[str, Any]] = []
    if body.instructions:
        out.append({"role": "system", "content": body.instructions})
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    for i, it in enumerate(items):
        param, kind = f"input[{i}]", it.get("type", "message")
        if kind == "message":
            role = it.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise bad(f"role must be user, assistant, system or developer, not {role!r}", f"{param}.role")
            out.append({"role": "system" if role == "developer" else role,
                        "content": _text(it.get("content"), f"{param}.content")})
        elif kind == "function_call":
            if not all(isinstance(it.get(k), str) for k in ("call_id", "name", "arguments")):
                raise bad("a function_call item needs call_id, name and arguments", param)
            call = {"id": it["call_id"], "type": "function",
                    "function": {"name": it["name"], "arguments": it["arguments"]}}
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(it.get("call_id"), str):
                raise bad("a function_call_output item needs a call_id", param)
            out.append({"role": "tool", "tool_call_id": it["call_id"],
                        "content": _text(it.get("output", ""), f"{param}.output")})
        elif kind != "reasoning":
            raise bad(f"input item type {kind!r} is not supported (message, function_call, function_call_output"
                      "; item_reference needs stored responses, which this server does not keep)", param)
    return out


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Responses' flat function tools (``{"type": "function", "name", "parameters", ...}``) as chat tools."""
    out = []
    for i, tool in enumerate(tools or ()):
        if tool.get("type") != "function":
            raise bad(f"tool type {tool.get('type')!r} is not supported (function tools only)", f"tools[{i}].type")
        if not isinstance(tool.get("name"), str):
            raise bad("a function tool needs a name", f"tools[{i}].name")
        fn = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out or None


def chat_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    """"auto", "none", "required" as they are; ``{"type": "function", "name": N}`` as chat's named function."""
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad("tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}",
              "tool_choice")


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format`` (None: free text)."""
    fmt = (text or {}).get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name", "response"), "schema": fmt["schema"],
                                                       "strict": fmt.get("strict")}}
    raise bad("text.format must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", "
              "\"name\": ..., \"schema\": {...}}", "text.format")


_PREFIX = {"text": "msg_", "reasoning": "rs_", "tool_call": "fc_"}


class Answer:
    """One response: its output items, and its events when streamed (numbered from 0)."""

    def __init__(self, rid: str, created: int, model: str, body: ResponsesBody) -> None:
        self.rid, self.created, self.model, self.body = rid, created, model, body
        self.ids: dict[int, str] = {}
        self.seq = 0

    def item_id(self, block: Block) -> str:
        return self.ids.setdefault(block.index, new_id(_PREFIX[block.kind]))

    def final(self, run: Run, blocks: list[Block], status: str) -> dict[str, Any]:
        output = [item(b, self.item_id(b), b.text, status) for b in blocks]
        use = usage(run.prepared.n_prompt, run.usage["completion_tokens"], run.n_reused)
        return response(self.rid, self.created, self.model, self.body, status, output, use)

    def numbered(self, type_: str, **data: Any) -> tuple[str, dict[str, Any]]:
        self.seq += 1
        return type_, {"type": type_, "sequence_number": self.seq - 1, **data}

    def error(self, exc: APIError) -> bytes:
        """An error after the stream began: the Responses ``error`` event."""
        name, data = self.numbered("error", code=exc.code or exc.type, message=exc.message, param=exc.param)
        return event(data, name)

    def block_events(self, ev: Event, status: str = "completed") -> list[tuple[str, dict[str, Any]]]:
        kind, block, text = ev
        at = {"item_id": self.item_id(block), "output_index": block.index}
        call = block.kind == "tool_call"
        noun = "reasoning_text" if block.kind == "reasoning" else "output_text"
        if kind == "start":
            added = [self.numbered("response.output_item.added", output_index=block.index,
                                   item=item(block, at["item_id"], "", "in_progress"))]
            return added if call else [*added, self.numbered("response.content_part.added", **at, content_index=0,
                                                            part=part(block, ""))]
        if kind == "delta":
            if call:
                return [self.numbered("response.function_call_arguments.delta", **at, delta=text)]
            extra = {} if block.kind == "reasoning" else {"logprobs": []}
            return [self.numbered(f"response.{noun}.delta", **at, content_index=0, delta=text, **extra)]
        if call:
            out = [self.numbered("response.function_call_arguments.done", **at, name=block.name,
                                 arguments=block.text)]
        else:
            extra = {} if block.kind == "reasoning" else {"logprobs": []}
            out = [self.numbered(f"response.{noun}.done", **at, content_index=0, text=block.text, **extra),
                   self.numbered("response.content_part.done", **at, content_index=0, part=part(block, block.text))]
        return [*out, self.numbered("response.output_item.done", output_index=block.index,
                                    item=item(block, at["item_id"], block.text, status))]

    async def events(self, run: Run) -> AsyncIterator[Item]:
        """``response.created``, ``response.in_progress``, each item's events, then ``response.completed``
        (or ``response.incomplete`` when ``max_output_tokens`` cut the answer)."""
        opening = response(self.rid, self.created, self.model, self.body, "in_progress", [], None)
        yield self.numbered("response.created", response=opening)
        yield self.numbered("response.in_progress", response=opening)
        deltas = ChatDeltas(run.prepared.output())  # type: ignore[arg-type]
        blocks = Blocks(call_id)
        finish = None
        async for piece in stream(run):
            if piece is None:
                yield None
                continue
            for ev in blocks.feed(deltas.feed(piece)):
                for e in self.block_events(ev):
                    yield e
            finish = piece.finish_reason
        status = "incomplete" if finish == "length" else "completed"
        for ev in blocks.close():
            for e in self.block_events(ev, status):
                yield e
        yield self.numbered(f"response.{status}", response=self.final(run, blocks.blocks, status))
