"""Ollama's generation API: ``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``.

A chat becomes OpenAI-shaped messages (an assistant's ``tool_calls`` with their
arguments as JSON text and ids of their own, each ``tool`` message the answer to
the earlier call of its ``tool_name``), goes through the model's chat template and
the shared request path (:mod:`.requests`, :mod:`.runs`), and comes back as
Ollama's NDJSON stream (``stream`` defaults to true) or one object; the last one
has ``done: true``, ``done_reason`` and the counts and durations (nanoseconds).
``think`` is the reasoning split (``message.thinking``), ``format`` the
``response_format`` path, ``options`` the sampling. The model list and
description are :mod:`.ollama_models`, the answers :mod:`.ollama_stream`; registry operations (pull, push, create,
copy, delete) are a 501 that says what to do instead. Errors are Ollama's
``{"error": "..."}`` (:func:`.ollama_schemas.error_reply`, registered for these paths).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import fim, images, responses
from .errors import APIError, bad, invalid
from .lifecycle import ServerState
from .ollama_models import Description, Descriptions, find, router as models_router
from .ollama_schemas import ChatBody, EmbedBody, EmbeddingsBody, GenerateBody, Generation, Options, now
from .ollama_stream import NdjsonStream, Reply, ns
from .requests import (Prepared, Sampling, check_tokens, json_grammar, max_tokens, prepare, render_chat, stops,
                       tokenize_prompt)
from .pool import parse_keep_alive
from .runs import collect, start
from .served import Served

__all__ = ["PREFIXES", "router"]

#: The paths under which errors take Ollama's shape ("/" itself is Ollama's "is it running" probe).
PREFIXES = ("/api",)
#: What each registry operation does here instead.
REGISTRY = {
    "pull": "this server serves the GGUF files it was started with; download models yourself and serve them "
            "(`sarai-llama serve model.gguf`, or `--models-dir DIR` for many)",
    "push": "this server has no registry to push to",
    "create": "models are not created here: serve a GGUF file (`sarai-llama serve model.gguf --chat-template ...`)",
    "copy": "a model's name is set where it is configured: `--alias`, `--model NAME=PATH` or models.toml",
    "delete": "this server does not delete model files; stop it and remove the file",
}


def _with_images(text: str, pictures: list[Any] | None, param: str) -> str | list[dict[str, Any]]:
    """A message's text, and before it its ``images`` (base64, as Ollama sends them) as OpenAI image parts."""
    if not pictures:
        return text
    if not all(isinstance(b, str) for b in pictures):
        raise bad("images must be base64 strings", param)
    return [*(images.image_part(images.data_uri(b, None)) for b in pictures), {"type": "text", "text": text}]


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()
    about = Descriptions()
    api.include_router(models_router(state, about))

    async def chat(body: ChatBody, http: HTTPRequest) -> Response:
        t0 = time.monotonic()
        if not body.messages and (unloaded := unload(body)) is not None:
            return unloaded
        served = await find(state, body.model_name, http, body.keep_alive)
        if not body.messages:  # Ollama's way to load a model: nothing to say yet
            return loaded(body, {"message": {"role": "assistant", "content": ""}})
        think = thinking(body, about.of(served))
        rendered, tokens = await render_chat(
            served, chat_messages(body), tools=body.tools or None, response_format=response_format(body.format),
            chat_template_kwargs=think[0], reasoning_format=think[1])
        prepared = prepare(served, sampling(body.options), tokens, budget(served, body.options, len(tokens)),
                           stop=stops(options(body).stop, "options.stop"), rendered=rendered)
        return await respond(served, body, prepared, http, t0, "message")

    def unload(body: Generation) -> JSONResponse | None:
        """Ollama's way to unload a model, a request with nothing to say and ``keep_alive: 0``: done
        (``done_reason`` "unload") once it is unloaded, now if idle, else once its requests end."""
        if body.keep_alive is None:
            return None
        try:
            if parse_keep_alive(body.keep_alive) != 0:
                return None
        except ValueError as exc:
            raise bad(str(exc), "keep_alive") from None
        served = state.pool.find(body.model_name) if body.model_name else None
        if served is None:
            return None
        served.keep_alive = 0
        if served.status == "loaded" and not served.busy:
            state.pool.unload(served, "keep_alive 0: asked to unload")
        return JSONResponse({"model": body.model_name, "created_at": now(), "response": "", "done": True,
                             "done_reason": "unload"})

    async def generate(body: GenerateBody, http: HTTPRequest) -> Response:
        t0 = time.monotonic()
        if not body.prompt and not body.suffix and (unloaded := unload(body)) is not None:
            return unloaded
        served = await find(state, body.model_name, http, body.keep_alive)
        if body.template:
            raise bad("template overrides (Go templates) are not supported: this server renders the model's own "
                      "chat template; send raw: true with the prompt written out instead", "template")
        if not body.prompt and not body.suffix:
            return loaded(body, {"response": ""})
        opts = options(body)
        user_stops = stops(opts.stop, "options.stop")
        if body.suffix is not None or body.raw:
            if body.images:
                raise bad("images go through the chat template: not with raw or suffix", "images")
            tokens = await raw_prompt(served, body)
            prepared = prepare(served, sampling(body.options), tokens, budget(served, body.options, len(tokens)),
                               stop=user_stops, grammar=json_grammar(response_format(body.format), None, None))
        else:
            messages = ([{"role": "system", "content": body.system}] if body.system else []) + \
                [{"role": "user", "content": _with_images(body.prompt or "", body.images, "images")}]
            kwargs, reasoning = thinking(body, about.of(served))
            rendered, tokens = await render_chat(served, messages, "prompt",
                                                 response_format=response_format(body.format),
                                                 chat_template_kwargs=kwargs, reasoning_format=reasoning)
            prepared = prepare(served, sampling(body.options), tokens, budget(served, body.options, len(tokens)),
                               stop=user_stops, rendered=rendered)
        return await respond(served, body, prepared, http, t0, "response")

    async def raw_prompt(served: Served, body: GenerateBody) -> list[int]:
        """The prompt as written (``raw``), or the FIM prompt of ``prompt`` + ``suffix``."""
        model = served.model
        try:
            if fim.fills(model, body.suffix):
                return await run_in_threadpool(lambda: fim.fim_prompt(model, body.prompt or "", body.suffix or "",
                                                                      spm=served.settings.spm_infill))
        except ValueError as exc:  # a model without FIM tokens: Ollama's "does not support insert"
            raise invalid(exc, "suffix") from None
        tokens = await run_in_threadpool(tokenize_prompt, served, body.prompt or "", "prompt")
        check_tokens(served, tokens, "prompt")
        return tokens

    async def respond(served: Served, body: Generation, prepared: Prepared, http: HTTPRequest, t0: float,
                      key: str) -> Response:
        (run,) = start(served, [prepared], 1, http, responses.completion_id(), bool(body.stream))
        reply = Reply(served.name, key, run, t0)
        if body.stream:
            await run.submitted()
            return NdjsonStream(reply.lines(), run.close)
        got = await collect(run)
        return JSONResponse(reply.answer(got.text, got.finish_reason))

    async def embed(body: EmbedBody, http: HTTPRequest) -> JSONResponse:
        t0 = time.monotonic()
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or len(texts) > 2048:
            raise bad("input must hold 1 to 2048 strings", "input")
        served, (vectors, total) = await embed_texts(body, texts, body.truncate is not False, http)
        return JSONResponse({"model": served.name, "embeddings": vectors,
                             "total_duration": ns(time.monotonic() - t0), "load_duration": 0,
                             "prompt_eval_count": total})

    async def embeddings(body: EmbeddingsBody, http: HTTPRequest) -> JSONResponse:
        if not body.prompt:  # Ollama answers an empty prompt with an empty vector
            await embed_texts(body, [], True, http)
            return JSONResponse({"embedding": []})
        _, (vectors, _) = await embed_texts(body, [body.prompt], True, http)
        return JSONResponse({"embedding": vectors[0]})

    async def embed_texts(body: EmbedBody | EmbeddingsBody, texts: list[str], truncate: bool, http: HTTPRequest
                          ) -> tuple[Served, tuple[list[list[float]], int]]:
        """Unit-length vectors from the pooled embedder the OpenAI route uses (its checks first)."""
        served = await find(state, body.model_name, http, body.keep_alive)
        if not served.settings.embeddings and served.role == "generate":
            raise APIError(501, "embeddings are switched off on this server (--embeddings false)",
                           "not_implemented_error", code="not_implemented")
        dims = getattr(body, "dimensions", None)
        if dims is not None and dims != served.model.n_embd:
            raise bad(f"this model's embeddings have {served.model.n_embd} dimensions, not {dims}", "dimensions")
        if not texts:
            return served, ([], 0)
        try:
            embedder = await run_in_threadpool(served.embedder)
        except ValueError as exc:  # a rerank model
            raise bad(str(exc), "model") from None
        try:
            return served, await run_in_threadpool(embedder.embed, texts, truncate, True)
        except ValueError as exc:  # an input longer than the embedding window, with truncate false
            raise invalid(exc, "input") from None

    api.add_api_route("/api/chat", chat, methods=["POST"])
    api.add_api_route("/api/generate", generate, methods=["POST"])
    api.add_api_route("/api/embed", embed, methods=["POST"])
    api.add_api_route("/api/embeddings", embeddings, methods=["POST"])
    for op, why in REGISTRY.items():
        api.add_api_route(f"/api/{op}", unsupported(op, why), methods=["POST", "DELETE"])
    return api


def unsupported(op: str, why: str) -> Callable[[], Any]:
    async def refuse() -> None:
        raise APIError(501, f"{op} is not supported: {why}", "not_implemented_error", code="not_implemented")

    return refuse


def options(body: Generation) -> Options:
    return body.options or Options()


def loaded(body: Generation, content: dict[str, Any]) -> JSONResponse:
    """Ollama's answer to a request with nothing to generate: the model is loaded, done."""
    return JSONResponse({"model": body.model_name, "created_at": now(), **content, "done": True,
                         "done_reason": "load"})


def thinking(body: Generation, about: Description) -> tuple[dict[str, Any] | None, str | None]:
    """(chat_template_kwargs, reasoning_format) for ``think``: on splits the reasoning into
    ``thinking`` (a 400 for a model that does not think), off asks the template not to think,
    absent leaves both to the server; a level ("high") is gpt-oss's ``reasoning_effort``."""
    think = body.think
    if think is None:
        return None, None
    if think is False:
        return {"enable_thinking": False}, None
    if "thinking" not in about.capabilities():
        raise bad(f"'{body.model_name or about.name}' does not support thinking", "think")
    if isinstance(think, str):
        if think not in ("low", "medium", "high"):
            raise bad(f"think must be true, false, 'low', 'medium' or 'high', not {think!r}", "think")
        return {"reasoning_effort": think}, "auto"
    return None, "auto"


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """``format`` as chat's ``response_format``: "json" any JSON object, a dict a JSON schema."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt}}
    raise bad(f"format must be \"json\" or a JSON schema object, not {fmt!r}", "format")


def sampling(opts: Options | None) -> Sampling:
    """``options`` as sampling fields (Ollama's names are llama.cpp's)."""
    o = opts or Options()
    return Sampling(temperature=o.temperature, top_p=o.top_p, top_k=o.top_k, min_p=o.min_p, typical_p=o.typical_p,
                    repeat_penalty=o.repeat_penalty, presence_penalty=o.presence_penalty,
                    frequency_penalty=o.frequency_penalty, penalty_last_n=o.repeat_last_n, seed=o.seed,
                    mirostat_mode=o.mirostat, mirostat_tau=o.mirostat_tau, mirostat_eta=o.mirostat_eta)


def budget(served: Served, opts: Options | None, n_prompt: int) -> int | None:
    """``num_predict`` (negative: until the context ends), checked against the context; a
    ``num_ctx`` over the context a request gets here is a 400 (a smaller one is accepted)."""
    o = opts or Options()
    if o.num_ctx is not None and o.num_ctx > served.n_ctx_seq:
        raise bad(f"options.num_ctx is {o.num_ctx}, but this server gives each request at most {served.n_ctx_seq} "
                  "tokens of context (--ctx-size / --parallel); send a num_ctx up to that", "options.num_ctx")
    requested = None if o.num_predict is None or o.num_predict < 0 else o.num_predict
    if requested == 0:
        raise bad("options.num_predict must be at least 1 (or negative: no limit)", "options.num_predict")
    return max_tokens(served, requested, n_prompt, "options.num_predict")


def chat_messages(body: ChatBody) -> list[dict[str, Any]]:
    """Ollama's messages as OpenAI's: each earlier call gets an id (nine alphanumerics, as the
    strictest templates want), and each ``tool`` message the id of the first unanswered call
    of its ``tool_name`` (else of the first unanswered call)."""
    out: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (id, name)
    for i, m in enumerate(body.messages):
        msg: dict[str, Any] = {"role": m.role,
                               "content": _with_images(m.content or "", m.images, f"messages.{i}.images")}
        if m.role == "assistant" and m.thinking:
            msg["reasoning_content"] = m.thinking
        if m.tool_calls:
            calls = []
            for j, call in enumerate(m.tool_calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise bad(f"messages.{i}.tool_calls.{j}: a call needs function.name", "messages")
                args = fn.get("arguments") or {}
                cid = f"{i:05d}{j:04d}"
                calls.append({"id": cid, "type": "function", "function": {
                    "name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}})
                unanswered.append((cid, fn["name"]))
            msg["tool_calls"] = calls
            msg["content"] = m.content or None
        if m.role == "tool":
            match = next((c for c in unanswered if c[1] == m.tool_name), unanswered[0] if unanswered else None)
            if match is not None:
                unanswered.remove(match)
                msg["tool_call_id"] = match[0]
            if m.tool_name:
                msg["name"] = m.tool_name
        out.append(msg)
    return out
