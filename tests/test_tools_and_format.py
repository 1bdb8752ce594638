"""Tools beside a JSON output format, in all three protocols; ``/v1/completions`` with a list of prompts.

OpenAI's contract: a forced tool choice ("required", a named function; Anthropic's
``any`` / ``tool``) is a call whatever ``response_format`` says, the format being the
final text answer's; with "auto" the answer is a call or text under the format.
llama.cpp's renderers let the format replace the tools (issue 38), so every check
here goes through a real ``sarai-llama serve`` and the official clients, over the
tool-capable template families on a byte-fallback vocabulary with random seeds:
whatever random weights sample, a call's arguments validate against its tool's
schema and a text answer validates against the format's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="pip install sarai-llama[test]")
anthropic = pytest.importorskip("anthropic", reason="pip install sarai-llama[test]")
httpx = pytest.importorskip("httpx", reason="pip install sarai-llama[test]")
jsonschema = pytest.importorskip("jsonschema", reason="pip install sarai-llama[test]")
pytest.importorskip("fastapi", reason="pip install sarai-llama[server]")

from conftest import write_tiny_llama  # noqa: E402
from helpers import ASK, FAMILIES, SCHEMAS, TEMPLATES, TOOLS, Server  # noqa: E402
from sarai_llama import Llama, _core  # noqa: E402
from sarai_llama.gbnf import call_or, prefixed  # noqa: E402
from sarai_llama.sampling import SamplingParams  # noqa: E402

#: The text answer's format (an openai-agents ``output_type``).
ANSWER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                           "temp_c": {"type": "integer", "minimum": -50, "maximum": 60}},
          "required": ["city", "temp_c"], "additionalProperties": False}
CHAT_FORMAT = {"type": "json_schema", "json_schema": {"name": "weather", "schema": ANSWER, "strict": True}}
TEXT_FORMAT = {"format": {"type": "json_schema", "name": "weather", "schema": ANSWER, "strict": True}}
OUTPUT_CONFIG = {"format": {"type": "json_schema", "schema": ANSWER}}
SEEDS = (0, 1, 2)
MAX_TOKENS = 400
#: Sampling from the whole distribution: with min_p / top_k, random weights can cut the one token that
#: ends an unbounded run (Kimi's call ids are ``[0-9]+``), and a call would never end.
PURE = {"min_p": 0.0, "top_k": 0, "top_p": 1.0}


def family_path(directory: Path, family: str) -> Path:
    return write_tiny_llama(directory / f"{family}.gguf", chat_template=(TEMPLATES / FAMILIES[family]).read_text(),
                            n_ctx_train=4096, byte_only=True)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # --reasoning-format none: a forced call's grammar lets a thinking block come first when the
    # reasoning is parsed out (Kimi K2's), and random weights never close one.
    s = Server(family_path(tmp_path_factory.mktemp("fam"), request.param), "--parallel", "2",
               "--ctx-size", "8192", "--seed", "3", "--reasoning-format", "none")
    yield s
    s.stop()


def check_args(name: str, arguments: Any, forced: str | None) -> None:
    if forced is not None:
        assert name == forced
    jsonschema.validate(json.loads(arguments) if isinstance(arguments, str) else arguments, SCHEMAS[name])


# ------------------------------------------------------------------------------ the grammar itself
def engine(model: Any) -> Any:
    p = _core.ContextParams()
    p.n_ctx = p.n_batch = p.n_ubatch = 1024
    return _core.Engine(model, p)


def generated(model: Any, fields: dict[str, Any], seed: int) -> str:
    """What the engine samples under ``fields`` (byte vocabulary: ids 3 + byte), as text."""
    e = engine(model)
    e.submit([1, 3 + ord("h")], SamplingParams(**{**fields, "temperature": 1.0, "seed": seed}).to_core(0),
             max_tokens=MAX_TOKENS)
    out = b""
    while not e.idle():
        for ev in e.step():
            if ev.kind == _core.Event.TOKEN and not ev.eog:
                out += bytes([ev.token - 3])
    return out.decode()


def accepts(model: Any, fields: dict[str, Any], text: str) -> bool:
    """Whether the engine's grammar sampler takes ``text`` (byte tokens: id 3 + byte) and then the end."""
    e = engine(model)
    rid = e.submit([1, 3 + ord("h")], SamplingParams(**fields).to_core(0), max_tokens=len(text.encode()) + 2,
                   external_sampling=True)
    try:
        for token in [3 + b for b in text.encode()] + [2]:  # 2: </s>, the end the grammar must allow last
            assert [ev.kind for ev in e.step()] == [_core.Event.NEED_TOKEN]
            e.provide_token(rid, token)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", ["qwen2.5", "mistral-nemo", "llama3.1", "kimi-k2"])
def test_auto_grammar_admits_a_call_or_the_format_and_nothing_else(tmp_path: Path, name: str) -> None:
    """Deterministic, whatever the weights: the auto grammar takes a call that the forced grammar
    generated and a JSON answer valid under the format, and refuses free text and invalid JSON."""
    llm = Llama(str(family_path(tmp_path, name)), n_ctx=4096, verbose=False)
    model = llm.runtime.model
    handler = llm.chat_handler()
    auto = handler.render(ASK, tools=TOOLS, tool_choice="auto", response_format=CHAT_FORMAT)
    assert auto.grammar and not auto.grammar_lazy and not auto.trigger_patterns
    fields = auto.sampling_fields()
    assert accepts(model, fields, json.dumps({"city": "Paris", "temp_c": 21}))
    assert not accepts(model, fields, json.dumps({"city": "Paris"}))  # the format's required field
    assert not accepts(model, fields, "It is sunny.")
    required = handler.render(ASK, tools=TOOLS, tool_choice="required")
    for seed in range(2):
        call = generated(model, required.sampling_fields(), seed)
        assert accepts(model, fields, call), call
    # A forced choice beside the format is the call grammar alone (the format is the later answer's).
    forced = handler.render(ASK, tools=TOOLS, tool_choice="required", response_format=CHAT_FORMAT)
    assert forced.grammar == required.grammar
    assert not accepts(model, forced.sampling_fields(), json.dumps({"city": "Paris", "temp_c": 21}))


def test_call_or_keeps_the_lead_and_renames_the_answer_apart() -> None:
    calls = 'root ::= "<a>" space tool-call\ntool-call ::= "{" space "}"\nspace ::= " "?'
    other = 'root ::= "[" space "]"\nspace ::= [ \\t]*'
    joined = call_or(calls, other).splitlines()
    assert joined[0] == 'root ::= "<a>" space (tool-call | answer-root)'
    assert 'answer-root ::= "[" answer-space "]"' in joined and "answer-space ::= [ \\t]*" in joined
    assert prefixed('x ::= "y-z" [a-b] <[12]> y{1,2} # z w', "p-") == 'p-x ::= "y-z" [a-b] <[12]> p-y{1,2} # z w'
    with pytest.raises(ValueError):
        call_or('root ::= "<a>"', other)
    with pytest.raises(ValueError):
        call_or('root ::= x\nanswer-root ::= "q"', other)


# ------------------------------------------------------------------------------ the three protocols
FORCED_CHAT = [("required", None), ({"type": "function", "function": {"name": "forecast"}}, "forecast")]


def test_chat_tools_beside_response_format(family: Server) -> None:
    c, mid = family.client(), family.model_id()
    answers = 0
    for seed in SEEDS:
        for fmt in (None, CHAT_FORMAT):
            kw: dict[str, Any] = dict(model=mid, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed,
                                      max_tokens=MAX_TOKENS, extra_body=PURE)
            if fmt is not None:
                kw["response_format"] = fmt
            for choice, name in FORCED_CHAT:
                out = c.chat.completions.create(tool_choice=choice, **kw).choices[0]
                assert out.finish_reason == "tool_calls" and out.message.tool_calls, out
                for call in out.message.tool_calls:
                    check_args(call.function.name, call.function.arguments, name)
            out = c.chat.completions.create(tool_choice="auto", **kw).choices[0]
            if out.message.tool_calls:
                assert out.finish_reason == "tool_calls"
                for call in out.message.tool_calls:
                    check_args(call.function.name, call.function.arguments, None)
            elif fmt is not None:
                assert out.finish_reason == "stop", out
                jsonschema.validate(json.loads(out.message.content), ANSWER)
                answers += 1
    # streamed: the forced call beside the format arrives as tool-call deltas
    names, args, finish = "", "", None
    for chunk in c.chat.completions.create(model=mid, messages=ASK, tools=TOOLS, tool_choice="required",
                                           response_format=CHAT_FORMAT, temperature=1.0, seed=9,
                                           max_tokens=MAX_TOKENS, stream=True, extra_body=PURE):
        if chunk.choices:
            finish = chunk.choices[0].finish_reason or finish
            assert not chunk.choices[0].delta.content
            for d in chunk.choices[0].delta.tool_calls or []:
                names += (d.function.name or "") if d.function else ""
                args += (d.function.arguments or "") if d.function else ""
    assert finish == "tool_calls" and names in SCHEMAS
    check_args(names, args, None)


def test_responses_tools_beside_text_format(family: Server) -> None:
    c, mid = family.client(), family.model_id()
    for seed in SEEDS[:2]:
        for choice, name in [("required", None), ({"type": "function", "name": "get_weather"}, "get_weather"),
                             ("auto", None)]:
            out = c.responses.create(model=mid, input="What is the weather in Paris?", tools=RESPONSES_TOOLS,
                                     tool_choice=choice, text=TEXT_FORMAT, temperature=1.0, extra_body={"seed": seed, **PURE},
                                     max_output_tokens=MAX_TOKENS, parallel_tool_calls=False)
            assert out.status == "completed", out
            calls = [item for item in out.output if item.type == "function_call"]
            if choice != "auto" or calls:
                assert calls, out.output
                for call in calls:
                    check_args(call.name, call.arguments, name)
            else:
                jsonschema.validate(json.loads(out.output_text), ANSWER)


def test_anthropic_tools_beside_output_format(family: Server) -> None:
    c = anthropic.Anthropic(base_url=family.url, api_key="none", max_retries=0, timeout=120)
    mid = family.model_id()
    for seed in SEEDS[:2]:
        # one call at most: random weights would chain parallel calls to max_tokens
        for choice, name in [({"type": "any", "disable_parallel_tool_use": True}, None),
                             ({"type": "tool", "name": "forecast", "disable_parallel_tool_use": True}, "forecast"),
                             ({"type": "auto", "disable_parallel_tool_use": True}, None)]:
            out = c.messages.create(model=mid, max_tokens=MAX_TOKENS, messages=ASK, tools=ANTHROPIC_TOOLS,
                                    tool_choice=choice,
                                    extra_body={"output_config": OUTPUT_CONFIG, "temperature": 1.0, "seed": seed,
                                                **PURE})
            uses = [b for b in out.content if b.type == "tool_use"]
            if choice["type"] != "auto" or uses:
                assert out.stop_reason == "tool_use" and uses, out
                for use in uses:
                    check_args(use.name, use.input, name)
            else:
                assert out.stop_reason == "end_turn", out
                jsonschema.validate(json.loads("".join(b.text for b in out.content if b.type == "text")), ANSWER)


RESPONSES_TOOLS = [{"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"]}
                   for t in TOOLS]
ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in TOOLS]


# ------------------------------------------------------------------------------ an agent's turns
def test_an_agent_with_tools_and_an_output_type(tmp_path: Path) -> None:
    """What openai-agents sends for an ``Agent(tools=..., output_type=...)``: the format on every turn,
    a forced first turn, then "auto" (its reset_tool_choice) with each call's result, until the
    answer is the output type's JSON; at most its default max_turns (10)."""
    s = Server(family_path(tmp_path, "mistral-nemo"), "--parallel", "1", "--ctx-size", "8192",
               "--reasoning-format", "none")
    try:
        c, mid = s.client(), s.model_id()
        messages: list[dict[str, Any]] = list(ASK)
        choice: Any = "required"
        for turn in range(10):
            out = c.chat.completions.create(model=mid, messages=messages, tools=TOOLS, tool_choice=choice,
                                            response_format=CHAT_FORMAT, parallel_tool_calls=False,
                                            temperature=1.0, seed=turn, max_tokens=MAX_TOKENS, extra_body=PURE)
            msg = out.choices[0].message
            if not msg.tool_calls:
                assert turn > 0 and out.choices[0].finish_reason == "stop"
                jsonschema.validate(json.loads(msg.content), ANSWER)
                return
            (call,) = msg.tool_calls
            check_args(call.function.name, call.function.arguments, None)
            cid = f"c{turn:08d}"  # Mistral's template wants 9 alphanumerics
            messages += [{"role": "assistant", "content": None, "tool_calls": [
                             {"id": cid, "type": "function", "function": {"name": call.function.name,
                                                                          "arguments": call.function.arguments}}]},
                         {"role": "tool", "tool_call_id": cid, "content": json.dumps({"temp_c": 21})}]
            choice = "auto"
        raise AssertionError("no JSON answer in 10 turns")
    finally:
        s.stop()


# ------------------------------------------------------------------------------ completions: a list of prompts
@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = write_tiny_llama(tmp_path_factory.mktemp("many") / "tiny.gguf", n_ctx_train=1024, seed=5)
    s = Server(path, "--parallel", "4", "--ctx-size", "2048", "--max-queue", "2")
    yield s
    s.stop()


PROMPTS = ["The capital of France", "One two three", "Once upon a time there"]
GREEDY = {"ignore_eos": True}


def test_completions_take_a_list_of_prompts(tiny_server: Server) -> None:
    c, mid = tiny_server.client(), tiny_server.model_id()
    alone = [c.completions.create(model=mid, prompt=p, max_tokens=8, temperature=0, extra_body=GREEDY)
             for p in PROMPTS]
    together = c.completions.create(model=mid, prompt=PROMPTS, max_tokens=8, temperature=0, extra_body=GREEDY)
    assert [ch.index for ch in together.choices] == [0, 1, 2]
    # F32 greedy: one batch gives what one request at a time gives
    assert [ch.text for ch in together.choices] == [a.choices[0].text for a in alone]
    assert together.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert together.usage.completion_tokens == 24

    texts: dict[int, str] = {}
    usage = None
    for chunk in c.completions.create(model=mid, prompt=PROMPTS, max_tokens=8, temperature=0, stream=True,
                                      stream_options={"include_usage": True}, extra_body=GREEDY):
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + ch.text
        usage = chunk.usage or usage
    assert [texts[i] for i in range(3)] == [ch.text for ch in together.choices]
    assert usage is not None and usage.prompt_tokens == together.usage.prompt_tokens

    # n choices per prompt: choice j of prompt p is index p * n + j; token arrays as prompts
    ids = [httpx.post(tiny_server.url + "/tokenize", json={"content": p}, timeout=10).json()["tokens"]
           for p in PROMPTS[:2]]
    two = c.completions.create(model=mid, prompt=ids, n=2, max_tokens=4, temperature=1.0, seed=3,
                               extra_body=GREEDY)
    assert [ch.index for ch in two.choices] == [0, 1, 2, 3]
    assert two.usage.prompt_tokens == sum(map(len, ids)) and two.usage.completion_tokens == 16
    echo = c.completions.create(model=mid, prompt=PROMPTS[:2], max_tokens=2, temperature=0, echo=True,
                                extra_body=GREEDY)
    assert [ch.text[:len(p)] for ch, p in zip(echo.choices, PROMPTS[:2])] == PROMPTS[:2]

    # more than the server takes at once (4 sequences + 2 waiting) is a 400; so is an empty list
    with pytest.raises(openai.BadRequestError, match="at most 6 at once"):
        c.completions.create(model=mid, prompt=PROMPTS + ["x"], n=2, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="empty list"):
        c.completions.create(model=mid, prompt=[], max_tokens=2)
    r = httpx.post(tiny_server.url + "/v1/completions", json={"model": mid, "prompt": ["a", "b " * 3000],
                                                              "max_tokens": 2}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt[1]", r.text
