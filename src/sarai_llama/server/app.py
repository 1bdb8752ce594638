"""The OpenAI-compatible HTTP face: routes, errors, auth, body limits, SSE, drain.

Handlers parse (pydantic), render chat templates and tokenize on their side
(worker threads, so the event loop never waits on C++), then hand one
:class:`~sarai_llama.engine.Request` to the scheduler thread and read its
pieces back from an asyncio queue. Responses are built with
:mod:`sarai_llama.responses` only.

Lifecycle: the HTTP server listens before the model is loaded (``/health`` says
503 "loading"), then 200. SIGTERM flips ``/health`` to 503 "draining", refuses
new work with 503, lets running generations finish within ``drain_timeout``
(then cancels them), and exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import chat, chat_completion, responses
from ..chat_template import ChatOutput, RenderedChat, response_grammar
from ..engine import Piece, Request
from ..sampling import SamplingParams
from .metrics import Metrics
from .scheduler import Full, Job, Scheduler
from .settings import Settings

__all__ = ["APIError", "ServerState", "create_app"]

logger = logging.getLogger("sarai_llama.server")
access_logger = logging.getLogger("sarai_llama.access")


# ----------------------------------------------------------------------------- errors
class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# ----------------------------------------------------------------------------- request bodies
class _Body(BaseModel):
    # Unknown fields are ignored, as llama-server and OpenAI do: clients written for
    # either (and their newer fields) keep working.
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    """Fields shared by completions and chat: OpenAI's, then llama.cpp's extensions."""

    model: str | None = None
    max_tokens: int | None = None
    n_predict: int | None = None  # llama-server's name; -1 = until the context ends
    temperature: float | None = None
    top_p: float | None = None
    # Optional with defaults: some clients send explicit nulls for fields they leave unset.
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None
    # llama.cpp extensions
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    penalty_last_n: int | None = None
    mirostat: int | None = None
    mirostat_mode: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    grammar: str | None = None
    ignore_eos: bool | None = False
    cache_prompt: bool | None = True  # prefix reuse is always on; accepted for llama-server clients
    n_probs: int | None = None
    response_format: dict[str, Any] | None = None
    json_schema: dict[str, Any] | None = None


class CompletionBody(_Generation):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None


class Message(_Body):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a "tool" message answers this call


class ChatBody(_Generation):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None  # OpenAI's deprecated form of tools
    function_call: str | dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # llama-server's extra template variables


class TokenizeBody(_Body):
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeBody(_Body):
    tokens: list[int]


class EmbeddingBody(_Body):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


# ----------------------------------------------------------------------------- state
@dataclass
class Prepared:
    """A request ready for the engine, with what the response needs."""

    request: Request
    n_prompt: int
    echo_text: str = ""
    include_usage: bool = False
    rendered: RenderedChat | None = None  # a chat request: how its answer is parsed

    def output(self) -> ChatOutput | None:
        """A fresh reader of one choice's answer (chat requests only)."""
        return self.rendered.output() if self.rendered is not None else None


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
        self.n_vocab = 0
        self.created = responses.now()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_exit: Callable[[int], None] = lambda code: None
        self.exit_code = 0
        self._drain_task: asyncio.Task[None] | None = None
        self._embedder: Any = None
        self._embed_lock = threading.Lock()

    # -------------------------------------------------------------- loading
    def load(self) -> None:
        """Load the model and start the scheduler (in a thread: the HTTP server is already up)."""
        from .. import _core
        from ..context_config import ContextConfig
        from ..engine import Engine

        s = self.settings
        try:
            if s.debug_load_delay:
                time.sleep(s.debug_load_delay)
            n_threads = s.n_threads()
            config = ContextConfig(n_ctx=s.ctx_size, n_batch=s.batch_size, n_ubatch=s.ubatch_size,
                                   n_threads=n_threads, n_seq_max=s.parallel)
            _core.set_log_level(2 if s.log_level == "debug" else 4)
            from ..loading import load_model

            model = load_model(s.model)  # a hostile file raises ModelLoadError; SARAI_TRUSTED_MODELS skips the probe
            engine = Engine(model, config, s.seed)
            meta = dict(model.metadata())
            arch = meta.get("general.architecture", "")
            arch = arch.decode(errors="replace") if isinstance(arch, bytes) else str(arch)
            try:
                self.template = chat.resolve_chat_format(model, arch, s.chat_format)
                logger.info("chat template: %s", self.template.why)
            except ValueError as exc:  # completions still work; chat answers why not
                self.template_error = str(exc)
            self.model, self.engine = model, engine
            self.n_ctx_seq = engine.n_ctx_seq
            self.n_vocab = int(model.n_vocab)
            scheduler = Scheduler(engine, s.max_queue, on_step_error=self._engine_failed)
            self.metrics.bind(self._load_facts, engine.stats)
            scheduler.start()
            self.scheduler = scheduler
            logger.info("model loaded: %s (%d threads, %d sequences, %d context cells, %d per sequence)",
                        s.model, n_threads, s.parallel, engine.n_ctx, self.n_ctx_seq)
            if self.phase == "loading":
                self.phase = "ready"
        except Exception as exc:
            logger.error("loading %s failed: %s", s.model, exc)
            self.phase, self.failure = "failed", str(exc)
            self.exit_code = 1
            self.on_exit(1)

    def embedder(self) -> Any:
        """The pooled embedding context, created on first use (a second context on the same
        file: the weights are mmap-shared). Its own lock serialises embedding requests."""
        with self._embed_lock:
            if self._embedder is None:
                from ..llama import Llama

                s = self.settings
                self._embedder = Llama(s.model, embedding=True, n_ctx=min(self.n_ctx_seq, 8192),
                                       n_batch=min(self.n_ctx_seq, 8192), n_threads=s.n_threads(), verbose=False)
            return self._embedder

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
        if self.phase == "loading":
            raise APIError(503, "the model is loading", "unavailable_error", code="model_loading",
                           headers=self._retry_headers())
        if self.phase == "draining":
            self.metrics.rejected.labels("draining").inc()
            raise APIError(503, "the server is shutting down", "unavailable_error", code="server_draining",
                           headers=self._retry_headers())
        if self.phase == "failed" or self.scheduler is None:
            raise APIError(503, f"the server cannot serve: {self.failure}", "unavailable_error",
                           code="server_failed")
        return self.scheduler

    def _retry_headers(self) -> dict[str, str]:
        # x-should-retry false: the official clients would otherwise retry at once, on the
        # same overloaded replica; Retry-After tells a load balancer or a patient client when.
        return {"Retry-After": str(self.settings.retry_after), "x-should-retry": "false"}

    def check_model(self, name: str | None) -> None:
        if not name:
            return
        s = self.settings
        from pathlib import Path

        if name not in {s.model_id, Path(s.model).name, s.model, Path(s.model).stem}:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{s.model_id}'",
                           param="model", code="model_not_found")

    # -------------------------------------------------------------- drain
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

    # -------------------------------------------------------------- requests
    def tokenize_prompt(self, text: str) -> list[int]:
        model = self.model
        tokens = list(model.tokenize(text.encode("utf-8"), bool(model.add_bos), True)) if text else (
            [int(model.token_bos)] if model.add_bos else [])
        return tokens

    def check_tokens(self, tokens: list[int], param: str) -> None:
        if not tokens:
            raise _bad("the prompt is empty", param)
        for t in tokens:
            if not 0 <= t < self.n_vocab:
                raise _bad(f"token id {t} is out of range [0, {self.n_vocab})", param)


# ----------------------------------------------------------------------------- parameters
def sampling_from(body: _Generation, n_vocab: int) -> SamplingParams:
    """The HTTP body's sampling fields -> :class:`SamplingParams` (its checks: ValueError -> 400)."""
    kw: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                 "frequency_penalty", "seed", "mirostat_tau", "mirostat_eta", "grammar"):
        value = getattr(body, name)
        if value is not None:
            kw[name] = value
    last_n = body.penalty_last_n if body.penalty_last_n is not None else body.repeat_last_n
    if last_n is not None:
        kw["penalty_last_n"] = last_n
    mirostat = body.mirostat_mode if body.mirostat_mode is not None else body.mirostat
    if mirostat is not None:
        kw["mirostat_mode"] = mirostat
    if body.logit_bias:
        for key, value in body.logit_bias.items():
            if key.isdigit() and int(key) >= n_vocab:
                raise _bad(f"logit_bias token id {key} is out of range [0, {n_vocab})", "logit_bias")
            if not -100.0 <= value <= 100.0:  # OpenAI's range; the Python API takes any float
                raise _bad(f"logit_bias[{key}] must be in [-100, 100], not {value:g}", "logit_bias")
        kw["logit_bias"] = tuple(body.logit_bias.items())
    try:
        return SamplingParams(**kw)
    except ValueError as exc:
        param = str(exc).split(" ", 1)[0]
        raise _bad(str(exc), param if param in SamplingParams.__dataclass_fields__ else None) from None


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > 16 or any(len(s) > 1000 for s in stops):
        raise _bad("at most 16 stop strings of at most 1000 characters each", "stop")
    return [s for s in stops if s]


def _max_tokens(state: ServerState, body: _Generation, requested: int | None, n_prompt: int,
                default: int | None) -> int | None:
    """The generation budget, checked against the context like OpenAI does (400, never a silent cut)."""
    if requested is None and body.n_predict is not None:
        requested = None if body.n_predict < 0 else body.n_predict
    elif requested is None:
        requested = default
    limit = state.n_ctx_seq
    if n_prompt >= limit:
        raise _bad(f"This model's maximum context length is {limit} tokens. However, your prompt is {n_prompt} "
                   "tokens. Please reduce the length of the prompt.", "messages", "context_length_exceeded")
    if requested is None:
        return None
    if requested < 1:
        raise _bad(f"max_tokens must be at least 1, not {requested}", "max_tokens")
    cap = state.settings.max_tokens_limit
    if cap and requested > cap:
        raise _bad(f"max_tokens is {requested}; this server allows at most {cap}", "max_tokens")
    if n_prompt + requested > limit:
        raise _bad(f"This model's maximum context length is {limit} tokens. However, you requested "
                   f"{n_prompt + requested} tokens ({n_prompt} in the prompt, {requested} in the completion). "
                   "Please reduce the length of the prompt or completion.", "max_tokens", "context_length_exceeded")
    return requested


def _check_unsupported(body: _Generation) -> None:
    if body.n is not None and not 1 <= body.n <= 16:
        raise _bad(f"n must be in [1, 16], not {body.n}", "n")


def _response_grammar(body: _Generation) -> str | None:
    """GBNF for the body's ``response_format``/``json_schema`` (400 for a bad or conflicting one)."""
    try:
        return response_grammar(body.response_format, body.json_schema, body.grammar)
    except ValueError as exc:
        raise _bad(str(exc), "response_format") from None


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


# ----------------------------------------------------------------------------- running one request
class Run:
    """One admitted request: submits it, yields its pieces, releases its place, counts it."""

    def __init__(self, state: ServerState, prepared: Prepared, http: HTTPRequest) -> None:
        self.state = state
        self.prepared = prepared
        self.http = http
        self.log: dict[str, Any] = http.scope.setdefault("sarai_log", {})
        self.scheduler = state.require_ready()
        try:
            self.scheduler.admit()
        except Full as exc:
            state.metrics.rejected.labels("queue_full").inc()
            raise APIError(503, f"the server is busy: {exc}; retry later", "unavailable_error",
                           code="server_busy", headers=state._retry_headers()) from None
        loop = asyncio.get_running_loop()
        self.job: Job = self.scheduler.submit(prepared.request, loop)
        self.finished = False
        self.released = False
        self.last_t: float | None = None
        self.usage: responses.Usage = responses.usage(prepared.n_prompt, 0)
        self.n_reused = 0
        self.log.update(prompt_tokens=prepared.n_prompt)

    async def submitted(self) -> None:
        """Wait until the engine accepted the request (at most one step), so that a request it
        refuses (a grammar that does not parse) is a 400 before a stream's 200 goes out."""
        try:
            await self.job.submitted.wait()
        except BaseException:
            self.close()
            raise
        if self.job.submit_error is not None:
            self.finished = True
            self.close()
            raise _bad(str(self.job.submit_error))

    async def events(self, ping: bool = False) -> AsyncIterator[tuple[list[Piece], str | None] | None]:
        """``(pieces, error)`` as they arrive; with ``ping``, ``None`` after ``ping_interval`` s without any.

        Pings come from one timer per stream that checks every half interval whether
        anything arrived, not from a timeout around every read (``asyncio.wait_for``
        costs a task and a timer per token)."""
        job = self.job
        timer: asyncio.TimerHandle | None = None
        if ping:
            loop = asyncio.get_running_loop()
            tick = self.state.settings.ping_interval / 2  # a ping after one to two ticks of silence

            def check() -> None:
                nonlocal timer
                if job.quiet:
                    job.events.put_nowait(None)
                job.quiet = True
                timer = loop.call_later(tick, check)

            job.quiet = True
            timer = loop.call_later(tick, check)
        try:
            while True:
                event = await job.events.get()
                if event is None:
                    yield None
                    continue
                pieces, done, error = event
                self._account(pieces)
                if done:
                    self.finished = True
                    if job.submit_error is not None:
                        raise _bad(str(job.submit_error))
                yield pieces, error
                if done:
                    return
        finally:
            if timer is not None:
                timer.cancel()
            self.close()

    def _account(self, pieces: list[Piece]) -> None:
        now = time.monotonic()
        m = self.state.metrics
        n_new = sum(len(p.tokens) for p in pieces)
        if n_new:
            if self.job.t_first is None:
                self.job.t_first = now
                m.ttft.observe(now - self.job.t_submit)
                self.log["ttft_ms"] = round((now - self.job.t_submit) * 1000, 2)
            elif self.last_t is not None:
                gap = (now - self.last_t) / n_new
                for _ in range(n_new):
                    m.itl.observe(gap)
            self.last_t = now
            m.tokens_predicted.inc(n_new)
        if pieces:
            self.usage = pieces[-1].usage
            self.n_reused = pieces[-1].n_reused

    def close(self) -> None:
        """Release the admission place once; a request the client abandoned is cancelled now."""
        if self.released:
            return
        self.released = True
        if not self.finished:
            self.job.cancel()
            self.log["cancelled"] = True
        self.scheduler.release()
        m = self.state.metrics
        if self.job.handle is not None:  # it reached the engine: its prompt was (being) evaluated
            m.prompt_tokens.inc(max(0, self.prepared.n_prompt - self.n_reused))
            m.reused_tokens.inc(self.n_reused)
        m.duration.observe(time.monotonic() - self.job.t_submit)
        self.log.update(completion_tokens=self.usage["completion_tokens"], reused_tokens=self.n_reused)

    async def watch_disconnect(self) -> None:
        """For non-streaming answers: a client that hangs up cancels its generation at once."""
        while True:
            message = await self.http.receive()
            if message["type"] == "http.disconnect":
                self.job.cancel()
                return


async def _collect(run: Run) -> tuple[str, str | None, responses.CompletionLogprobs | None]:
    text: list[str] = []
    finish: str | None = None
    lp: responses.CompletionLogprobs | None = None
    watcher = asyncio.get_running_loop().create_task(run.watch_disconnect())
    try:
        async for item in run.events():
            assert item is not None
            pieces, error = item
            if error is not None:
                raise APIError(500, f"generation failed: {error}", "server_error")
            for p in pieces:
                text.append(p.text)
                if p.logprobs is not None:
                    if lp is None:
                        lp = responses.empty_logprobs()
                    responses.merge_logprobs(lp, p.logprobs)
                if p.finish_reason is not None:
                    finish = p.finish_reason
    finally:
        watcher.cancel()
    if finish == "cancelled":
        raise APIError(503, "the request was cancelled (the server is shutting down)", "unavailable_error",
                       code="cancelled")
    run.log["finish_reason"] = finish
    return "".join(text), finish, lp


class _RunStream(StreamingResponse):
    """A stream whose runs are closed however the response ends: a client that hangs up before
    the first chunk never starts the body generator, whose own ``finally`` would then never run."""

    def __init__(self, runs: list[Run], content: AsyncIterator[bytes], **kw: Any) -> None:
        super().__init__(content, **kw)
        self.runs = runs

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for run in self.runs:
                run.close()


# ----------------------------------------------------------------------------- the app
def create_app(settings: Settings) -> tuple[FastAPI, ServerState]:
    state = ServerState(settings)

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        threading.Thread(target=state.load, name="sarai-load", daemon=True).start()
        yield
        if state.scheduler is not None:
            state.scheduler.stop()

    from contextlib import asynccontextmanager

    app = FastAPI(title="sarai-llama", lifespan=asynccontextmanager(lifespan), docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.sarai = state

    @app.exception_handler(APIError)
    async def _api_error(request: HTTPRequest, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
            return _bad(message, None, "invalid_json").response()
        message = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                            for e in errors[:5])
        return _bad(message, ".".join(loc) or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), type_).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s", request.url.path)
        return APIError(500, f"internal error: {type(exc).__name__}", "server_error").response()

    # ------------------------------------------------------------------ health, metrics, models
    @app.get("/health")
    async def health() -> JSONResponse:
        if state.phase == "ready":
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": state.phase, **({"error": state.failure} if state.failure else {})},
                            status_code=503, headers=state._retry_headers())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models() -> JSONResponse:
        meta: dict[str, Any] = {}
        if state.model is not None:
            meta = {"n_vocab": state.n_vocab, "n_ctx_train": int(state.model.n_ctx_train),
                    "n_ctx": state.n_ctx_seq, "n_params": int(state.model.n_params),
                    "size": int(state.model.size), "parallel": settings.parallel}
        return JSONResponse({"object": "list", "data": [
            {"id": settings.model_id, "object": "model", "created": state.created, "owned_by": "sarai-llama",
             "meta": meta}]})

    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/models", models, methods=["GET"])

    # ------------------------------------------------------------------ tokenize
    @app.post("/tokenize")
    async def tokenize(body: TokenizeBody) -> JSONResponse:
        state.require_ready()
        model = state.model
        tokens = await run_in_threadpool(lambda: list(model.tokenize(body.content.encode("utf-8"), body.add_special,
                                                                     body.parse_special)))
        if body.with_pieces:
            out = [{"id": t, "piece": model.token_to_piece(t, True).decode("utf-8", errors="replace")}
                   for t in tokens]
            return JSONResponse({"tokens": out})
        return JSONResponse({"tokens": tokens})

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeBody) -> JSONResponse:
        state.require_ready()
        state.check_tokens(body.tokens or [0], "tokens")
        text = await run_in_threadpool(lambda: state.model.detokenize(body.tokens, False))
        return JSONResponse({"content": text.decode("utf-8", errors="replace")})

    # ------------------------------------------------------------------ embeddings
    async def embeddings(body: EmbeddingBody) -> JSONResponse:
        state.require_ready()
        state.check_model(body.model)
        if not settings.embeddings:
            return APIError(501, "embeddings are switched off on this server (--embeddings false)",
                            "not_implemented_error", code="not_implemented").response()
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or len(texts) > 2048:
            raise _bad("input must hold 1 to 2048 strings", "input")
        if body.dimensions is not None and body.dimensions != state.model.n_embd:
            raise _bad(f"this model's embeddings have {state.model.n_embd} dimensions", "dimensions")
        llm = await run_in_threadpool(state.embedder)
        try:
            vectors, total = await run_in_threadpool(lambda: llm.embed(texts, True, False, True))
        except ValueError as exc:  # an input longer than the embedding context
            raise _bad(str(exc), "input") from None
        data: list[Any] = vectors
        if body.encoding_format == "base64":
            # What the official client asks for by default: little-endian float32 bytes, base64.
            import base64
            import struct

            data = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii") for v in vectors]
        return JSONResponse(responses.embeddings(data, settings.model_id, total))

    app.add_api_route("/v1/embeddings", embeddings, methods=["POST"])
    app.add_api_route("/embeddings", embeddings, methods=["POST"])

    # ------------------------------------------------------------------ generation (both APIs)
    def _start(prepared: Prepared, n: int, http: HTTPRequest, cid: str, stream: bool) -> list[Run]:
        """Admit ``n`` runs of one prepared request (all or none). A fixed seed is offset per choice,
        so ``n`` choices differ like OpenAI's do."""
        runs: list[Run] = []
        try:
            for i in range(n):
                request = prepared.request
                if i and request.sampling.seed is not None:
                    request = dataclasses.replace(
                        request, sampling=dataclasses.replace(request.sampling, seed=request.sampling.seed + i))
                runs.append(Run(state, dataclasses.replace(prepared, request=request), http))
        except BaseException:
            for r in runs:
                r.close()
            raise
        runs[0].log.update(id=cid, stream=stream, n=n)
        return runs

    async def _respond(runs: list[Run], stream: bool, chat_api: bool, cid: str, created: int) -> Response:
        if stream:
            try:
                for r in runs:
                    await r.submitted()
            except BaseException:
                for r in runs:
                    r.close()
                raise
            return _RunStream(runs, _guarded(_sse_stream(runs, chat_api, cid, created)),
                              media_type="text/event-stream",
                              headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        results = await asyncio.gather(*(_collect(r) for r in runs))
        n_prompt = runs[0].prepared.n_prompt
        use = responses.usage(n_prompt, sum(r.usage["completion_tokens"] for r in runs))
        out: dict[str, Any] | None = None
        for i, (run, (text, finish, lp)) in enumerate(zip(runs, results)):
            output = run.prepared.output()
            if output is not None:
                output.update(text, partial=False)
                finish = chat_completion.finish_reason(output, finish)
                one = responses.chat_completion(cid, created, settings.model_id, output.message(), finish,  # type: ignore[arg-type]
                                                lp, use)
            else:
                one = responses.completion(cid, created, settings.model_id, run.prepared.echo_text + text,
                                           finish, lp, use)  # type: ignore[arg-type]
            one["choices"][0]["index"] = i
            if out is None:
                out = one
            else:
                out["choices"].append(one["choices"][0])
        return JSONResponse(out)

    async def _choice_chunks(run: Run, index: int, chat_api: bool, cid: str,
                             created: int) -> AsyncIterator[dict[str, Any] | None]:
        """One choice's chunks (None: a ping is due); errors raise APIError."""
        model_id = settings.model_id

        def chunk(text: str | None, finish: str | None, lp: Any = None, delta: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
            if chat_api:
                c = responses.chat_chunk(cid, created, model_id, delta or {}, finish, lp)  # type: ignore[arg-type]
            else:
                c = responses.completion_chunk(cid, created, model_id, text or "", finish, lp)  # type: ignore[arg-type]
            c["choices"][0]["index"] = index
            return c

        if chat_api:
            first = responses.chat_chunk(cid, created, model_id, {"role": "assistant", "content": ""}, None)
            first["choices"][0]["index"] = index
            yield first
        elif run.prepared.echo_text:
            yield chunk(run.prepared.echo_text, None)
        finish = None
        output, generated = run.prepared.output(), ""
        async for item in run.events(ping=True):
            if item is None:
                yield None
                continue
            pieces, error = item
            if error is not None:
                raise APIError(500, f"generation failed: {error}", "server_error")
            for p in pieces:
                if p.finish_reason == "cancelled":
                    raise APIError(503, "cancelled: the server is shutting down", "unavailable_error",
                                   code="cancelled")
                if output is not None:
                    generated += p.text
                    found = chat_completion.deltas(output, generated, p.finish_reason)
                    for k, delta in enumerate(found):
                        yield chunk(None, None, p.logprobs if k == len(found) - 1 else None, delta)
                    if not found and p.logprobs:
                        yield chunk(None, None, p.logprobs)
                    if p.finish_reason is not None:
                        finish = chat_completion.finish_reason(output, p.finish_reason)
                        yield chunk(None, finish)
                elif p.text or p.logprobs or p.finish_reason is not None:
                    finish = p.finish_reason
                    yield chunk(p.text, finish, p.logprobs)
        run.log["finish_reason"] = finish

    async def _sse_stream(runs: list[Run], chat_api: bool, cid: str, created: int) -> AsyncIterator[bytes]:
        sources = [_choice_chunks(r, i, chat_api, cid, created) for i, r in enumerate(runs)]
        async for item in (sources[0] if len(sources) == 1 else _merge(sources)):
            yield b": ping\n\n" if item is None else _sse(item)
        if runs[0].prepared.include_usage:
            use = responses.usage(runs[0].prepared.n_prompt, sum(r.usage["completion_tokens"] for r in runs))
            yield _sse({"id": cid, "object": "chat.completion.chunk" if chat_api else "text_completion",
                        "created": created, "model": settings.model_id, "choices": [], "usage": use})
        yield b"data: [DONE]\n\n"

    async def _generate(body: Any, http: HTTPRequest, tokens: list[int], max_tokens: int | None,
                        n_probs: int | None, echo: str, chat: bool, grammar: str | None = None,
                        rendered: RenderedChat | None = None) -> Response:
        """The common end of both generation routes: Request -> scheduler -> response or stream.

        ``grammar``: a response_format's GBNF for completions; ``rendered``: a chat
        request's constraints, stops and answer parser."""
        sampling = sampling_from(body, state.n_vocab)
        if grammar is not None:
            sampling = dataclasses.replace(sampling, grammar=grammar)
        request = Request(tokens, sampling, max_tokens, _stops(body.stop), n_probs, bool(body.ignore_eos))
        if rendered is not None:
            chat_completion.apply(request, rendered)
        prepared = Prepared(request, len(tokens), echo, bool(body.stream_options and body.stream_options.include_usage),
                            rendered)
        cid, created = (responses.chat_id() if chat else responses.completion_id()), responses.now()
        runs = _start(prepared, body.n or 1, http, cid, bool(body.stream))
        return await _respond(runs, bool(body.stream), chat, cid, created)

    # ------------------------------------------------------------------ completions
    async def completions(body: CompletionBody, http: HTTPRequest) -> Response:
        state.require_ready()
        state.check_model(body.model)
        _check_unsupported(body)
        grammar = _response_grammar(body)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise _bad("one prompt per request is supported (got a list of several)", "prompt")
            prompt = prompt[0]  # type: ignore[assignment]
        if isinstance(prompt, str):
            tokens = await run_in_threadpool(state.tokenize_prompt, prompt)
            echo_text = prompt
        else:
            tokens = [int(t) for t in prompt]  # type: ignore[union-attr]
            echo_text = ""
        state.check_tokens(tokens, "prompt")
        if body.echo and not isinstance(prompt, str):
            echo_text = (await run_in_threadpool(state.model.detokenize, tokens, False)).decode("utf-8", "replace")
        max_tokens = _max_tokens(state, body, body.max_tokens, len(tokens), 16)
        n_probs = body.logprobs if body.logprobs is not None else body.n_probs
        if n_probs is not None and not 0 <= n_probs <= 20:
            raise _bad(f"logprobs must be in [0, 20], not {n_probs}", "logprobs")
        return await _generate(body, http, tokens, max_tokens, n_probs, echo_text if body.echo else "", chat=False,
                               grammar=grammar)

    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_api_route("/completions", completions, methods=["POST"])

    # ------------------------------------------------------------------ chat
    async def chat_completions(body: ChatBody, http: HTTPRequest) -> Response:
        state.require_ready()
        state.check_model(body.model)
        _check_unsupported(body)
        template = state.template
        if template is None:
            raise _bad(state.template_error or "this model has no chat template", "messages")
        messages = [m.model_dump(exclude_none=True) for m in body.messages]

        def render_and_tokenize() -> tuple[RenderedChat, list[int]]:
            try:
                tools, choice = chat_completion.legacy_functions(body.functions, body.function_call, body.tools,
                                                                 body.tool_choice)
                rendered = chat_completion.render(
                    template, messages, tools=tools, tool_choice=choice,
                    parallel_tool_calls=body.parallel_tool_calls, response_format=body.response_format,
                    json_schema=body.json_schema, grammar=body.grammar or None,
                    chat_template_kwargs=body.chat_template_kwargs)
            except ValueError as exc:
                text = str(exc)
                param = "response_format" if ("schema" in text or "response_format" in text) else \
                    "tools" if "tool" in text else "messages"
                raise _bad(text, param) from None
            return rendered, state.tokenize_prompt(rendered.prompt)

        rendered, tokens = await run_in_threadpool(render_and_tokenize)
        state.check_tokens(tokens, "messages")
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = _max_tokens(state, body, requested, len(tokens), None)
        n_probs: int | None = None
        if body.logprobs or body.n_probs is not None:
            n_probs = body.top_logprobs if body.top_logprobs is not None else (body.n_probs or 0)
            if not 0 <= n_probs <= 20:
                raise _bad(f"top_logprobs must be in [0, 20], not {n_probs}", "top_logprobs")
        return await _generate(body, http, tokens, max_tokens, n_probs, "", chat=True, rendered=rendered)

    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/chat/completions", chat_completions, methods=["POST"])

    return app, state


async def _merge(sources: list[AsyncIterator[Any]]) -> AsyncIterator[Any]:
    """Items of several async iterators as they come (``n`` > 1 choices in one stream)."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump(src: AsyncIterator[Any]) -> None:
        try:
            async for item in src:
                await queue.put(("item", item))
            await queue.put(("end", None))
        except Exception as exc:  # handed to the reader, which stops the stream with it
            await queue.put(("error", exc))

    tasks = [asyncio.get_running_loop().create_task(pump(s)) for s in sources]
    try:
        open_ = len(tasks)
        while open_:
            kind, item = await queue.get()
            if kind == "item":
                yield item
            elif kind == "end":
                open_ -= 1
            else:
                raise item
    finally:
        for t in tasks:
            t.cancel()


async def _guarded(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Errors after the 200 went out can only travel inside the stream, as ``data: {"error": ...}``."""
    try:
        async for chunk in body:
            yield chunk
    except APIError as exc:
        yield _sse(exc.body())
    except Exception as exc:
        logger.exception("stream failed")
        yield _sse(APIError(500, f"internal error: {type(exc).__name__}", "server_error").body())


# ----------------------------------------------------------------------------- ASGI gate
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]],
                                                                                        Awaitable[None]]],
                   Awaitable[None]]


class Gate:
    """In front of every route: request id, API keys, the body-size limit, one access-log line.

    Pure ASGI (no BaseHTTPMiddleware) so streaming responses pass through untouched
    and disconnects still reach the route.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.keys = [k.encode("utf-8") for k in state.settings.api_key]
        self.public = {"/health"} | ({"/metrics"} if state.settings.metrics_public else set())

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        offered: list[bytes] = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            offered.append(auth[7:].strip())
        if b"x-api-key" in headers:
            offered.append(headers[b"x-api-key"].strip())
        ok = False
        for given in offered:
            for key in self.keys:  # every comparison runs: the time says nothing about which key or prefix
                ok |= hmac.compare_digest(given, key)
        return ok

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        log: dict[str, Any] = {"request_id": rid}
        scope["sarai_log"] = log
        status = [0]

        async def send_logged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        path = scope.get("path", "")
        try:
            if self.keys and path not in self.public and not self._authorised(headers):
                await self._reply(send_logged, APIError(401, "Incorrect API key provided", "invalid_request_error",
                                                        code="invalid_api_key"))
                return
            limit = self.state.settings.max_body_bytes
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._reply(send_logged, APIError(413, f"the request body is larger than {limit} bytes",
                                                        code="request_too_large"))
                return
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                # Read the body here, bounded, so a chunked upload cannot grow past the limit either;
                # the route then reads it from memory and later receive() calls see disconnects.
                chunks: list[bytes] = []
                size = 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._reply(send_logged, APIError(413, f"the request body is larger than {limit} bytes",
                                                                code="request_too_large"))
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                body = b"".join(chunks)
                replayed = [False]

                async def replay() -> dict[str, Any]:
                    if not replayed[0]:
                        replayed[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                # Every route here takes JSON: a body sent without its content type (curl -d sends
                # form encoding) is read as JSON, as llama-server does, instead of failing as a form.
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"] + \
                    [(b"content-type", b"application/json")]
                await self.app(scope, replay, send_logged)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            if self.state.settings.access_log and path != "/health" and path != "/metrics":
                log.update(method=scope.get("method"), path=path, status=status[0],
                           client=(scope.get("client") or ("", 0))[0],
                           duration_ms=round((time.monotonic() - t0) * 1000, 2))
                access_logger.info(json.dumps(log, separators=(",", ":")))
            endpoint = path if path.startswith("/v1/") or path in ("/tokenize", "/detokenize", "/completions",
                                                                   "/chat/completions", "/health", "/metrics",
                                                                   "/models", "/embeddings") else "other"
            self.state.metrics.requests.labels(endpoint, str(status[0])).inc()

    @staticmethod
    async def _reply(send: Callable[[dict[str, Any]], Awaitable[None]], error: APIError) -> None:
        await error.response()({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


# ----------------------------------------------------------------------------- running
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

    app, state = create_app(settings)
    config = uvicorn.Config(Gate(app, state), host=settings.host, port=settings.port, log_level=settings.log_level,
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
        if state._drain_task is not None or state.loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            self.should_exit = True
            if state._drain_task is not None:
                self.force_exit = True
            return
        state.loop.call_soon_threadsafe(state.begin_drain)
