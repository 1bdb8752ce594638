"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) through the official ``anthropic`` SDK.

Real ``sarai-llama serve`` processes on 127.0.0.1: the real Gemma 3 270M for
answers that must make sense, and a tiny random-weight model carrying Qwen 2.5's
real chat template (Hermes-style ``<tool_call>`` tags) for tools, where what is
checked is what the grammar guarantees (a call, well-formed, valid against the
tool's schema) and what the protocol says (events, stop reasons, usage). The
app is also driven without uvicorn, through the SDK's ASGI transport, for the
gate's answers in Anthropic's shape. The SDK's own kwargs no longer carry
sampling fields, so they travel in ``extra_body`` as a client sends them.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic", reason="pip install sarai-llama[test]")
httpx = pytest.importorskip("httpx", reason="pip install sarai-llama[test]")
pytest.importorskip("fastapi", reason="pip install sarai-llama[server]")
jsonschema = pytest.importorskip("jsonschema", reason="pip install sarai-llama[test]")

from test_chat_template import ASCII  # noqa: E402
from helpers import Server  # noqa: E402

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"], "additionalProperties": False}
UNITS = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["C", "F"]}},
         "required": ["unit"], "additionalProperties": False}
TOOLS = [{"name": "get_weather", "description": "The weather in a city", "input_schema": CITY},
         {"name": "forecast", "input_schema": UNITS}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
#: Random weights: greedy, and the byte tokens that spell invalid UTF-8 or control characters banned
#: (see test_chat_template.ASCII); for tools a temperature and seed let the grammar's choices vary.
GREEDY = {"temperature": 0, "logit_bias": {str(k): v for k, v in ASCII.items()}}
SAMPLED = {"temperature": 1.0, "seed": 4, "logit_bias": {str(k): v for k, v in ASCII.items()}}


def client(server: Server, key: str = "none") -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def qwen(qwen_tiny_path: Path) -> Iterator[Server]:
    s = Server(qwen_tiny_path, "--parallel", "2", "--ctx-size", "4096")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> Iterator[Server]:
    s = Server(gemma_path, "--parallel", "2", "--ctx-size", "2048")
    yield s
    s.stop()


# ------------------------------------------------------------------------------ text
def test_gemma_message_and_its_stream(gemma: Server) -> None:
    """The real model, tokenizer and built-in Gemma format (this 270M file is a base model: its chat
    answers carry no meaning, so the protocol is what is checked)."""
    c, mid = client(gemma), gemma.model_id()
    kw: dict[str, Any] = dict(model=mid, max_tokens=24, system="Answer in one short sentence.",
                              messages=[{"role": "user", "content": "What is the capital of France?"}],
                              metadata={"user_id": "u1"}, extra_body={"temperature": 0})
    out = c.messages.create(**kw)
    assert out.type == "message" and out.role == "assistant" and out.model == mid and out.id.startswith("msg_")
    (block,) = out.content
    assert block.type == "text" and block.text.strip()
    assert out.stop_reason in ("end_turn", "max_tokens") and out.stop_sequence is None
    assert out.usage.input_tokens > 10 and 0 < out.usage.output_tokens <= 24
    assert out.usage.input_tokens == c.messages.count_tokens(model=mid, system=kw["system"],
                                                             messages=kw["messages"]).input_tokens

    # streamed: Anthropic's event sequence; the deltas make up the final message
    types, text = [], ""
    with c.messages.stream(**kw) as stream:
        for ev in stream:
            types.append(ev.type)
            if ev.type == "content_block_delta":
                assert ev.index == 0 and ev.delta.type == "text_delta"
                text += ev.delta.text
        final = stream.get_final_message()
    raw = [t for t in types if t not in ("text", "input_json")]  # the SDK's own derived events
    assert raw[0] == "message_start" and raw[1] == "content_block_start"
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(raw[2:-3]) == {"content_block_delta"}
    assert final.content[0].text == text and text.strip() and final.id.startswith("msg_")
    assert final.stop_reason in ("end_turn", "max_tokens") and 0 < final.usage.output_tokens <= 24
    assert final.usage.input_tokens == out.usage.input_tokens


def test_multi_turn_and_system_blocks(gemma: Server) -> None:
    c, mid = client(gemma), gemma.model_id()
    turns = [{"role": "user", "content": "My name is Ada."},
             {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada!"}]},
             {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]
    blocks = [{"type": "text", "text": "You are helpful."}, {"type": "text", "text": "Be brief."}]
    out = c.messages.create(model=mid, max_tokens=4, messages=turns, system=blocks, extra_body={"temperature": 0})
    assert out.content[0].text and out.usage.output_tokens <= 4
    count = c.messages.count_tokens(model=mid, messages=turns, system=blocks).input_tokens
    assert count == out.usage.input_tokens
    # text blocks are joined with a newline (llama.cpp's reading of several text parts)
    assert count == c.messages.count_tokens(model=mid, messages=turns,
                                            system="You are helpful.\nBe brief.").input_tokens
    assert c.messages.count_tokens(model=mid, messages=turns[-1:], system=blocks).input_tokens < count


def test_end_turn(qwen: Server) -> None:
    """The model's end-of-generation token ends the turn: ``end_turn``, no content."""
    c, mid = client(qwen), qwen.model_id()
    out = c.messages.create(model=mid, max_tokens=8, messages=ASK, extra_body={"logit_bias": {"2": 100}})
    assert out.stop_reason == "end_turn" and out.content == [] and out.usage.output_tokens <= 1


def test_stop_sequences(qwen: Server) -> None:
    c, mid = client(qwen), qwen.model_id()
    free = c.messages.create(model=mid, max_tokens=24, messages=ASK, extra_body=GREEDY)
    text = free.content[0].text
    assert free.stop_reason in ("max_tokens", "end_turn") and len(text) >= 6, text
    stop = text[3:6]
    cut = text[:text.index(stop)]
    out = c.messages.create(model=mid, max_tokens=24, messages=ASK, stop_sequences=["\x00never", stop],
                            extra_body=GREEDY)
    assert out.stop_reason == "stop_sequence" and out.stop_sequence == stop
    assert "".join(b.text for b in out.content) == cut
    streamed = []
    with c.messages.stream(model=mid, max_tokens=24, messages=ASK, stop_sequences=[stop], extra_body=GREEDY) as s:
        streamed = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(streamed) == cut and final.stop_reason == "stop_sequence" and final.stop_sequence == stop


# ------------------------------------------------------------------------------ tools
def test_tool_choice_any_and_tool(qwen: Server) -> None:
    c, mid = client(qwen), qwen.model_id()
    for choice, name in (({"type": "any", "disable_parallel_tool_use": True}, None),
                         ({"type": "tool", "name": "forecast", "disable_parallel_tool_use": True}, "forecast")):
        out = c.messages.create(model=mid, max_tokens=300, messages=ASK, tools=TOOLS, tool_choice=choice,
                                extra_body=SAMPLED)
        assert out.stop_reason == "tool_use", out
        (use,) = [b for b in out.content if b.type == "tool_use"]
        assert use.id and use.name in ("get_weather", "forecast") and (name is None or use.name == name)
        jsonschema.validate(use.input, CITY if use.name == "get_weather" else UNITS)


def test_tool_use_streams_and_round_trips(qwen: Server) -> None:
    c, mid = client(qwen), qwen.model_id()
    kw: dict[str, Any] = dict(model=mid, max_tokens=300, messages=ASK, tools=TOOLS, extra_body=SAMPLED,
                              tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True})
    whole = c.messages.create(**kw)
    (use,) = whole.content
    deltas: list[str] = []
    with c.messages.stream(**kw) as stream:
        for ev in stream:
            if ev.type == "content_block_delta":
                assert ev.delta.type == "input_json_delta"
                deltas.append(ev.delta.partial_json)
        final = stream.get_final_message()
    (streamed,) = final.content
    assert streamed.type == "tool_use" and streamed.name == "get_weather" and final.stop_reason == "tool_use"
    assert streamed.input == use.input and json.loads("".join(deltas)) == use.input  # same seed, same call

    # the call and its result go back into the conversation, through the template
    history = [*ASK, {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, use.model_dump()]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 24 C"},
                                            {"type": "text", "text": "Thanks"}]}]
    count = c.messages.count_tokens(model=mid, messages=history, tools=TOOLS).input_tokens
    without = c.messages.count_tokens(model=mid, messages=history[:1], tools=TOOLS).input_tokens
    assert count > without + 10
    answer = c.messages.create(model=mid, max_tokens=8, messages=history, tools=TOOLS, tool_choice={"type": "none"},
                               extra_body=GREEDY)
    assert answer.stop_reason in ("end_turn", "max_tokens") and all(b.type == "text" for b in answer.content)
    failed = [*history[:2], {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": use.id, "is_error": True, "content": [{"type": "text", "text": "x"}]}]}]
    assert c.messages.create(model=mid, max_tokens=2, messages=failed, tools=TOOLS, extra_body=GREEDY).usage


# ------------------------------------------------------------------------------ errors
def test_errors_in_anthropic_shape(qwen: Server) -> None:
    c, mid = client(qwen), qwen.model_id()
    r = httpx.post(qwen.url + "/v1/messages", json={"model": mid, "messages": ASK}, timeout=30)  # no max_tokens
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and "max_tokens" in r.json()["error"]["message"]
    bad_calls = [
        dict(messages=ASK, extra_body={"temperature": -1}),
        dict(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]),
        dict(messages=[*ASK, {"role": "assistant", "content": "The weather is"}]),  # a prefill
        dict(messages=ASK, tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        dict(messages=ASK, tool_choice={"type": "any"}),  # no tools to choose from
        dict(messages=ASK, max_tokens=100_000),
    ]
    for kw in bad_calls:
        kw.setdefault("max_tokens", 4)
        with pytest.raises(anthropic.BadRequestError) as err:
            c.messages.create(model=mid, **kw)
        assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error"
        assert err.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as nf:
        c.messages.create(model="claude-none", max_tokens=4, messages=ASK)
    assert nf.value.body["error"]["type"] == "not_found_error"
    # the OpenAI routes keep OpenAI's shape
    assert "error" in httpx.post(qwen.url + "/v1/chat/completions", json={"messages": []}, timeout=30).json()


def test_api_key_via_x_api_key_through_the_asgi_app(qwen_tiny_path: Path) -> None:
    """No uvicorn: the SDK reaches ``create_app``'s app (gate in front) through an ASGI transport."""
    import asyncio

    from sarai_llama.server.app import create_app
    from sarai_llama.server.settings import Settings

    import importlib

    # the HTTP package the SDK is built on (httpx, or its fork httpx2 in newer SDKs), for its ASGI transport
    http = importlib.import_module(anthropic.DefaultAsyncHttpxClient.__mro__[1].__module__)
    path = qwen_tiny_path
    app, state = create_app(Settings.create(str(path), ctx_size=512, parallel=1, threads=1, api_key=["k1"]))
    state.load()

    async def talk() -> None:
        def sdk(key: str) -> Any:
            transport = http.AsyncClient(transport=http.ASGITransport(app=app), base_url="http://asgi")
            return anthropic.AsyncAnthropic(base_url="http://asgi", api_key=key, http_client=transport, max_retries=0)

        with pytest.raises(anthropic.AuthenticationError) as err:
            await sdk("wrong").messages.create(model=path.name, max_tokens=2, messages=ASK)
        assert err.value.status_code == 401
        assert err.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                             "message": "Incorrect API key provided"}}
        out = await sdk("k1").messages.create(model=path.name, max_tokens=3, messages=ASK,
                                              extra_body=GREEDY, extra_headers={"anthropic-version": "2023-06-01"})
        assert out.usage.output_tokens <= 3 and out.stop_reason in ("max_tokens", "end_turn")
        n = await sdk("k1").messages.count_tokens(model=path.name, messages=ASK)
        assert n.input_tokens == out.usage.input_tokens

    try:
        asyncio.run(talk())
    finally:
        state.close()


@pytest.mark.slow
def test_overloaded_is_529_with_retry_after(gemma_path: Path) -> None:
    """A full queue: Anthropic's 529 ``overloaded_error`` (the SDK's OverloadedError), Retry-After kept."""
    s = Server(gemma_path, "--parallel", "1", "--ctx-size", "4096", "--max-queue", "1")
    try:
        mid = s.model_id()
        long = [{"role": "user", "content": "Tell me about the sea. " * 300}]  # ~1,800 tokens: seconds of prefill
        body = {"model": mid, "max_tokens": 1, "messages": long}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = [pool.submit(httpx.post, s.url + "/v1/messages", json=body, timeout=120) for _ in range(2)]
            deadline = time.monotonic() + 30
            while s.metrics().get("sarai:queue_length", 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.02)  # one decoding, one waiting: the server is full
            with pytest.raises(anthropic.APIStatusError) as err:
                client(s).messages.create(model=mid, max_tokens=1, messages=ASK)
            assert [f.result().status_code for f in running] == [200, 200]
        assert err.value.status_code == 529 and isinstance(err.value, anthropic.InternalServerError)
        assert err.value.body["error"]["type"] == "overloaded_error"
        assert err.value.response.headers["retry-after"] == "1"
        assert err.value.response.headers["x-should-retry"] == "false"
    finally:
        s.stop()
