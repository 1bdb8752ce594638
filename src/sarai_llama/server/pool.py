"""The loaded set: which models are in memory, loaded on first request, kept within a memory budget.

Every model of the catalog is a :class:`~.served.Served`. :meth:`ModelPool.use`
gives a route its model, loading it first where needed:

- one load at a time, in a thread (the event loop and the loaded models keep
  serving), and requests that want a model being loaded wait for that load;
- before a load, what the model will take (:meth:`Served.estimate`: weights, KV
  cache, compute buffers, state cache) is made room for in the budget
  (``--models-memory``: the cgroup limit less a margin) by unloading the least
  recently used idle models; when every model that would have to go is busy,
  the request gets a 503 with Retry-After (never an OOM kill);
- a model that fails to load answers that request (and the next ones, until its
  file changes) with a 500 naming it and llama.cpp's reason; nothing else is
  disturbed.

A request pins its model until its response is sent (the gate releases the
pins); then ``keep_alive`` decides: ``--idle-unload`` seconds, or the request's
own (Ollama's ``keep_alive``: 0 unloads at once, a negative one keeps it).
Every load and unload is logged with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..memory import explain_models_budget
from .catalog import ModelSpec
from .errors import APIError
from .metrics import Metrics, ModelFacts
from .served import Served, Turns
from .settings import Settings

__all__ = ["PINS_KEY", "ModelPool", "parse_keep_alive"]

logger = logging.getLogger("sarai_llama.server")

#: The request scope's list of the models a request pinned (released by the gate once it answered).
PINS_KEY = "sarai_pins"
MIB = 1 << 20
#: How often idle models are looked at for ``keep_alive`` (seconds).
IDLE_CHECK_S = 0.25
#: Each loaded model's state cache under ``--cache-ram auto``: this share of the budget, at most 1 GiB.
CACHE_SHARE = 8


def parse_keep_alive(value: Any) -> float | None:
    """Ollama's ``keep_alive`` as seconds: a number (seconds), or a duration ``"5m"``, ``"1h30m"``,
    ``"300ms"``; negative: keep loaded (None); 0: unload once answered. ``ValueError`` otherwise."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"keep_alive must be a duration (\"5m\") or seconds, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text, seconds, number = str(value).strip(), 0.0, ""
        units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
        i, sign = 0, 1.0
        if text.startswith("-"):
            sign, text = -1.0, text[1:]
        if not text:
            raise ValueError(f"keep_alive must be a duration (\"5m\") or seconds, not {value!r}")
        try:
            if text.replace(".", "", 1).isdigit():
                seconds = float(text)
            else:
                while i < len(text):
                    number = ""
                    while i < len(text) and (text[i].isdigit() or text[i] == "."):
                        number += text[i]
                        i += 1
                    unit = ""
                    while i < len(text) and not (text[i].isdigit() or text[i] == "."):
                        unit += text[i]
                        i += 1
                    seconds += float(number) * units[unit]
        except (KeyError, ValueError):
            raise ValueError(f"keep_alive must be a duration (\"5m\", \"1h30m\") or seconds, not {value!r}") from None
        seconds *= sign
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"keep_alive must be finite, not {value!r}")
    return None if seconds < 0 else seconds


class ModelPool:
    """Every model of the catalog, the loaded ones within ``--models-memory``."""

    def __init__(self, settings: Settings, specs: dict[str, ModelSpec], metrics: Metrics) -> None:
        self.settings = settings
        if settings.models_memory == "auto":
            self.budget, self.budget_why = explain_models_budget()
        else:
            self.budget = int(settings.models_memory) * MIB
            self.budget_why = f"--models-memory {settings.models_memory}"
        many = len(specs) > 1 or settings.many
        cache_share = min(self.budget // CACHE_SHARE, 1 << 30) if many else None
        cores = Turns()
        self.models: dict[str, Served] = {
            name: Served(spec, metrics.for_model(name), cores, settings.retry_after, cache_share)
            for name, spec in specs.items()}
        self.default: Served | None = next(iter(self.models.values())) if settings.model else None
        self.many = many
        self._aliases: dict[str, Served] = {}
        for served in self.models.values():
            for alias in sorted(served.spec.aliases):
                self._aliases.setdefault(alias, served)
        for served in self.models.values():  # a model's own name wins over another's file name
            self._aliases[served.name] = served
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._load_lock = asyncio.Lock()
        self._idle_task: asyncio.Task[None] | None = None
        metrics.bind(self.facts)
        if many:
            logger.info("models: %s; memory budget %d MiB (%s)", ", ".join(self.models), self.budget // MIB,
                        self.budget_why)

    # ------------------------------------------------------------ finding
    def names(self) -> list[str]:
        return list(self.models)

    def find(self, name: str | None) -> Served:
        """The model a request names (empty: the default one); a 404 listing the names otherwise."""
        if not name:
            if self.default is not None:
                return self.default
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise APIError(400, f"this server serves several models: name one in 'model' ({self._listing()})",
                           param="model", code="model_required")
        served = self._aliases.get(name) or self._aliases.get(name.removesuffix(":latest"))
        if served is None:
            raise APIError(404, f"The model '{name}' does not exist; this server serves {self._listing()}",
                           param="model", code="model_not_found")
        return served

    def _listing(self) -> str:
        return ", ".join(f"'{n}'" for n in self.models)

    def loaded(self) -> list[Served]:
        return [s for s in self.models.values() if s.status == "loaded"]

    def used(self) -> int:
        """Bytes the loaded (and loading) models take."""
        return sum(s.cost for s in self.models.values() if s.status in ("loaded", "loading"))

    def facts(self) -> list[ModelFacts]:
        """The loaded engines' gauges for the metrics' scrape: (name, load, stats)."""
        out: list[ModelFacts] = []
        for served in self.loaded():
            load: dict[str, Any] = {"memory_bytes": served.cost}
            stats: dict[str, Any] = {}
            sched = served.scheduler
            if sched is not None:
                load.update(sched.load(), max_queue=sched.max_queue, n_seq=sched.n_seq)
                stats = served.engine.stats()
            out.append((served.name, load, stats))
        return out

    # ------------------------------------------------------------ using
    async def use(self, served: Served, scope: dict[str, Any] | None, keep_alive: float | None | str = "default"
                  ) -> Served:
        """Pin ``served`` for this request (``scope``: released by the gate once answered; None: the caller
        calls :meth:`release`), loading it first where needed. ``keep_alive``: seconds it stays after
        this request, None forever, "default" its ``--idle-unload`` (as Ollama, each request sets it anew)."""
        served.pins += 1
        try:
            if served.status != "loaded":
                await self.load(served)
            if served.role == "generate":
                served.require_ready()  # a 503 for an engine that broke
        except BaseException:
            served.pins -= 1
            raise
        served.keep_alive = (served.settings.idle_unload or None) if keep_alive == "default" \
            else keep_alive  # type: ignore[assignment]
        served.last_used = time.monotonic()
        if scope is not None:
            scope.setdefault(PINS_KEY, []).append(served)
        return served

    def release(self, served: Served) -> None:
        """A request that pinned ``served`` answered: unload now under keep_alive 0."""
        served.pins -= 1
        served.last_used = time.monotonic()
        if served.keep_alive == 0 and not served.busy and served.status == "loaded":
            self.unload(served, "keep_alive 0: unloaded once answered")

    async def load(self, served: Served) -> None:
        """Load ``served`` (once, however many requests wait for it), making room first; the HTTP error
        of a failure (500 naming the model and llama.cpp's reason, 503 when there is no room)."""
        pending = self._loading.get(served.name)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[served.name] = pending
            asyncio.get_running_loop().create_task(self._load(served, pending))
        await asyncio.shield(pending)

    async def _load(self, served: Served, done: asyncio.Future[None]) -> None:
        try:
            async with self._load_lock:  # one load at a time: the budget's arithmetic holds
                if served.status == "loaded":
                    done.set_result(None)
                    return
                why = served.failed_before()
                if why is not None:
                    raise _load_error(served, why)
                if served.runtime is not None:  # its engine broke while serving: a fresh load
                    self.unload(served, f"reloading after: {served.failure}")
                need, how = served.estimate()
                self._make_room(served, need, how)
                served.cost = need
                t0 = time.monotonic()
                logger.info("loading model %s (%s: about %d MiB = %s)", served.name, served.spec.path, need // MIB,
                            how)
                try:
                    await asyncio.get_running_loop().run_in_executor(None, served.load)
                except Exception as exc:
                    logger.error("loading model %s failed: %s", served.name, exc)
                    raise _load_error(served, str(exc)) from None
                served.metrics.load_time.observe(time.monotonic() - t0)
                logger.info("model %s ready in %.2f s: %d MiB (%d of %d MiB in use by %d models)", served.name,
                            served.load_seconds, served.cost // MIB, self.used() // MIB, self.budget // MIB,
                            len(self.loaded()))
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: no "never retrieved" warning when nobody waits any more
        finally:
            self._loading.pop(served.name, None)

    def _make_room(self, served: Served, need: int, how: str) -> None:
        """Unload least recently used idle models until ``need`` bytes fit in the budget (and
        ``--models-max``); a 503 when the busy ones leave no room, a 507 when nothing ever could."""
        cap = self.settings.models_max
        if need > self.budget and self.budget:
            raise APIError(507, f"the model '{served.name}' needs about {need // MIB} MiB ({how}), more than the "
                           f"memory budget of {self.budget // MIB} MiB ({self.budget_why})", "server_error",
                           code="model_too_large", headers={"x-should-retry": "false"})
        others = sorted((s for s in self.loaded() if s is not served), key=lambda s: s.last_used)
        while (self.budget and self.used() + need > self.budget) or (cap and len(self.loaded()) >= cap):
            idle = [s for s in others if not s.busy and s.status == "loaded"]
            if not idle:
                busy = ", ".join(f"'{s.name}'" for s in self.loaded())
                served.metrics.rejected.labels("models_busy").inc()
                raise APIError(503, f"no room to load '{served.name}' (about {need // MIB} MiB): the memory "
                               f"budget has {max(0, self.budget - self.used()) // MIB} of {self.budget // MIB} MiB "
                               f"free and every loaded model ({busy}) is busy; retry later", "unavailable_error",
                               code="models_busy", headers=served.retry_headers())
            victim = idle[0]
            others.remove(victim)
            self.unload(victim, f"least recently used, to make room for '{served.name}' ({need // MIB} MiB)")

    def unload(self, served: Served, reason: str) -> None:
        """Unload ``served`` now (idle models only: the caller checked), logged with ``reason``."""
        freed = served.cost
        served.unload()
        served.metrics.unloaded(reason.split(":")[0].split(",")[0].split(" ")[0])
        logger.info("unloaded model %s (%s): %d MiB freed, %d MiB in use by %d models", served.name, reason,
                    freed // MIB, self.used() // MIB, len(self.loaded()))

    # ------------------------------------------------------------ idle
    def start(self) -> None:
        """Begin looking at idle models (in the running event loop)."""
        if self._idle_task is None:
            self._idle_task = asyncio.get_running_loop().create_task(self._watch_idle())

    async def _watch_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            now = time.monotonic()
            for served in self.loaded():
                ka = served.keep_alive
                if ka is not None and not served.busy and served.name not in self._loading \
                        and now - served.last_used >= ka:
                    self.unload(served, f"idle for {now - served.last_used:.1f} s (keep_alive {ka:g} s)")

    def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        for served in self.models.values():
            if served.status in ("loaded", "failed"):
                served.unload()


def _load_error(served: Served, why: str) -> APIError:
    return APIError(500, f"the model '{served.name}' could not be loaded: {why}", "server_error",
                    param="model", code="model_load_failed")
