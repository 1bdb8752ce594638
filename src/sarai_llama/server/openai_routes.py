"""OpenAI's generation API: ``/v1/completions``, ``/v1/chat/completions`` (``/v1/models``: :mod:`.model_routes`).

A completion with a ``suffix`` fills in the middle (:mod:`sarai_llama.fim`, as ``/infill``).
Each route maps its body onto the shared request path (:mod:`.requests`),
starts ``n`` runs (:mod:`.runs`) and answers with one JSON object or an SSE
stream (:mod:`.sse`). Chat chunks and answers come from
:mod:`sarai_llama.chat_completion`, as ``Llama.create_chat_completion``'s do.
Without the ``/v1`` prefix too, as llama-server serves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import chat_completion, fim, responses, text_completion
from .errors import bad, invalid
from .lifecycle import ServerState
from .openai_schemas import ChatBody, CompletionBody, Generation
from .requests import (Prepared, Sampling, check_tokens, json_grammar, max_tokens, prepare, render_chat, stops,
                       tokenize_prompt)
from .runs import Run, collect, start, stream
from .served import Served
from .sse import EventStream, event, write

__all__ = ["router"]


def router(state: ServerState) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    async def completions(body: CompletionBody, http: HTTPRequest) -> Response:
        served = await state.acquire(body.model, http)
        capacity = served.require_ready().capacity
        check_n(body)
        grammar = json_grammar(body.response_format, body.json_schema, body.grammar)
        prompts = prompt_list(body.prompt)
        wanted = len(prompts) * (body.n or 1)
        if wanted > capacity:
            raise bad(f"this request asks for {wanted} completions ({len(prompts)} prompts x n={body.n or 1}); "
                      f"this server takes at most {capacity} at once (--parallel + --max-queue)", "prompt")
        n_probs = body.logprobs if body.logprobs is not None else body.n_probs
        if n_probs is not None and not 0 <= n_probs <= 20:
            raise bad(f"logprobs must be in [0, 20], not {n_probs}", "logprobs")
        prepared = [await one_completion(served, body, p, grammar, n_probs,
                                         "prompt" if len(prompts) == 1 else f"prompt[{i}]")
                    for i, p in enumerate(prompts)]
        return await respond(served, body, prepared, http, responses.completion_id())

    async def one_completion(served: Served, body: CompletionBody, prompt: str | list[int], grammar: str | None,
                             n_probs: int | None, param: str) -> Prepared:
        """One prompt of a completions request, ready for the engine (``param``: its field, for 400s)."""
        try:
            fill = fim.fills(served.model, body.suffix, bool(body.echo))
            if fill:  # the prompt is the prefix (the FIM prompt as /infill builds it)
                tokens = await run_in_threadpool(lambda: fim.fim_prompt(served.model, prompt, body.suffix or "",
                                                                        spm=served.settings.spm_infill))
        except ValueError as exc:  # a model without FIM tokens, echo with a suffix, text without UTF-8
            raise invalid(exc, param) from None
        if fill:
            echo_text = ""
        elif isinstance(prompt, str):
            tokens = await run_in_threadpool(tokenize_prompt, served, prompt, param)
            echo_text = prompt
        else:
            tokens = list(prompt)
            echo_text = ""
        check_tokens(served, tokens, param)
        if body.echo and not isinstance(prompt, str):
            echo_text = (await run_in_threadpool(served.model.detokenize, tokens, False)).decode("utf-8", "replace")
        max_new = max_tokens(served, budget(body, body.max_tokens, 16), len(tokens), prompt_param=param)
        return prepare(served, sampling(body), tokens, max_new, stop=stops(body.stop), n_probs=n_probs,
                       ignore_eos=bool(body.ignore_eos), echo=echo_text if body.echo else "",
                       include_usage=include_usage(body), grammar=grammar, draft_max=body.speculative_n_max,
                       draft_min=body.speculative_n_min)

    async def chat(body: ChatBody, http: HTTPRequest) -> Response:
        served = await state.acquire(body.model, http)
        check_n(body)
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        try:
            tools, choice = chat_completion.legacy_functions(body.functions, body.function_call, body.tools,
                                                             body.tool_choice)
        except ValueError as exc:
            raise invalid(exc, "functions") from None
        rendered, tokens = await render_chat(
            served, messages, tools=tools, tool_choice=choice, parallel_tool_calls=body.parallel_tool_calls,
            response_format=body.response_format, json_schema=body.json_schema, grammar=body.grammar or None,
            chat_template_kwargs=body.chat_template_kwargs, reasoning_format=body.reasoning_format)
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_new = max_tokens(served, budget(body, requested, None), len(tokens))
        n_probs: int | None = None
        if body.logprobs or body.n_probs is not None:
            n_probs = body.top_logprobs if body.top_logprobs is not None else (body.n_probs or 0)
            if not 0 <= n_probs <= 20:
                raise bad(f"top_logprobs must be in [0, 20], not {n_probs}", "top_logprobs")
        prepared = prepare(served, sampling(body), tokens, max_new, stop=stops(body.stop), n_probs=n_probs,
                           ignore_eos=bool(body.ignore_eos), include_usage=include_usage(body), rendered=rendered,
                           draft_max=body.speculative_n_max, draft_min=body.speculative_n_min)
        return await respond(served, body, [prepared], http, responses.chat_id())

    async def respond(served: Served, body: Generation, prepared: list[Prepared], http: HTTPRequest,
                      cid: str) -> Response:
        """Run the body's ``n`` choices of each prompt's ``prepared``: one JSON answer, or one SSE stream
        (choice ``p * n + j`` is the ``j``-th of prompt ``p``, as OpenAI numbers them)."""
        choices = Choices(start(served, prepared, body.n or 1, http, cid, bool(body.stream)), cid, served.name,
                          sum(p.n_prompt for p in prepared))
        if body.stream:
            await choices.submitted()
            return EventStream(write(choices.sources(), choices.last), choices.close)
        return JSONResponse(await choices.result())

    for prefix in ("/v1", ""):
        api.add_api_route(f"{prefix}/completions", completions, methods=["POST"])
        api.add_api_route(f"{prefix}/chat/completions", chat, methods=["POST"])
    return api


def sampling(body: Generation) -> Sampling:
    """The body's sampling fields, OpenAI's and llama-server's names (the first of two names wins)."""
    return Sampling(
        temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p, typical_p=body.typical_p,
        repeat_penalty=body.repeat_penalty, presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty, seed=body.seed, grammar=body.grammar,
        penalty_last_n=body.penalty_last_n if body.penalty_last_n is not None else body.repeat_last_n,
        mirostat_mode=body.mirostat_mode if body.mirostat_mode is not None else body.mirostat,
        mirostat_tau=body.mirostat_tau, mirostat_eta=body.mirostat_eta, logit_bias=body.logit_bias)


def budget(body: Generation, requested: int | None, default: int | None) -> int | None:
    """The requested token budget: OpenAI's field, else llama-server's ``n_predict`` (-1: no limit), else ``default``."""
    if requested is None and body.n_predict is not None:
        return None if body.n_predict < 0 else body.n_predict
    return default if requested is None else requested


def include_usage(body: Generation) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def check_n(body: Generation) -> None:
    """400 unless ``n`` (choices per request) is in [1, 16]."""
    if body.n is not None and not 1 <= body.n <= 16:
        raise bad(f"n must be in [1, 16], not {body.n}", "n")


def prompt_list(prompt: str | list[int] | list[str] | list[list[int]]) -> list[str | list[int]]:
    """A completions ``prompt`` as its prompts: a string, a list of token ids, or a list of either
    (OpenAI's four shapes); an empty list is a 400."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad("prompt is an empty list", "prompt")
    if all(isinstance(p, int) for p in prompt):
        return [[int(t) for t in prompt]]  # type: ignore[arg-type]
    return [p if isinstance(p, str) else [int(t) for t in p] for p in prompt]  # type: ignore[union-attr]


class Choices:
    """The runs of one completions or chat request (``n`` per prompt), answered together;
    ``n_prompt``: the prompt tokens of all its prompts, counted once each."""

    def __init__(self, runs: list[Run], cid: str, model_id: str, n_prompt: int) -> None:
        self.runs, self.cid, self.model_id, self.n_prompt = runs, cid, model_id, n_prompt
        self.created = responses.now()
        self.chat = runs[0].prepared.rendered is not None

    def close(self) -> None:
        for run in self.runs:
            run.close()

    def usage(self) -> responses.Usage:
        return responses.usage(self.n_prompt, sum(r.usage["completion_tokens"] for r in self.runs))

    async def submitted(self) -> None:
        """Every run accepted by the engine (a 400 before the stream's 200 otherwise)."""
        try:
            for run in self.runs:
                await run.submitted()
        except BaseException:
            self.close()
            raise

    async def result(self) -> dict[str, Any]:
        """The non-streamed answer: every choice, one usage for all."""
        gathered = await asyncio.gather(*(collect(r) for r in self.runs))
        use = self.usage()
        out: dict[str, Any] | None = None
        for i, (run, got) in enumerate(zip(self.runs, gathered)):
            output = run.prepared.output()
            if output is not None:
                one = chat_completion.answer(output, got, self.cid, self.created, self.model_id, use, i)
            else:
                one = responses.completion(self.cid, self.created, self.model_id, run.prepared.echo_text + got.text,
                                           got.finish_reason, got.logprobs, use, i)  # type: ignore[arg-type]
            if out is None:
                out = one
            else:
                out["choices"].append(one["choices"][0])
        assert out is not None  # n >= 1
        return out

    def sources(self) -> list[AsyncIterator[dict[str, Any] | None]]:
        return [self._chunks(run, i) for i, run in enumerate(self.runs)]

    def last(self) -> list[bytes]:
        """What follows the choices' chunks: the usage chunk if asked for, then ``[DONE]``."""
        tail = []
        if self.runs[0].prepared.include_usage:
            tail.append(event({"id": self.cid, "object": "chat.completion.chunk" if self.chat else "text_completion",
                               "created": self.created, "model": self.model_id, "choices": [],
                               "usage": self.usage()}))
        return [*tail, b"data: [DONE]\n\n"]

    async def _chunks(self, run: Run, index: int) -> AsyncIterator[dict[str, Any] | None]:
        """One choice's chunks (None: a ping is due); errors raise APIError."""
        output = run.prepared.output()
        builder: chat_completion.ChatChunks | text_completion.CompletionChunks
        if output is not None:
            builder = chat_completion.ChatChunks(output, self.cid, self.created, self.model_id, index)
            yield builder.first()
        else:
            builder = text_completion.CompletionChunks(self.cid, self.created, self.model_id, index)
            for chunk in builder.head(run.prepared.echo_text):
                yield chunk
        async for p in stream(run):
            if p is None:
                yield None
                continue
            for chunk in builder.feed(p):
                yield chunk
