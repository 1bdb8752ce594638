"""One model as the routes use it: its settings, and once loaded its runtime, scheduler and chat template.

A :class:`Served` exists for every model of the catalog, loaded or not; the pool
(:mod:`.pool`) decides when it loads and unloads. Loading builds one
:class:`~sarai_llama.runtime.Runtime` from the model's own settings, starts a
scheduler thread that steps its engine (taking the process's cores in turns with
the other models', :class:`Turns`) and gives it a state cache. What the routes
read (``model``, ``template``, ``n_ctx_seq``, ``n_vocab``, ``settings``) is
what the request path (:mod:`.requests`, :mod:`.runs`) needs of a model.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import _core, chat
from ..context_config import kv_cache_bytes
from ..memory import resident_anon
from .catalog import ModelSpec
from .errors import APIError
from .scheduler import Scheduler
from .settings import FLASH_ATTN_KEYWORD

if TYPE_CHECKING:
    from .metrics import ModelMetrics

__all__ = ["Served", "Status", "Turns"]

logger = logging.getLogger("sarai_llama.server")

Status = Literal["unloaded", "loading", "loaded", "failed"]
MIB = 1 << 20
#: Among many models, ``--cache-ram auto`` keeps this many KV caches' worth of conversations per model.
CACHE_KV_TIMES = 4


class Turns:
    """A fair (first come, first served) lock: the engines' steps take the cores in turn.

    Every engine uses all the process's threads, so two models stepping at once would
    put twice as many threads on the cores as there are (each step then waits for its
    slowest thread). With the steps taken in turn, two busy models share the cores
    step by step, and a lone model pays one uncontended lock per step.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        self._waiting: collections.deque[threading.Event] = collections.deque()

    def __enter__(self) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # handed over by __exit__: the lock stays held

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False


class Served:
    """One model of the catalog: ``status`` says whether it is loaded; ``cost`` what it takes (bytes).

    ``pins`` counts the requests using it now (a pinned model is never unloaded);
    ``keep_alive`` is the idle time after which it unloads (None: never; 0: at once),
    set by ``--idle-unload`` and a request's ``keep_alive``.
    """

    def __init__(self, spec: ModelSpec, metrics: ModelMetrics, cores: Turns, retry_after: int,
                 cache_share: int | None) -> None:
        self.spec, self.name, self.settings, self.role = spec, spec.name, spec.settings, spec.role
        self.metrics = metrics
        self._cores, self._retry_after, self._cache_share = cores, retry_after, cache_share
        self.status: Status = "unloaded"
        self.failure: str | None = None
        self._failed_file: tuple[int, int] | None = None  # (size, mtime) of the file that failed
        self.runtime: Any = None
        self.model: Any = None
        self.engine: Any = None
        self.scheduler: Scheduler | None = None
        self.template: chat.ChatFormat | None = None
        self.template_error: str | None = None
        self.n_ctx_seq = self.n_threads = self.n_vocab = 0
        self.cost = 0
        self._cache = 0  # the state cache's RAM budget once loaded (bytes)
        self._estimate: tuple[tuple[int, int], tuple[int, str]] | None = None  # (file state, estimate)
        self.load_seconds = 0.0
        self.pins = 0
        self.last_used = time.monotonic()
        self.keep_alive: float | None = spec.settings.idle_unload or None  # seconds; None: never
        self.on_engine_failure: Any = None  # called with the exception when the engine breaks for good

    # ------------------------------------------------------------ what it is
    @property
    def busy(self) -> bool:
        """Requests use it now (pinned, or admitted to its scheduler)."""
        return self.pins > 0 or (self.scheduler is not None and self.scheduler.admitted > 0)

    def file_facts(self) -> dict[str, Any]:
        """The GGUF header's facts (ggml's parser: safe on any file; ``ValueError`` for a non-GGUF)."""
        return dict(_core.inspect_gguf(self.spec.path))

    def estimate(self) -> tuple[int, str]:
        """(bytes, how) this model will take once loaded, from its file alone: weights (the file), the
        KV cache for its context, compute buffers (a bound from its shapes) and its state cache.
        Worked out once per state of the file (size, mtime): ``/v1/models`` asks on every call."""
        stat = os.stat(self.spec.path)
        key = (stat.st_size, stat.st_mtime_ns)
        if self._estimate is None or self._estimate[0] != key:
            self._estimate = (key, self._estimate_now(stat.st_size))
        return self._estimate[1]

    def _estimate_now(self, weights: int) -> tuple[int, str]:
        settings = self.settings
        try:
            meta = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                    for k, v in self.file_facts().items()}
        except (ValueError, RuntimeError):
            meta = {}
        arch = str(meta.get("general.architecture", ""))

        def fact(key: str, default: int = 0) -> int:
            value = meta.get(f"{arch}.{key}")
            return int(value) if isinstance(value, (int, float)) else default

        cells = settings.ctx_size or fact("context_length", 4096)
        kv = kv_cache_bytes(meta, cells, settings.cache_type_k, settings.cache_type_v) if self.role == "generate" else 0
        ubatch = min(settings.ubatch_size or 512, settings.batch_size)
        n_embd, n_ff, n_head = fact("embedding_length"), fact("feed_forward_length"), fact("attention.head_count", 1)
        per_seq = cells // max(1, settings.parallel)
        compute = 4 * ubatch * (2 * n_ff + 8 * n_embd + n_head * min(per_seq, cells)) + 64 * MIB
        cache = self._cache_bytes(kv) if self.role == "generate" else 0
        total = weights + kv + compute + cache
        return total, (f"weights {weights // MIB} MiB + KV {kv // MIB} MiB + compute about {compute // MIB} MiB"
                       + (f" + state cache {cache // MIB} MiB" if cache else ""))

    def _cache_bytes(self, kv: int) -> int:
        """The state cache's RAM budget among many models: ``--cache-ram`` MiB, or under "auto"
        :data:`CACHE_KV_TIMES` times the model's KV cache, at most its share of the budget."""
        ram = self.settings.cache_ram
        if ram == "auto":
            return min(self._cache_share or 0, CACHE_KV_TIMES * kv)
        return 0 if ram == -1 else int(ram) << 20

    # ------------------------------------------------------------ loading
    def load(self) -> None:
        """Load the model (blocking: the pool runs this in a thread) and start its scheduler; on failure
        ``status`` is "failed" and ``failure`` says why (and the exception propagates)."""
        from ..runtime import Runtime

        s = self.settings
        self.status = "loading"
        t0 = time.monotonic()
        anon0 = resident_anon()
        try:
            if s.debug_load_delay:
                time.sleep(s.debug_load_delay)
            # a hostile file raises ModelLoadError; SARAI_TRUSTED_MODELS skips the probe
            context: dict[str, Any] = dict(n_ctx=s.ctx_size, n_batch=s.batch_size, n_ubatch=s.ubatch_size,
                                           flash_attn=FLASH_ATTN_KEYWORD[s.flash_attn])
            if self.role == "generate":
                context.update(n_seq_max=s.parallel, step_budget_ms=s.step_budget_ms, type_k=s.cache_type_k,
                               type_v=s.cache_type_v)
            else:
                context.update(embeddings=True, pooling_type="rank" if self.role == "rank" else "unspecified")
            rt = Runtime(s.model, threads=s.thread_choice(), seed=s.seed, speculation=s.speculation(),
                         chat_format=s.chat_format, verbose=s.log_level == "debug", mmproj=s.mmproj, **context)
            self.runtime, self.model = rt, rt.model
            self.n_threads, self.n_vocab = rt.threads.n_threads, int(rt.model.n_vocab)
            if rt.engine is not None:
                self._start_engine(rt)
            else:
                self.n_ctx_seq = rt.n_ctx
                self.template_error = self._not_generative()
                logger.info("model %s loaded (%s: a pooled context of %d tokens, %d threads)", self.name,
                            self.role, self.n_ctx_seq, self.n_threads)
        except BaseException as exc:
            self.unload()
            self.status, self.failure = "failed", str(exc)
            stat = os.stat(self.spec.path) if Path(self.spec.path).exists() else None
            self._failed_file = (stat.st_size, stat.st_mtime_ns) if stat else None
            raise
        self.load_seconds = time.monotonic() - t0
        estimate, _ = self.estimate()
        self.cost = max(estimate, os.stat(self.spec.path).st_size + max(0, resident_anon() - anon0) + self._cache)
        self.status, self.failure = "loaded", None
        self.last_used = time.monotonic()

    def failed_before(self) -> str | None:
        """Why the last load failed, if the file is the same one (size, mtime) since: not tried again."""
        if self.status != "failed" or self._failed_file is None or not Path(self.spec.path).exists():
            return None
        stat = os.stat(self.spec.path)
        return self.failure if (stat.st_size, stat.st_mtime_ns) == self._failed_file else None

    def _start_engine(self, rt: Any) -> None:
        s = self.settings
        engine = rt.engine
        try:
            self.template = rt.chat_format()
            logger.info("model %s: chat template: %s", self.name, self.template.why)
        except ValueError as exc:  # completions still work; chat answers why not
            self.template_error = str(exc)
        self.engine, self.n_ctx_seq = engine, engine.n_ctx_seq
        scheduler = Scheduler(engine, s.max_queue, on_step_error=self._engine_failed, cores=self._cores)
        scheduler.start()
        self.scheduler = scheduler
        logger.info("model %s loaded: %s (%d threads, %d sequences, %d context cells, %d per sequence)",
                    self.name, s.model, self.n_threads, s.parallel, engine.n_ctx, self.n_ctx_seq)
        kv = rt.kv_bytes()
        logger.info("KV cache: %s (K %s, V %s, flash attention %s)",
                    f"at most {kv / MIB:.0f} MiB" if kv else "size unknown for this architecture",
                    s.cache_type_k, s.cache_type_v, s.flash_attn)
        self._start_state_cache(rt)

    def _start_state_cache(self, rt: Any) -> None:
        """Give the engine its state cache, sized by --cache-ram or by the pod (logged with the reason)."""
        s = self.settings
        ram: int | str = s.cache_ram
        if ram == "auto" and self._cache_share is not None:  # many models: each its share of the budget
            ram = self._cache_bytes(rt.kv_bytes()) >> 20
        budget, why = rt.start_state_cache(ram, s.cache_dir, s.cache_disk)
        if s.cache_ram != "auto":
            why = f"--cache-ram {s.cache_ram}" + (f": {why}" if s.cache_ram == -1 else "")
        elif self._cache_share is not None:
            why = (f"auto among many models: {CACHE_KV_TIMES} x its KV cache, at most "
                   f"{self._cache_share >> 20} MiB of --models-memory")
        self._cache = budget if budget < 1 << 60 else 0
        if budget == 0:
            logger.info("state cache: off (%s)", why)
            return
        cache = rt.engine.state_cache
        logger.info("state cache: %s RAM (%s)%s", "no limit" if s.cache_ram == -1 else f"{budget >> 20} MiB", why,
                    f", disk {s.cache_dir} up to {s.cache_disk} MiB ({cache.stats()['disk_entries']} states there)"
                    if s.cache_dir else "")

    def unload(self) -> None:
        """Stop the scheduler (its thread keeps the conversations' states where a disk cache is set) and free
        the runtime; ``status`` is "unloaded"."""
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = self.model = self.engine = self.scheduler = self.template = self.template_error = None
        self.cost = 0
        self.status = "unloaded"

    def _engine_failed(self, exc: BaseException) -> None:
        self.status, self.failure = "failed", f"the engine failed: {exc}"
        if self.on_engine_failure is not None:
            self.on_engine_failure(exc)

    # ------------------------------------------------------------ what routes use
    def require_ready(self) -> Scheduler:
        """The scheduler of a loaded, generating model; a 400 for an embedding model, a 503 for a broken one."""
        if self.scheduler is None and self.role != "generate":
            raise APIError(400, self._not_generative(), param="model", code="model_not_generative")
        if self.scheduler is None or self.status == "failed":
            raise APIError(503, f"the model '{self.name}' cannot serve: {self.failure or 'not loaded'}",
                           "unavailable_error", code="server_failed")
        return self.scheduler

    def _not_generative(self) -> str:
        kind = "an embedding" if self.role == "embed" else "a rerank"
        return f"the model '{self.name}' is {kind} model (role {self.role}): it does not generate"

    def retry_headers(self) -> dict[str, str]:
        # x-should-retry false: the official clients would otherwise retry at once, on the
        # same overloaded replica; Retry-After tells a load balancer or a patient client when.
        return {"Retry-After": str(self._retry_after), "x-should-retry": "false"}

    def embedder(self) -> Any:
        """The pooled embedding context: the model itself for an "embed" model, else one beside the
        engine created on first use on the same weights; concurrent requests share its decodes."""
        if self.role == "embed":
            return self.runtime.pooled
        if self.role == "rank":
            raise ValueError(f"the model '{self.name}' is a rerank model: it does not embed")
        return self.runtime.embedder()

    def reranker(self) -> Any:
        """The rank-pooled context of ``/v1/rerank`` (``rerank.Reranker``); a ValueError saying why for a
        model without a classifier head."""
        if self.role == "rank":
            return self.runtime.pooled
        return self.runtime.reranker()

    def describe(self) -> dict[str, Any]:
        """What ``/v1/models`` says of it: status, memory cost when loaded, context size."""
        out: dict[str, Any] = {"status": self.status, "role": self.role, "file": Path(self.spec.path).name}
        if self.status == "loaded":
            out.update(memory_bytes=self.cost, n_ctx=self.n_ctx_seq, load_seconds=round(self.load_seconds, 3))
        else:
            # the unified KV cache: one request may use every cell (0: the model's training length)
            out.update(n_ctx=self.settings.ctx_size or None, estimated_bytes=self.estimate()[0])
        if self.failure:
            out["failure"] = self.failure
        return out
