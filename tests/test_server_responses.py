"""OpenAI's Responses API (``POST /v1/responses``) through the official ``openai`` SDK's ``responses.create``.

Real ``sarai-llama serve`` processes on 127.0.0.1: the real Gemma 3 270M, and
a tiny random-weight model carrying Qwen 2.5's real chat template for function
tools and JSON output, where what is checked is what the grammar guarantees
and what the protocol says (items, events and their numbering, usage).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="pip install sarai-llama[test]")
pytest.importorskip("fastapi", reason="pip install sarai-llama[server]")
jsonschema = pytest.importorskip("jsonschema", reason="pip install sarai-llama[test]")

from test_chat_template import ASCII, SCHEMA  # noqa: E402
from helpers import Server  # noqa: E402

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city", "parameters": CITY}]
BIAS = {str(k): v for k, v in ASCII.items()}  # random weights: no invalid UTF-8 or control characters
GREEDY = {"logit_bias": BIAS}
SAMPLED = {"seed": 4, "logit_bias": BIAS}


@pytest.fixture(scope="module")
def qwen(qwen_tiny_path: Path) -> Iterator[Server]:
    s = Server(qwen_tiny_path, "--parallel", "2", "--ctx-size", "4096")
    yield s
    s.stop()


def test_gemma_plain_and_instructions(gemma_path: Path) -> None:
    """The real model (a base model: its chat answers carry no meaning; the protocol is checked)."""
    s = Server(gemma_path, "--parallel", "1", "--ctx-size", "2048")
    try:
        c, mid = s.client(), s.model_id()
        out = c.responses.create(model=mid, input="What is the capital of France?", max_output_tokens=16,
                                 temperature=0)
        assert out.object == "response" and out.id.startswith("resp_") and out.model == mid
        assert out.status in ("completed", "incomplete") and out.output_text.strip()
        (msg,) = out.output
        assert msg.type == "message" and msg.role == "assistant" and msg.content[0].type == "output_text"
        assert out.usage.output_tokens <= 16 and out.usage.total_tokens == out.usage.input_tokens + \
            out.usage.output_tokens
        if out.status == "incomplete":
            assert out.incomplete_details.reason == "max_output_tokens" and out.usage.output_tokens == 16
        told = c.responses.create(model=mid, input="What is the capital of France?", max_output_tokens=4,
                                  instructions="Answer in one word.", temperature=0)
        assert told.instructions == "Answer in one word."
        assert told.usage.input_tokens > out.usage.input_tokens  # the instructions are in the prompt
    finally:
        s.stop()


def test_stream_events_numbered_and_equal_to_the_answer(qwen: Server) -> None:
    c, mid = qwen.client(), qwen.model_id()
    kw: dict[str, Any] = dict(model=mid, input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
                              max_output_tokens=12, temperature=0, extra_body=GREEDY)
    whole = c.responses.create(**kw)
    events = list(c.responses.create(stream=True, **kw))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    end = "response.incomplete" if whole.status == "incomplete" else "response.completed"
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", end]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text and events[-4].text == text
    assert events[-1].response.output_text == text and events[-1].response.usage.output_tokens == \
        whole.usage.output_tokens
    assert events[0].response.status == "in_progress" and events[0].response.output == []


def test_function_tools_and_call_output_round_trip(qwen: Server) -> None:
    c, mid = qwen.client(), qwen.model_id()
    kw: dict[str, Any] = dict(model=mid, input="What is the weather in Paris?", tools=TOOLS, tool_choice="required",
                              parallel_tool_calls=False, max_output_tokens=300, temperature=1.0, extra_body=SAMPLED)
    out = c.responses.create(**kw)
    assert out.status == "completed", out
    (call,) = out.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), CITY)

    events = list(c.responses.create(stream=True, **kw))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert args == done.arguments == call.arguments and done.name == "get_weather"  # same seed, same call
    assert events[-1].type == "response.completed" and events[-1].response.output[0].arguments == call.arguments

    named = c.responses.create(**{**kw, "tool_choice": {"type": "function", "name": "get_weather"}})
    assert [o.type for o in named.output] == ["function_call"]

    # the call and its output go back as input items, through the template
    history: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"},
                          {"type": "function_call", "call_id": call.call_id, "name": call.name,
                           "arguments": call.arguments},
                          {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"}]
    answer = c.responses.create(model=mid, input=history, tools=TOOLS, tool_choice="none", max_output_tokens=6,
                                temperature=0, extra_body=GREEDY)
    assert [o.type for o in answer.output] == ["message"]
    assert answer.usage.input_tokens > out.usage.input_tokens + 10


def test_text_format_json_schema(qwen: Server) -> None:
    c, mid = qwen.client(), qwen.model_id()
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": SCHEMA, "strict": True}}
    out = c.responses.create(model=mid, input="Describe a person.", text=fmt, max_output_tokens=300, temperature=1.0,
                             extra_body={"seed": 5, "logit_bias": BIAS})
    assert out.status == "completed" and out.text.format.type == "json_schema"
    jsonschema.validate(json.loads(out.output_text), SCHEMA)
    obj = c.responses.create(model=mid, input="Any object.", text={"format": {"type": "json_object"}},
                             max_output_tokens=300, temperature=1.0, extra_body={"seed": 6, "logit_bias": BIAS})
    assert obj.status == "completed" and isinstance(json.loads(obj.output_text), dict)


def test_stateless_and_bad_requests_are_400s_naming_the_field(qwen: Server) -> None:
    c, mid = qwen.client(), qwen.model_id()
    cases = [
        (dict(previous_response_id="resp_123"), "previous_response_id"),
        (dict(store=True), "store"),
        (dict(tools=[{"type": "web_search"}]), "tools[0].type"),
        (dict(text={"format": {"type": "yaml"}}), "text.format"),
        (dict(text={"format": {"type": "json_schema", "name": "x", "schema": {"type": 5}}}), "text.format"),
        (dict(tool_choice={"type": "function", "name": "nope"}, tools=TOOLS), "tool_choice"),
        (dict(temperature=-1.0), "temperature"),
        (dict(max_output_tokens=100_000), "max_output_tokens"),
        (dict(input=[{"type": "item_reference", "id": "msg_1"}]), "input[0]"),
        (dict(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]), "input[0].content[0]"),
    ]
    for kw, param in cases:
        kw.setdefault("input", "hi")
        with pytest.raises(openai.BadRequestError) as err:
            c.responses.create(model=mid, max_output_tokens=kw.pop("max_output_tokens", 4), **kw)
        assert err.value.param == param, (kw, err.value.body)
    assert c.responses.create(model=mid, input="hi", store=False, max_output_tokens=2).store is False
