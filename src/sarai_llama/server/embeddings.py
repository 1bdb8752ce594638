"""OpenAI's embeddings API: ``/v1/embeddings`` (and ``/embeddings``).

Embeddings run on a pooled context of their own on the named model's weights
(:meth:`~.served.Served.embedder`), not through the generation scheduler: the
texts of concurrent requests are decoded together, up to ``pooled.DEFAULT_SEQS``
per ``llama_decode``, an input longer than ``pooled.DEFAULT_WINDOW`` tokens is a 400.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import responses
from .errors import APIError, bad, invalid
from .lifecycle import ServerState
from .openai_schemas import Body

__all__ = ["EmbeddingBody", "router"]


class EmbeddingBody(Body):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    async def embeddings(body: EmbeddingBody, http: HTTPRequest) -> JSONResponse:
        served = await state.acquire(body.model, http)
        if not served.settings.embeddings and served.role == "generate":
            return APIError(501, "embeddings are switched off on this server (--embeddings false)",
                            "not_implemented_error", code="not_implemented").response()
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or len(texts) > 2048:
            raise bad("input must hold 1 to 2048 strings", "input")
        if body.dimensions is not None and body.dimensions != served.model.n_embd:
            raise bad(f"this model's embeddings have {served.model.n_embd} dimensions", "dimensions")
        try:
            embedder = await run_in_threadpool(served.embedder)
        except ValueError as exc:  # a rerank model
            raise bad(str(exc), "model", "model_cannot_embed") from None
        try:
            vectors, total = await run_in_threadpool(embedder.embed, texts, False, True)  # no cut; unit length
        except ValueError as exc:  # an input longer than the embedding context
            raise invalid(exc, "input") from None
        data: list[Any] = vectors
        if body.encoding_format == "base64":
            # What the official client asks for by default: little-endian float32 bytes, base64.
            data = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii") for v in vectors]
        return JSONResponse(responses.embeddings(data, served.name, total))

    api.add_api_route("/v1/embeddings", embeddings, methods=["POST"])
    api.add_api_route("/embeddings", embeddings, methods=["POST"])
    return api
