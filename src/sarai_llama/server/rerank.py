"""Rerank: ``POST /v1/rerank`` and ``/rerank`` (and llama-server's ``/v1/reranking``,
``/reranking``), in llama-server's and Jina's shape.

Body: ``query``, ``documents`` (strings, or Jina/Cohere's ``{"text": ...}``),
``top_n`` (default: all), ``return_documents`` (default true, as Jina and vLLM;
llama-server never returns them), ``model``. Answer: ``results`` [{``index``,
``relevance_score``, ``document``: {``text``}}] best first (equal scores keep the
documents' order), ``usage`` and ``model``. Scores come from the served GGUF's
classifier head on a rank-pooled context of its own
(:meth:`~.lifecycle.ServerState.reranker`, :mod:`sarai_llama.rerank`); a model
without one is a 400 that says so.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .errors import bad, invalid
from .lifecycle import ServerState
from .openai_schemas import Body

__all__ = ["MAX_DOCUMENTS", "RerankBody", "TextDocument", "router"]

#: Documents one request may rank (Jina's limit).
MAX_DOCUMENTS = 2048


class TextDocument(Body):
    text: str


class RerankBody(Body):
    query: str
    documents: list[str | TextDocument]
    top_n: int | None = None
    return_documents: bool = True
    model: str | None = None


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    async def rerank(body: RerankBody, http: HTTPRequest) -> JSONResponse:
        served = await state.acquire(body.model, http)
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        if not 1 <= len(texts) <= MAX_DOCUMENTS:
            raise bad(f"documents must hold 1 to {MAX_DOCUMENTS} documents, not {len(texts)}", "documents")
        if body.top_n is not None and body.top_n < 1:
            raise bad(f"top_n must be at least 1, not {body.top_n}", "top_n")
        try:
            reranker = await run_in_threadpool(served.reranker)
        except ValueError as exc:  # a model without a classifier head
            raise bad(str(exc), "model", "model_cannot_rerank") from None
        try:
            scores, n_tokens = await run_in_threadpool(reranker.score, body.query, texts)
        except ValueError as exc:  # a pair longer than the window, text that is not valid Unicode
            raise invalid(exc, "documents") from None
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[: body.top_n]
        results: list[dict[str, Any]] = []
        for i in order:
            one: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.return_documents:
                one["document"] = {"text": texts[i]}
            results.append(one)
        return JSONResponse({"id": f"rerank-{uuid.uuid4().hex}", "object": "list", "model": served.name,
                             "results": results, "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    for path in ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking"):
        api.add_api_route(path, rerank, methods=["POST"])
    return api
