"""Chat templates, tool calls and JSON-schema output (``chat_template``, ``chat``, ``chat_completion``).

Tiny random-weight models carry real chat templates of three families in
their GGUF metadata (from llama.cpp's ``models/templates/`` in the vendored
tree): Qwen 2.5 (ChatML with Hermes-style ``<tool_call>`` tags), Hermes 3
(a Llama 3.1 fine-tune, its ``tool_use`` template) and Mistral Nemo
(``[TOOL_CALLS]``). Random weights say nothing sensible, so what is checked
is what the grammar guarantees: whatever the model samples, a tool call or a
schema-constrained answer is well-formed. The real Gemma file (no template)
checks the built-in fallback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import write_tiny_llama
from sarai_llama import Llama, LlamaGrammar, LogitsProcessorList, _core
from sarai_llama.chat import BuiltinChat
from sarai_llama.chat_template import ChatTemplate

jsonschema = pytest.importorskip("jsonschema", reason="pip install sarai-llama[test]")

TEMPLATES = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models" / "templates"

#: family -> (template file, the special tokens its vocabulary has, the text that starts a tool call)
FAMILIES = {
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"),
                "<tool_call>\n"),
    "hermes3-llama3.1": ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
                         ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"), "<tool_call>\n"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja",
                     ("[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                      "[TOOL_RESULTS]", "[/TOOL_RESULTS]"), "[TOOL_CALLS]"),
}

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                  "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": WEATHER_SCHEMA}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
#: Bans the tiny vocabulary's byte tokens (ids 3 + byte) outside printable ASCII, tab and
#: newline. Alone, a random model strings bytes >= 0x80 into invalid UTF-8 (shown as one
#: U+FFFD per byte where the grammar counted one character) and writes control characters
#: that llama.cpp's grammars admit in a tool call's "id" but its JSON parser rejects: both
#: are artefacts of random weights, not of the JSON constraints under test.
ASCII = {3 + b: -100.0 for b in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0x100)]}


def family_model(tmp_path: Path, family: str) -> Llama:
    source, specials, _ = FAMILIES[family]
    path = write_tiny_llama(tmp_path / f"tiny-{family}.gguf", chat_template=(TEMPLATES / source).read_text(),
                            special_tokens=specials, add_space_prefix=False, n_ctx_train=2048)
    return Llama(str(path), n_ctx=2048, verbose=False)


def starts_a_call(llm: Llama, text: str) -> LogitsProcessorList:
    """Random weights never decide to call a tool, nor to stop; this stands in for those decisions only.

    It raises the logits of the tokens of ``text`` (the family's call marker),
    one after the other, until the marker has been generated, and from then on
    the end token's; everything in between (name, JSON arguments, closing tags)
    is left to the model and the grammar.
    """
    seq = llm.tokenize(text.encode(), add_bos=False, special=True)
    state = {"start": None}
    eos = llm.token_eos()

    def push(ids: Any, scores: Any) -> Any:
        ids = [int(i) for i in ids]
        if state["start"] is None:
            state["start"] = len(ids)
        generated = ids[state["start"]:]
        for i in range(len(generated) - len(seq) + 1):
            if generated[i:i + len(seq)] == seq:
                # The call has started: the grammar admits the end token only once the
                # call is complete, and then this makes the model stop there instead of
                # writing whitespace or further calls until max_tokens.
                scores[eos] += 30.0
                return scores
        k = next((k for k in range(min(len(seq), len(generated)), 0, -1) if generated[-k:] == seq[:k]), 0)
        scores[seq[k]] += 30.0
        return scores

    return LogitsProcessorList([push])


def check_calls(calls: list[dict[str, Any]]) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call["type"] == "function" and call["id"]
        assert call["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_SCHEMA)


# ------------------------------------------------------------------------------ rendering
@pytest.mark.parametrize("source,builtin", [("Qwen-Qwen2.5-7B-Instruct.jinja", "chatml"),
                                            ("microsoft-Phi-3.5-mini-instruct.jinja", "phi3"),
                                            ("ibm-granite-granite-3.3-2B-Instruct.jinja", "granite")])
def test_gguf_template_renders_as_llama_cpp_renderer(tmp_path: Path, source: str, builtin: str) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": "What is 2+2?"}]
    path = write_tiny_llama(tmp_path / "m.gguf", chat_template=(TEMPLATES / source).read_text())
    llm = Llama(str(path), n_ctx=256, verbose=False)
    fmt = llm.chat_handler()
    assert isinstance(fmt, ChatTemplate) and "tokenizer.chat_template" in fmt.why
    ours = fmt.render(messages).prompt
    reference = _core.apply_chat_template(builtin, [(m["role"], m["content"]) for m in messages], True)
    assert ours == reference


def test_text_parts_tool_history_and_generation_prompt(tmp_path: Path) -> None:
    llm = family_model(tmp_path, "qwen2.5")
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    prompt = llm.chat_handler().render(history, tools=TOOLS).prompt
    assert "Paris?" in prompt and "sunny, 21 C" in prompt and '"get_weather"' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert not llm.chat_handler().render(history, add_generation_prompt=False).prompt.endswith("assistant\n")


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ self.__init__.__globals__ }}{{ lipsum.__globals__['os'].system('touch MARKER') }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ messages.__class__ }}{{ namespace.__init__ }}{{ range.__call__ }}",
])
def test_template_cannot_reach_python(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    source = payload.replace("MARKER", str(marker)) + "{% for m in messages %}{{ m.content }}{% endfor %}"
    try:
        prompt = ChatTemplate(source).render([{"role": "user", "content": "hello"}]).prompt
    except ValueError:
        prompt = ""  # refused: as good as harmless
    assert not marker.exists()
    assert "class" not in prompt and "function" not in prompt and "module" not in prompt


def test_bad_templates_and_messages_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not parse"):
        ChatTemplate("{% for m in messages %}{{ m.content }")
    tmpl = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}")
    for bad in ([], [{"content": "no role"}], "text", [{"role": "user", "content": 5}]):
        with pytest.raises(ValueError):
            tmpl.render(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="raised on purpose"):
        ChatTemplate("{{ raise_exception('raised on purpose') }}").render([{"role": "user", "content": "x"}])


def test_chat_format_override_by_file_and_builtin_name(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf")  # no template in the file
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>")
    assert Llama(str(path), chat_format=str(jinja), verbose=False).chat_handler().render(ASK).prompt == \
        "<user>What is the weather in Paris?<assistant>"
    builtin = Llama(str(path), chat_format="chatml", verbose=False).chat_handler()
    assert isinstance(builtin, BuiltinChat) and builtin.render(ASK).prompt.startswith("<|im_start|>user")
    with pytest.raises(ValueError, match="tools need a Jinja chat template"):
        builtin.render(ASK, tools=TOOLS)
    with pytest.raises(ValueError, match="unknown chat_format"):
        Llama(str(path), chat_format="no-such-format", verbose=False).chat_handler()


# ------------------------------------------------------------------------------ tools
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_required_tool_call_is_well_formed(tmp_path: Path, family: str) -> None:
    llm = family_model(tmp_path, family)
    for seed in range(3):
        out = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed,
                                         max_tokens=250, logits_processor=starts_a_call(llm, FAMILIES[family][2]),
                                         logit_bias=ASCII)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        check_calls(choice["message"]["tool_calls"])


def test_named_tool_choice_and_stream(tmp_path: Path) -> None:
    llm = family_model(tmp_path, "qwen2.5")
    tools = TOOLS + [{"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    kw = dict(tools=tools, tool_choice=choice, temperature=1.0, seed=7, max_tokens=400, logit_bias=ASCII)
    whole = llm.create_chat_completion(ASK, logits_processor=starts_a_call(llm, "<tool_call>\n"), **kw)
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in llm.create_chat_completion(ASK, stream=True, logits_processor=starts_a_call(llm, "<tool_call>\n"),
                                            **kw):
        c = chunk["choices"][0]
        finish = c["finish_reason"] or finish
        for d in c["delta"].get("tool_calls", []):
            slot = calls.setdefault(d["index"], {"id": "", "type": "function",
                                                 "function": {"name": "", "arguments": ""}})
            slot["id"] = d.get("id") or slot["id"]
            for key in ("name", "arguments"):
                slot["function"][key] += d.get("function", {}).get(key, "")
    assert finish == "tool_calls"
    streamed = [calls[i] for i in sorted(calls)]
    check_calls(streamed)
    want = whole["choices"][0]["message"]["tool_calls"]
    assert [c["function"] for c in streamed] == [c["function"] for c in want]
    with pytest.raises(ValueError, match="not in tools"):
        llm.create_chat_completion(ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})


def test_auto_tool_choice_is_lazy_and_text_stays_text(tmp_path: Path) -> None:
    llm = family_model(tmp_path, "qwen2.5")
    rendered = llm.chat_handler().render(ASK, tools=TOOLS, tool_choice="auto")
    assert rendered.grammar and rendered.grammar_lazy and rendered.trigger_patterns
    out = llm.create_chat_completion(ASK, tools=TOOLS, temperature=1.0, seed=3, max_tokens=400, logit_bias=ASCII,
                                     logits_processor=starts_a_call(llm, "<tool_call>\n"))
    check_calls(out["choices"][0]["message"]["tool_calls"])
    plain = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=8)
    assert plain["choices"][0]["finish_reason"] == "length" and "tool_calls" not in plain["choices"][0]["message"]
    with pytest.raises(ValueError, match="grammar cannot be combined with tools"):
        llm.create_chat_completion(ASK, tools=TOOLS, grammar='root ::= "x"')


# ------------------------------------------------------------------------------ JSON output
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 10},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 3},
    "ok": {"type": "boolean"}}, "required": ["name", "age", "ok"], "additionalProperties": False}


def test_json_schema_output_validates_for_20_seeds(tmp_path: Path) -> None:
    llm = family_model(tmp_path, "mistral-nemo")
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
    for seed in range(20):
        out = llm.create_chat_completion(ASK, response_format=fmt, temperature=1.0, seed=seed, max_tokens=300,
                                         logit_bias=ASCII)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "stop", (seed, choice)
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_json_for_completions_and_grammar_from_json_schema(tiny_model_path: Path) -> None:
    llm = Llama(str(tiny_model_path), n_ctx=512, verbose=False)
    out = llm.create_completion("Data:", response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
                                temperature=1.0, seed=1, max_tokens=300, logit_bias=ASCII)
    jsonschema.validate(json.loads(out["choices"][0]["text"]), SCHEMA)
    grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA))
    out = llm.create_completion("Data:", grammar=grammar, temperature=1.0, seed=2, max_tokens=300, logit_bias=ASCII)
    jsonschema.validate(json.loads(out["choices"][0]["text"]), SCHEMA)


def test_invalid_schemas_and_conflicts_are_value_errors(tiny_model_path: Path) -> None:
    llm = Llama(str(tiny_model_path), n_ctx=256, chat_format="chatml", verbose=False)
    with pytest.raises(ValueError, match="JSON schema"):
        llm.create_chat_completion(ASK, response_format={"type": "json_schema", "json_schema": {"schema": {"type": 5}}})
    with pytest.raises(ValueError, match="not valid JSON"):
        LlamaGrammar.from_json_schema("{not json")
    with pytest.raises(ValueError, match="response_format type"):
        llm.create_chat_completion(ASK, response_format={"type": "yaml"})
    with pytest.raises(ValueError, match="not both"):
        llm.create_chat_completion(ASK, response_format={"type": "json_object"}, grammar='root ::= "x"')


# ------------------------------------------------------------------------------ the real model
def test_gemma_fallback_chat_and_json_object(gemma_path: Path) -> None:
    llm = Llama(str(gemma_path), n_ctx=1024, verbose=False)
    fmt = llm.chat_handler()
    assert isinstance(fmt, BuiltinChat) and fmt.name == "gemma" and "no template" in fmt.why
    out = llm.create_chat_completion([{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=16)
    assert out["choices"][0]["message"]["content"].strip()
    schema = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 20}},
              "required": ["capital"], "additionalProperties": False}
    # A json_object call with llama-server's "schema" field: the 270M base model, free to
    # write any object, repeats keys until max_tokens; the schema lets it finish.
    out = llm.create_chat_completion(
        [{"role": "user", "content": 'What is the capital of France? Answer as JSON like {"capital": "..."}.'}],
        response_format={"type": "json_object", "schema": schema}, temperature=0, max_tokens=96)
    assert out["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), schema)
