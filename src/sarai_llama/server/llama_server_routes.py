"""llama-server's native generation routes: ``/completion``, ``/props``, ``/apply-template``, ``/slots``.

``POST /completion`` takes llama-server's body (``prompt`` as text or token ids,
``n_predict``, the sampling fields, ``stop``, ``stream``) and answers in its own
shape: ``{"content", "stop": true, "tokens_predicted", "tokens_evaluated",
"stop_type", "stopping_word", "truncated", "timings", ...}``, or a stream of
``data: {"content", "stop": false}`` events ending with one ``"stop": true``
event (no ``[DONE]``: llama-server's native streams have none). ``/props``
says what Continue, Zed and llama-server's own web UI read about the server;
``/slots`` is read-only (one entry per ``--parallel`` sequence).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import __version__, responses
from .lifecycle import ServerState
from .openai_routes import budget, sampling
from .openai_schemas import ChatBody, Generation
from .requests import Prepared, check_tokens, json_grammar, max_tokens, prepare, render_chat, stops, tokenize_prompt
from .runs import Run, collect, start, stream
from .served import Served
from .sse import EventStream, write

__all__ = ["NativeCompletionBody", "native_answer", "router", "stop_type"]


class NativeCompletionBody(Generation):
    prompt: str | list[int]
    return_tokens: bool | None = False


def stop_type(finish: str | None, stop: str | None) -> str:
    """llama-server's ``stop_type``: "limit" (the budget), "word" (a stop string), "eos", or "none"."""
    if finish == "length":
        return "limit"
    if finish == "stop":
        return "word" if stop else "eos"
    return "none"


async def native_answer(served: Served, prepared: Prepared, http: HTTPRequest, stream_it: bool,
                        with_tokens: bool = False) -> Response:
    """Run ``prepared`` and answer in llama-server's native shape, as its ``/completion`` and
    ``/infill`` do: one object, or ``data:`` events ending with the ``"stop": true`` one."""
    (run,) = start(served, [prepared], 1, http, responses.completion_id(), stream_it)
    if stream_it:
        await run.submitted()
        return EventStream(write([frames(run, with_tokens)], lambda: []), run.close)
    got = await collect(run)
    return JSONResponse({"index": 0, "content": got.text, "tokens": [], "id_slot": -1, "stop": True,
                         **final(run, got.finish_reason, got.stop, got.text.endswith("\n"))})


def final(run: Run, finish: str | None, stop: str | None, new_line: bool) -> dict[str, Any]:
    """What llama-server's last object of a completion adds: the model, counts, why it stopped, timings."""
    job, end = run.job, time.monotonic()
    first = job.t_first if job.t_first is not None else end
    n_out, n_in = run.usage["completion_tokens"], run.prepared.n_prompt
    prompt_ms, predicted_ms = (first - job.t_submit) * 1000, (end - first) * 1000
    return {"model": run.served.name, "tokens_predicted": n_out, "tokens_evaluated": n_in,
            "tokens_cached": run.n_reused, "has_new_line": new_line, "truncated": False,
            "stop_type": stop_type(finish, stop), "stopping_word": stop or "",
            "timings": {"prompt_n": max(0, n_in - run.n_reused), "prompt_ms": prompt_ms,
                        "predicted_n": n_out, "predicted_ms": predicted_ms,
                        "predicted_per_second": n_out / predicted_ms * 1000 if predicted_ms > 0 else 0.0}}


async def frames(run: Run, with_tokens: bool) -> AsyncIterator[dict[str, Any] | None]:
    """A native stream's events (None: a ping is due); the last one carries :func:`final`."""
    new_line = False
    async for p in stream(run):
        if p is None:
            yield None
            continue
        new_line = new_line or "\n" in p.text
        if p.text or (with_tokens and p.tokens):
            yield {"index": 0, "content": p.text, "tokens": list(p.tokens) if with_tokens else [],
                   "stop": False, "id_slot": -1, "tokens_predicted": run.usage["completion_tokens"],
                   "tokens_evaluated": run.prepared.n_prompt}
        if p.finish_reason is not None:
            yield {"index": 0, "content": "", "tokens": [], "id_slot": -1, "stop": True,
                   **final(run, p.finish_reason, p.stop, new_line)}


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    @api.post("/completion")
    async def completion(body: NativeCompletionBody, http: HTTPRequest) -> Response:
        served = await state.acquire(body.model, http)
        if isinstance(body.prompt, str):
            tokens = await run_in_threadpool(tokenize_prompt, served, body.prompt, "prompt")
        else:
            tokens = list(body.prompt)
        check_tokens(served, tokens, "prompt")
        max_new = max_tokens(served, budget(body, body.max_tokens, None), len(tokens), "n_predict", "prompt")
        grammar = json_grammar(body.response_format, body.json_schema, body.grammar)
        prepared = prepare(served, sampling(body), tokens, max_new, stop=stops(body.stop),
                           ignore_eos=bool(body.ignore_eos), grammar=grammar)
        return await native_answer(served, prepared, http, bool(body.stream), bool(body.return_tokens))

    @api.get("/props")
    async def props(http: HTTPRequest, model: str | None = None) -> JSONResponse:
        """llama-server's ``/props`` (``?model=NAME``, as its router mode takes it, for another model)."""
        served = await state.acquire(model, http)
        settings = served.settings
        source = str(getattr(served.template, "source", "") or "")
        vocab = served.model
        return JSONResponse({
            "default_generation_settings": {"n_ctx": served.n_ctx_seq,
                                            "params": {"n_predict": -1, "seed": settings.seed}},
            "total_slots": settings.parallel, "model_alias": served.name, "model_path": settings.model,
            "modalities": {"vision": served.runtime.takes_images, "audio": False}, "chat_template": source,
            "bos_token": vocab.token_to_piece(vocab.token_bos, True).decode("utf-8", "replace")
            if vocab.token_bos >= 0 else "",
            "eos_token": vocab.token_to_piece(vocab.token_eos, True).decode("utf-8", "replace")
            if vocab.token_eos >= 0 else "",
            "build_info": f"sarai-llama {__version__}", "is_sleeping": False,
            "endpoint_slots": True, "endpoint_props": True, "endpoint_metrics": True})

    @api.post("/apply-template")
    async def apply_template(body: ChatBody, http: HTTPRequest) -> JSONResponse:
        served = await state.acquire(body.model, http)
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        rendered, _ = await render_chat(served, messages, tools=body.tools, tool_choice=body.tool_choice,
                                        parallel_tool_calls=body.parallel_tool_calls,
                                        chat_template_kwargs=body.chat_template_kwargs,
                                        reasoning_format=body.reasoning_format)
        return JSONResponse({"prompt": rendered.prompt})

    @api.get("/slots")
    async def slots(http: HTTPRequest, model: str | None = None) -> JSONResponse:
        """One entry per sequence; the engine counts busy sequences, not which: the first ``active`` say so."""
        served = await state.acquire(model, http)
        active = int(served.engine.load().get("active", 0)) if served.engine is not None else 0
        return JSONResponse([{"id": i, "n_ctx": served.n_ctx_seq, "is_processing": i < active}
                             for i in range(served.settings.parallel)])

    return api
