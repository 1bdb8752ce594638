"""The server's life: loading, ready, draining, failed; what every route shares.

The HTTP server listens before the positional model is loaded (``/health`` says 503
"loading"), then 200; without one (``--models-dir``, ``--model NAME=PATH`` only) it
is ready at once and each model loads on its first request (:mod:`.pool`). SIGTERM flips ``/health`` to 503 "draining", refuses new
work with 503, lets running generations finish within ``drain_timeout`` (then
cancels them), and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from fastapi import Request as HTTPRequest

from .. import responses
from .catalog import catalog
from .errors import APIError
from .metrics import Metrics
from .pool import ModelPool
from .served import Served
from .settings import Settings

__all__ = ["ServerState"]

logger = logging.getLogger("sarai_llama.server")


class ServerState:
    """Everything the routes share: settings, phase, the models (:class:`~.pool.ModelPool`), metrics.

    ``phase`` is the server's: "loading" while the positional model loads at start-up,
    "ready", "draining" after SIGTERM, "failed" when the positional model could not load
    or its engine broke. The models by name load on their first request, whatever the phase.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.pool = ModelPool(settings, catalog(settings), self.metrics)  # ValueError: a bad catalog
        self.phase: Literal["loading", "ready", "draining", "failed"] = \
            "loading" if self.pool.default is not None else "ready"
        self.failure: str | None = None
        self.created = responses.now()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_exit: Callable[[int], None] = lambda code: None
        self.exit_code = 0
        self._drain_task: asyncio.Task[None] | None = None

    @property
    def default(self) -> Served | None:
        """The positional model (loaded at start-up; what a request without a ``model`` gets), if any."""
        return self.pool.default

    # -------------------------------------------------------------- loading
    def load(self) -> None:
        """Load the positional model, in a thread: the HTTP server is already up. A model that cannot
        load ends the server (exit code 1), as one ``serve MODEL`` always did."""
        served = self.pool.default
        if served is None:
            return
        served.on_engine_failure = self._engine_failed
        try:
            served.load()
            served.metrics.load_time.observe(served.load_seconds)
            if self.phase == "loading":
                self.phase = "ready"
        except Exception as exc:
            logger.error("loading %s failed: %s", served.spec.path, exc)
            self.phase, self.failure = "failed", str(exc)
            self.exit_code = 1
            self.on_exit(1)

    def close(self) -> None:
        """Stop every model's scheduler and free the models (the app's shutdown)."""
        self.pool.close()

    def _engine_failed(self, exc: BaseException) -> None:
        self.phase, self.failure = "failed", f"the engine failed: {exc}"

    # -------------------------------------------------------------- gates
    def require_ready(self) -> None:
        """A 503 saying why when the server does not take requests now (loading, draining, failed)."""
        if self.phase == "loading":
            raise APIError(503, "the model is loading", "unavailable_error", code="model_loading",
                           headers=self.retry_headers())
        if self.phase == "draining":
            self.metrics.rejected.labels("draining").inc()
            raise APIError(503, "the server is shutting down", "unavailable_error", code="server_draining",
                           headers=self.retry_headers())
        if self.phase == "failed":
            raise APIError(503, f"the server cannot serve: {self.failure}", "unavailable_error",
                           code="server_failed")

    async def acquire(self, name: str | None, http: HTTPRequest | None = None,
                      keep_alive: float | None | str = "default") -> Served:
        """The model a request names (empty: the default one), loaded and pinned until the response is
        sent (``http``'s scope; without it the caller releases it through ``pool.release``): a 404 for
        an unknown name, a 503 while the server cannot serve, a 500/503/507 when it cannot be loaded.
        ``keep_alive``: :meth:`ModelPool.use`'s."""
        served = self.pool.find(name)
        if served is self.pool.default or self.phase == "draining":  # models by name load whatever the phase
            self.require_ready()
        return await self.pool.use(served, http.scope if http is not None else None, keep_alive)

    def retry_headers(self) -> dict[str, str]:
        # x-should-retry false: the official clients would otherwise retry at once, on the
        # same overloaded replica; Retry-After tells a load balancer or a patient client when.
        return {"Retry-After": str(self.settings.retry_after), "x-should-retry": "false"}

    # -------------------------------------------------------------- drain
    @property
    def draining(self) -> bool:
        """A drain has begun (a second signal then stops at once)."""
        return self._drain_task is not None

    def begin_drain(self) -> None:
        """SIGTERM: stop admitting, finish what runs (within drain_timeout), then exit 0."""
        if self._drain_task is not None:
            return
        if self.phase != "failed":
            self.phase = "draining"
        logger.info("draining: %d requests in flight, up to %.0f s", self.in_flight(), self.settings.drain_timeout)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    def in_flight(self) -> int:
        return sum(s.scheduler.admitted for s in self.pool.loaded() if s.scheduler is not None)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.in_flight():
            logger.warning("drain timeout: cancelling %d requests", self.in_flight())
            for served in self.pool.loaded():
                if served.engine is not None:
                    served.engine.cancel_all()
            end = time.monotonic() + 5.0
            while self.in_flight() and time.monotonic() < end:
                await asyncio.sleep(0.05)
        logger.info("drained; exiting")
        self.on_exit(self.exit_code)
