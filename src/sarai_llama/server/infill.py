"""llama-server's fill-in-the-middle endpoint, ``POST /infill``.

Its prompt comes from :func:`sarai_llama.fim.fim_prompt` (the order and the extra
context are documented there), as the one of ``/v1/completions``' ``suffix`` does.
``/infill`` takes ``input_prefix``,
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

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import fim, responses
from .errors import invalid
from .lifecycle import ServerState
from .openai_routes import budget as requested_tokens, sampling
from .openai_schemas import Body, Generation
from .requests import check_tokens, max_tokens, prepare, stops
from .runs import Run, collect, start, stream
from .sse import EventStream, write

__all__ = ["ExtraChunk", "InfillBody", "router"]


class ExtraChunk(Body):
    text: str
    filename: str = "tmp"  # llama-server's name for a chunk that gives none


class InfillBody(Generation):
    input_prefix: str
    input_suffix: str
    input_extra: list[ExtraChunk] = []
    prompt: str = ""


def router(state: ServerState) -> APIRouter:
    """The route, bound to ``state``."""
    api = APIRouter()
    settings = state.settings

    @api.post("/infill")
    async def infill(body: InfillBody, http: HTTPRequest) -> Response:
        state.require_ready()
        state.check_model(body.model)
        requested = requested_tokens(body, body.max_tokens, None)  # llama-server's default: no limit
        # The extra context's share leaves room for what the request may generate (llama-server's cut).
        cut = fim.FimBudget(settings.batch_size, state.n_ctx_seq, requested or 0)
        extra = [(c.filename, c.text) for c in body.input_extra]
        try:
            tokens = await run_in_threadpool(lambda: fim.fim_prompt(
                state.model, body.input_prefix, body.input_suffix, prompt=body.prompt, extra=extra,
                spm=settings.spm_infill, budget=cut, fields=fim.INFILL_FIELDS))
        except ValueError as exc:  # a model without FIM tokens, text without UTF-8
            raise invalid(exc) from None
        check_tokens(state, tokens, "input_prefix")
        max_new = max_tokens(state, requested, len(tokens), "n_predict", "input_prefix")
        prepared = prepare(state, sampling(body), tokens, max_new, stop=stops(body.stop),
                           ignore_eos=bool(body.ignore_eos))
        (run,) = start(state, [prepared], 1, http, responses.completion_id(), bool(body.stream))
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
        async for p in stream(run):
            if p is None:
                yield None
                continue
            if p.text:
                yield {"index": 0, "content": p.text, "stop": False}
            if p.finish_reason is not None:
                yield {"index": 0, "content": "", "stop": True, **final(run)}

    return api
