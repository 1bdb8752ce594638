"""The models a server serves: ``GET /v1/models`` (and ``/models``), ``POST /models/load|unload``.

``/v1/models`` lists every model of the catalog, loaded or not, as OpenAI's list
with llama-server's router fields: ``status.value`` (loaded, loading, unloaded,
failed) and, in ``meta``, what the model takes when loaded (bytes) and the context
a request gets. ``/models/load`` and ``/models/unload`` are llama-server's router
routes (behind the API key, as every route but ``/health``): load waits until the
model is ready; unload of a model that is busy answers 409 (its requests finish
first; send it again, or set ``keep_alive`` 0 on the last request).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .errors import APIError
from .lifecycle import ServerState
from .openai_schemas import Body

__all__ = ["ModelName", "router"]


class ModelName(Body):
    model: str


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    async def models() -> JSONResponse:
        data: list[dict[str, Any]] = []
        for served in state.pool.models.values():
            meta: dict[str, Any] = served.describe()
            if served.model is not None:
                model = served.model
                meta.update(n_vocab=served.n_vocab, n_ctx_train=int(model.n_ctx_train), n_params=int(model.n_params),
                            size=int(model.size), parallel=served.settings.parallel)
            data.append({"id": served.name, "object": "model", "created": state.created, "owned_by": "sarai-llama",
                         "status": {"value": served.status}, "meta": meta,
                         # llama-server's /props names: whether chats may hold images (--mmproj)
                         "modalities": {"vision": bool(served.settings.mmproj), "audio": False}})
        return JSONResponse({"object": "list", "data": data})

    async def load(body: ModelName) -> JSONResponse:
        served = await state.acquire(body.model)  # loads it, or answers why it cannot
        state.pool.release(served)
        return JSONResponse({"success": True, "model": served.name, "status": served.status})

    async def unload(body: ModelName) -> JSONResponse:
        served = state.pool.find(body.model)
        if served.status == "loaded":
            if served.busy:
                raise APIError(409, f"the model '{served.name}' is busy: its requests finish first", param="model",
                               code="model_busy")
            state.pool.unload(served, "POST /models/unload")
        return JSONResponse({"success": True, "model": served.name, "status": served.status})

    for prefix in ("/v1", ""):
        api.add_api_route(f"{prefix}/models", models, methods=["GET"])
    api.add_api_route("/models/load", load, methods=["POST"])
    api.add_api_route("/models/unload", unload, methods=["POST"])
    return api
