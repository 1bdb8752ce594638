"""llama-server's fill-in-the-middle endpoint, ``POST /infill``.

Its prompt comes from :func:`sarai_llama.fim.fim_prompt` (the order and the extra
context are documented there), as the one of ``/v1/completions``' ``suffix`` does.
``/infill`` takes ``input_prefix``,
``input_suffix``, ``input_extra`` ([{filename, text}]) and ``prompt`` (text that
continues the prefix), plus the completion fields (``n_predict``/``max_tokens``,
sampling, ``stop``, ``stream``), cuts the parts to fit as llama-server does
(:class:`~sarai_llama.fim.FimBudget`) and answers in llama-server's own completion
shape, through the same answer as ``/completion``
(:func:`.llama_server_routes.native_answer`). A model without FIM tokens gets a 400
naming the missing ones.
"""

from __future__ import annotations

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import fim
from .errors import invalid
from .lifecycle import ServerState
from .llama_server_routes import native_answer
from .openai_routes import budget as requested_tokens, sampling
from .openai_schemas import Body, Generation
from .requests import check_tokens, max_tokens, prepare, stops

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

    @api.post("/infill")
    async def infill(body: InfillBody, http: HTTPRequest) -> Response:
        served = await state.acquire(body.model, http)
        settings = served.settings
        requested = requested_tokens(body, body.max_tokens, None)  # llama-server's default: no limit
        # The extra context's share leaves room for what the request may generate (llama-server's cut).
        cut = fim.FimBudget(settings.batch_size, served.n_ctx_seq, requested or 0)
        extra = [(c.filename, c.text) for c in body.input_extra]
        try:
            tokens = await run_in_threadpool(lambda: fim.fim_prompt(
                served.model, body.input_prefix, body.input_suffix, prompt=body.prompt, extra=extra,
                spm=settings.spm_infill, budget=cut, fields=fim.INFILL_FIELDS))
        except ValueError as exc:  # a model without FIM tokens, text without UTF-8
            raise invalid(exc) from None
        check_tokens(served, tokens, "input_prefix")
        max_new = max_tokens(served, requested, len(tokens), "n_predict", "input_prefix")
        prepared = prepare(served, sampling(body), tokens, max_new, stop=stops(body.stop),
                           ignore_eos=bool(body.ignore_eos))
        return await native_answer(served, prepared, http, bool(body.stream))

    return api
