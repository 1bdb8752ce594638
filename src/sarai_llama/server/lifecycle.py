"""The server's life: loading, ready, draining, failed; what every route shares.

The HTTP server listens before the model is loaded (``/health`` says 503
"loading"), then 200. SIGTERM flips ``/health`` to 503 "draining", refuses new
work with 503, lets running generations finish within ``drain_timeout`` (then
cancels them), and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .. import chat, responses
from .errors import APIError
from .metrics import Metrics
from .scheduler import Scheduler
from .settings import FLASH_ATTN_KEYWORD, Settings

__all__ = ["ServerState"]

logger = logging.getLogger("sarai_llama.server")


class ServerState:
    """Everything the routes share: settings, phase, model, scheduler, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.phase: Literal["loading", "ready", "draining", "failed"] = "loading"
        self.failure: str | None = None
        self.metrics = Metrics()
        self.model: Any = None
        self.engine: Any = None
        self.scheduler: Scheduler | None = None
        self.template: chat.ChatFormat | None = None
        self.template_error: str | None = None
        self.n_ctx_seq = 0
        self.n_threads = 1
        self.n_vocab = 0
        self.created = responses.now()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_exit: Callable[[int], None] = lambda code: None
        self.exit_code = 0
        self._drain_task: asyncio.Task[None] | None = None
        self.runtime: Any = None  # the served model (sarai_llama.runtime.Runtime), once loaded

    # -------------------------------------------------------------- loading
    def load(self) -> None:
        """Load the model (one :class:`~sarai_llama.runtime.Runtime`) and start the scheduler, in a
        thread: the HTTP server is already up."""
        from ..runtime import Runtime

        s = self.settings
        try:
            if s.debug_load_delay:
                time.sleep(s.debug_load_delay)
            # a hostile file raises ModelLoadError; SARAI_TRUSTED_MODELS skips the probe
            rt = Runtime(s.model, threads=s.thread_choice(), seed=s.seed, speculation=s.speculation(),
                         chat_format=s.chat_format, verbose=s.log_level == "debug", n_ctx=s.ctx_size,
                         n_batch=s.batch_size, n_ubatch=s.ubatch_size, n_seq_max=s.parallel,
                         step_budget_ms=s.step_budget_ms, type_k=s.cache_type_k, type_v=s.cache_type_v,
                         flash_attn=FLASH_ATTN_KEYWORD[s.flash_attn])
            engine = rt.engine
            assert engine is not None  # a generating runtime
            try:
                self.template = rt.chat_format()
                logger.info("chat template: %s", self.template.why)
            except ValueError as exc:  # completions still work; chat answers why not
                self.template_error = str(exc)
            self.runtime, self.model, self.engine = rt, rt.model, engine
            self.n_ctx_seq, self.n_threads = engine.n_ctx_seq, rt.threads.n_threads
            self.n_vocab = int(rt.model.n_vocab)
            scheduler = Scheduler(engine, s.max_queue, on_step_error=self._engine_failed)
            self.metrics.bind(self._load_facts, engine.stats)
            scheduler.start()
            self.scheduler = scheduler
            logger.info("model loaded: %s (%d threads, %d sequences, %d context cells, %d per sequence)",
                        s.model, self.n_threads, s.parallel, engine.n_ctx, self.n_ctx_seq)
            kv = rt.kv_bytes()
            logger.info("KV cache: %s (K %s, V %s, flash attention %s)",
                        f"at most {kv / 2**20:.0f} MiB" if kv else "size unknown for this architecture",
                        s.cache_type_k, s.cache_type_v, s.flash_attn)
            self._start_state_cache(rt)
            if self.phase == "loading":
                self.phase = "ready"
        except Exception as exc:
            logger.error("loading %s failed: %s", s.model, exc)
            self.phase, self.failure = "failed", str(exc)
            self.exit_code = 1
            self.on_exit(1)

    def _start_state_cache(self, rt: Any) -> None:
        """Give the engine its state cache, sized by --cache-ram or by the pod (logged with the reason)."""
        s = self.settings
        budget, why = rt.start_state_cache(s.cache_ram, s.cache_dir, s.cache_disk)
        if s.cache_ram != "auto":
            why = f"--cache-ram {s.cache_ram}" + (f": {why}" if s.cache_ram == -1 else "")
        if budget == 0:
            logger.info("state cache: off (%s)", why)
            return
        cache = rt.engine.state_cache
        logger.info("state cache: %s RAM (%s)%s", "no limit" if s.cache_ram == -1 else f"{budget >> 20} MiB", why,
                    f", disk {s.cache_dir} up to {s.cache_disk} MiB ({cache.stats()['disk_entries']} states there)"
                    if s.cache_dir else "")

    def close(self) -> None:
        """Stop the scheduler thread (the app's shutdown)."""
        if self.scheduler is not None:
            self.scheduler.stop()

    def embedder(self) -> Any:
        """The pooled embedding context (``embedding.Embedder``) beside the engine, created on first
        use on the served model's weights; concurrent requests share its decodes."""
        return self.runtime.embedder()

    def reranker(self) -> Any:
        """The rank-pooled context of ``/v1/rerank`` (``rerank.Reranker``), created on first use on
        the served model's weights; a ValueError saying why for a model without a classifier head."""
        return self.runtime.reranker()

    def _engine_failed(self, exc: BaseException) -> None:
        self.phase, self.failure = "failed", f"the engine failed: {exc}"

    def _load_facts(self) -> dict[str, Any]:
        sched = self.scheduler
        if sched is None:
            return {}
        facts = sched.load()
        facts["max_queue"] = self.settings.max_queue
        facts["n_seq"] = sched.n_seq
        return facts

    # -------------------------------------------------------------- gates
    def require_ready(self) -> Scheduler:
        """The scheduler, or a 503 saying why there is none to serve with."""
        if self.phase == "loading":
            raise APIError(503, "the model is loading", "unavailable_error", code="model_loading",
                           headers=self.retry_headers())
        if self.phase == "draining":
            self.metrics.rejected.labels("draining").inc()
            raise APIError(503, "the server is shutting down", "unavailable_error", code="server_draining",
                           headers=self.retry_headers())
        if self.phase == "failed" or self.scheduler is None:
            raise APIError(503, f"the server cannot serve: {self.failure}", "unavailable_error",
                           code="server_failed")
        return self.scheduler

    def retry_headers(self) -> dict[str, str]:
        # x-should-retry false: the official clients would otherwise retry at once, on the
        # same overloaded replica; Retry-After tells a load balancer or a patient client when.
        return {"Retry-After": str(self.settings.retry_after), "x-should-retry": "false"}

    def check_model(self, name: str | None) -> None:
        """404 for a ``model`` field that names another model (empty: this one)."""
        if not name:
            return
        s = self.settings
        if name not in {s.model_id, Path(s.model).name, s.model, Path(s.model).stem}:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{s.model_id}'",
                           param="model", code="model_not_found")

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
        return self.scheduler.admitted if self.scheduler is not None else 0

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.in_flight() and self.engine is not None:
            logger.warning("drain timeout: cancelling %d requests", self.in_flight())
            self.engine.cancel_all()
            end = time.monotonic() + 5.0
            while self.in_flight() and time.monotonic() < end:
                await asyncio.sleep(0.05)
        logger.info("drained; exiting")
        self.on_exit(self.exit_code)
