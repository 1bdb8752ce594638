"""The HTTP server (OpenAI, Anthropic and llama.cpp APIs): the app's parts wired together, and uvicorn around them.

:func:`create_app` builds the whole ASGI app (the :class:`~.gate.Gate` in front
of every protocol's routes) with no server around it: tests and fuzzers hand it
to an ASGI client. :func:`serve` runs it under uvicorn with SIGTERM meaning
"drain" (:mod:`.lifecycle`).

Handlers parse (pydantic), render chat templates and tokenize on their side
(worker threads, so the event loop never waits on C++), then hand one
:class:`~sarai_llama.engine.Request` to the scheduler thread and read its
pieces back from an asyncio queue.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from . import (anthropic_routes, embeddings, infill, llama_extras, llama_server_routes, model_routes, ollama_routes,
               openai_routes, rerank, responses_routes)
from .anthropic_schemas import error_reply
from .ollama_schemas import error_reply as ollama_error
from .errors import Shapes, install_handlers
from .gate import Gate
from .lifecycle import ServerState
from .settings import Settings

__all__ = ["create_app", "serve"]

logger = logging.getLogger("sarai_llama.server")

#: The ``/v1`` routes llama-server also serves without the prefix.
BARE = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/responses")


def create_app(settings: Settings) -> tuple[Gate, ServerState]:
    """The ASGI app for ``settings`` and the state its routes share.

    Its lifespan loads the positional model in a thread (``/health`` answers
    meanwhile), watches idle models and unloads every model at shutdown; a client
    that does not run the lifespan calls ``state.load()`` and ``state.close()``
    itself. ``ValueError`` for a catalog that does not hold (``models.toml``, a
    missing file): the server does not start.
    """
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        threading.Thread(target=state.load, name="sarai-load", daemon=True).start()
        state.pool.start()
        yield
        state.close()

    app = FastAPI(title="sarai-llama", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    # Anthropic's and Ollama's paths answer in their shapes; every other path in OpenAI's.
    shapes = Shapes({anthropic_routes.PREFIX: error_reply, "/": ollama_error,
                     **{p: ollama_error for p in ollama_routes.PREFIXES}})
    install_handlers(app, shapes)
    routers = [module.router(state) for module in (llama_extras, llama_server_routes, model_routes, openai_routes,
                                                   responses_routes, anthropic_routes, embeddings, infill, rerank,
                                                   ollama_routes)]
    alias_bare_routes(routers)
    for api in routers:
        app.include_router(api)
    return Gate(app, state, shapes), state


def alias_bare_routes(routers: list[APIRouter]) -> None:
    """llama-server serves its OpenAI routes without ``/v1`` too: add the bare path of each of
    :data:`BARE` that has none (``/responses``; ``/models`` and the completions have theirs)."""
    have = {r.path for api in routers for r in api.routes if isinstance(r, APIRoute)}
    for api in routers:
        for r in list(api.routes):
            bare = r.path.removeprefix("/v1") if isinstance(r, APIRoute) else ""
            if isinstance(r, APIRoute) and r.path in BARE and bare not in have:
                api.add_api_route(bare, r.endpoint, methods=list(r.methods))


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT has drained it; the process's exit code."""
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    access = logging.getLogger("sarai_llama.access")
    access.propagate = False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)

    try:
        app, state = create_app(settings)
    except ValueError as exc:  # a models.toml that does not parse, a model file that is not there
        logger.error("%s", exc)
        return 2
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5, log_config=None)
    logger.info("HTTP: %s", _http_stack())
    server = DrainingServer(config, state)

    def exit_now(code: int) -> None:
        state.exit_code = code
        server.should_exit = True

    state.on_exit = exit_now
    server.run()
    return state.exit_code


def _http_stack() -> str:
    """Which event loop and HTTP parser uvicorn's "auto" picks here, and why it matters."""
    import importlib.util

    fast = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is not None]
    if len(fast) == 2:
        return "uvloop event loop, httptools parser (the [server] extra's fast path)"
    missing = " and ".join(m for m in ("uvloop", "httptools") if m not in fast)
    return (f"{missing} not installed: uvicorn falls back to pure-Python parts, which cost the decode CPU "
            "on small machines (pip install 'sarai-llama[server]')")


def _uvicorn_server() -> type:
    import uvicorn

    return uvicorn.Server


class DrainingServer(_uvicorn_server()):  # type: ignore[misc]
    """uvicorn's server with SIGTERM meaning "drain": keep listening (new requests get 503),
    let in-flight generations finish, then stop. A second signal stops at once."""

    def __init__(self, config: Any, state: ServerState) -> None:
        super().__init__(config)
        self.sarai = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not recorded in uvicorn's captured signals: it would re-raise SIGTERM after shutdown
        # and the process would die by the signal instead of exiting 0 after a clean drain.
        state = self.sarai
        if state.draining or state.loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            self.should_exit = True
            if state.draining:
                self.force_exit = True
            return
        state.loop.call_soon_threadsafe(state.begin_drain)
