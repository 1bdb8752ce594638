"""llama-server's own endpoints: ``/health``, ``/metrics``, ``/tokenize``, ``/detokenize``."""

from __future__ import annotations

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .lifecycle import ServerState
from .openai_schemas import Body
from .requests import check_tokens, utf8_text

__all__ = ["DetokenizeBody", "TokenizeBody", "router"]


class TokenizeBody(Body):
    content: str
    model: str | None = None
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeBody(Body):
    tokens: list[int]
    model: str | None = None


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    @api.get("/health")
    async def health() -> JSONResponse:
        if state.phase == "ready":
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": state.phase, **({"error": state.failure} if state.failure else {})},
                            status_code=503, headers=state.retry_headers())

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.post("/tokenize")
    async def tokenize(body: TokenizeBody, http: HTTPRequest) -> JSONResponse:
        model = (await state.acquire(body.model, http)).model
        text = utf8_text(body.content, "content")
        tokens = await run_in_threadpool(lambda: list(model.tokenize(text, body.add_special, body.parse_special)))
        if body.with_pieces:
            out = [{"id": t, "piece": model.token_to_piece(t, True).decode("utf-8", errors="replace")}
                   for t in tokens]
            return JSONResponse({"tokens": out})
        return JSONResponse({"tokens": tokens})

    @api.post("/detokenize")
    async def detokenize(body: DetokenizeBody, http: HTTPRequest) -> JSONResponse:
        served = await state.acquire(body.model, http)
        check_tokens(served, body.tokens or [0], "tokens")
        text = await run_in_threadpool(lambda: served.model.detokenize(body.tokens, False))
        return JSONResponse({"content": text.decode("utf-8", errors="replace")})

    return api
