"""llama-server's fill-in-the-middle endpoint, ``POST /infill``, and the FIM prompt of
``/v1/completions``'s ``suffix``.

Both build their prompt with :func:`sarai_llama.fim.fim_prompt` (the order and the
extra context are documented there). ``/infill`` takes ``input_prefix``,
``input_suffix``, ``input_extra`` ([{filename, text}]) and ``prompt`` (text that
continues the prefix), plus the completion fields (``n_predict``/``max_tokens``,
sampling, ``stop``, ``stream``), cuts the parts to fit as llama-server does
(:class:`~sarai_llama.fim.FimBudget`) and answers in llama-server's own completion
shape: ``{"content", "stop": true, "tokens_predicted", ...}``, or a stream of
``{"content", "stop": false}`` events ending with one ``"stop": true`` event (no
``[DONE]``: llama-server's native streams have none). A model without FIM tokens
gets a 400 naming the missing ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import fim, responses
from ..errors import ParameterError
from .errors import invalid
from .lifecycle import ServerState
from .openai_schemas import Body, Generation
from .requests import check_tokens, max_tokens, prepare
from .runs import Run, collect, start
from .sse import EventStream, write

__all__ = ["ExtraChunk", "InfillBody", "fim_prompt_tokens", "router"]


class ExtraChunk(Body):
    text: str
    filename: str = "tmp"  # llama-server's name for a chunk that gives none


class InfillBody(Generation):
    input_prefix: str
    input_suffix: str
    input_extra: list[ExtraChunk] = []
    prompt: str = ""


def fim_prompt_tokens(state: ServerState, prefix: str | Sequence[int], suffix: str, *, prompt: str = "",
               extra: Sequence[tuple[str, str]] = (), budget: fim.FimBudget | None = None,
               fields: dict[str, str] = fim.COMPLETION_FIELDS) -> list[int]:
    """The FIM prompt's tokens for this server's model (``--spm-infill`` order when set); a 400
    naming the field for a model without FIM tokens or text that is not valid Unicode."""
    try:
        return fim.fim_prompt(state.model, prefix, suffix, prompt=prompt, extra=extra,
                              spm=state.settings.spm_infill, budget=budget, fields=fields)
    except ParameterError as exc:
        raise invalid(exc) from None


def router(state: ServerState) -> APIRouter:
    """The route, bound to ``state``."""
    api = APIRouter()
    settings = state.settings

    @api.post("/infill")
    async def infill(body: InfillBody, http: HTTPRequest) -> Response:
        state.require_ready()
        state.check_model(body.model)
        # The tokens a request may generate, for the extra context's share (llama-server: n_predict).
        n_predict = body.max_tokens if body.max_tokens is not None else max(0, body.n_predict or 0)
        budget = fim.FimBudget(settings.batch_size, state.n_ctx_seq, n_predict)
        extra = [(c.filename, c.text) for c in body.input_extra]
        tokens = await run_in_threadpool(lambda: fim_prompt_tokens(
            state, body.input_prefix, body.input_suffix, prompt=body.prompt, extra=extra, budget=budget,
            fields=fim.INFILL_FIELDS))
        check_tokens(state, tokens, "input_prefix")
        max_new = max_tokens(state, body, body.max_tokens, len(tokens), None)
        prepared = prepare(state, body, tokens, max_new, None, "")
        (run,) = start(state, prepared, 1, http, responses.completion_id(), bool(body.stream))
        if body.stream:
            try:
                await run.submitted()
            except BaseException:
                run.close()
                raise
            return EventStream(write([chunks(run)], lambda: []), run.close)
        got = await collect(run)
        return JSONResponse({"index": 0, "content": got.text, "stop": True, **final(run)})

    def final(run: Run) -> dict[str, Any]:
        """What llama-server's last answer of a completion adds: the model and the counts."""
        return {"model": settings.model_id, "tokens_predicted": run.usage["completion_tokens"],
                "tokens_evaluated": run.prepared.n_prompt, "tokens_cached": run.n_reused}

    async def chunks(run: Run) -> AsyncIterator[dict[str, Any] | None]:
        async for p in run.pieces(ping=True):
            if p is None:
                yield None
                continue
            if p.text:
                yield {"index": 0, "content": p.text, "stop": False}
            if p.finish_reason is not None:
                run.log["finish_reason"] = p.finish_reason
                yield {"index": 0, "content": "", "stop": True, **final(run)}

    return api
