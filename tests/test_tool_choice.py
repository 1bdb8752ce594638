"""tool_choice "required" and a named function always give a call; no UnicodeDecodeError out of the binding.

Property tests over random tiny models: random weights decide nothing, so whatever
they sample must still be a well-formed call whose arguments validate against the
function's schema (the grammar starts at the call: ``chat_template.calls_only``), and
valid UTF-8 (the sampler's UTF-8 guard, for byte-fallback vocabularies). Two
vocabularies: byte fallback only (``<unk>``, ``<s>``, ``</s>`` and the 256 byte tokens:
every marker is spelled in bytes, the case that raised ``UnicodeDecodeError``), and
words plus the family's special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import write_tiny_llama
from helpers import ASK, FAMILIES, SCHEMAS, SPECIALS, TEMPLATES, TOOLS
from sarai_llama import Llama, LlamaGrammar, _core
from sarai_llama.gbnf import calls_only

jsonschema = pytest.importorskip("jsonschema", reason="pip install sarai-llama[test]")

CHOICES = ["required", {"type": "function", "function": {"name": "forecast"}}]


def family_model(tmp_path: Path, family: str, vocab: str) -> Llama:
    kw: dict[str, Any] = {"byte_only": True} if vocab == "bytes" else {
        "special_tokens": SPECIALS[family], "add_space_prefix": False}
    path = write_tiny_llama(tmp_path / f"{family}-{vocab}.gguf", chat_template=(TEMPLATES / FAMILIES[family]).read_text(),
                            n_ctx_train=4096, **kw)
    return Llama(str(path), n_ctx=4096, verbose=False)


def check_call(choice: Any, out: dict[str, Any]) -> list[dict[str, Any]]:
    c = out["choices"][0]
    assert c["finish_reason"] == "tool_calls", c
    calls = c["message"]["tool_calls"]
    assert calls and c["message"]["content"] is None, c
    for call in calls:
        name = call["function"]["name"]
        if isinstance(choice, dict):
            assert name == choice["function"]["name"]
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[name])
    return calls


def streamed_calls(chunks: Any) -> tuple[list[dict[str, Any]], str | None]:
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in chunks:
        c = chunk["choices"][0]
        finish = c["finish_reason"] or finish
        for d in c["delta"].get("tool_calls", []):
            slot = calls.setdefault(d["index"], {"name": "", "arguments": ""})
            for key in ("name", "arguments"):
                slot[key] += d.get("function", {}).get(key, "")
    return [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_required_and_named_choices_always_call_on_a_byte_vocabulary(tmp_path: Path, family: str) -> None:
    """Before: UnicodeDecodeError out of Engine.submit (the prefill's byte tokens), or free text and "length"."""
    llm = family_model(tmp_path, family, "bytes")
    for seed in range(5):
        for choice in CHOICES:
            kw = dict(tools=TOOLS, tool_choice=choice, temperature=1.0, seed=seed, max_tokens=600)
            calls = check_call(choice, llm.create_chat_completion(ASK, **kw))
            if seed == 0:  # streamed equals non-streamed
                got, finish = streamed_calls(llm.create_chat_completion(ASK, stream=True, **kw))
                assert finish == "tool_calls" and got == [c["function"] for c in calls]


@pytest.mark.parametrize("family", sorted(SPECIALS))
def test_required_and_named_choices_always_call_with_special_tokens(tmp_path: Path, family: str) -> None:
    llm = family_model(tmp_path, family, "specials")
    for seed in range(4):
        for choice in CHOICES:
            check_call(choice, llm.create_chat_completion(ASK, tools=TOOLS, tool_choice=choice, temperature=1.0,
                                                          seed=seed, max_tokens=600))


def test_auto_stays_lazy_and_free_text_stays_in_required_thinking_blocks(tmp_path: Path) -> None:
    llm = family_model(tmp_path, "qwen2.5", "bytes")
    auto = llm.chat_handler().render(ASK, tools=TOOLS, tool_choice="auto")
    assert auto.grammar_lazy and auto.trigger_patterns
    required = llm.chat_handler().render(ASK, tools=TOOLS, tool_choice="required")
    root = next(line for line in required.grammar.splitlines() if line.startswith("root ::="))
    assert "until-" not in root and "tool-call" in root
    # Free text inside a group is a reasoning block, not text before the call: kept.
    g = 'root ::= "<a>" space ("<think>" until-5 "</think>")? until-7? tool-call'
    assert calls_only(g, "<a>") == 'root ::= "<a>" space ("<think>" until-5 "</think>")? tool-call'
    # A generation prompt that opens a reasoning block: the free text closes it, so it stays.
    assert calls_only(g, "<a><think>\n") == g
    # One call unless parallel calls are asked for.
    listed = 'root ::= "<a>" space until-3? tool-calls\ntool-calls ::= (tool-call space)+'
    assert calls_only(listed, "<a>").splitlines() == ['root ::= "<a>" space tool-calls', "tool-calls ::= tool-call space"]
    assert calls_only(listed, "<a>", parallel=True).splitlines()[1] == "tool-calls ::= (tool-call space)+"


def test_byte_messages_from_the_core_are_escaped_not_undecodable(tmp_path: Path) -> None:
    """A C++ message quoting a byte token's raw byte (0x81) was a UnicodeDecodeError."""
    model = _core.Model(str(write_tiny_llama(tmp_path / "bytes.gguf", byte_only=True)))
    p = _core.ContextParams()
    p.n_ctx = p.n_batch = p.n_ubatch = 64
    engine = _core.Engine(model, p)
    s = _core.SamplerParams()
    s.temperature = 0.0
    s.grammar = 'root ::= "a"'
    rid = engine.submit([1, 3 + ord("h")], s, max_tokens=4, external_sampling=True)
    assert [e.kind for e in engine.step()] == [_core.Event.NEED_TOKEN]
    engine.provide_token(rid, 3 + 0xC3)  # the first byte of "\u00e9": the grammar waits for the character
    assert [e.kind for e in engine.step()] == [_core.Event.NEED_TOKEN]
    with pytest.raises(ValueError) as raised:  # "\u00e9" is not "a": llama.cpp's message quotes the byte 0xA9
        engine.provide_token(rid, 3 + 0xA9)
    assert type(raised.value) is ValueError and "\\xa9" in str(raised.value)


def test_template_and_metadata_bytes_come_out_escaped(tmp_path: Path) -> None:
    """A GGUF's strings need not be UTF-8: the template's bytes reach Python escaped, never as an error."""
    path = write_tiny_llama(tmp_path / "t.gguf", byte_only=True,
                            chat_template="{% for m in messages %}<\x01\x02>{{ m.content }}{% endfor %}")
    raw = path.read_bytes().replace(b"<\x01\x02>", b"<\xff\xfe>", 1)  # bytes that no UTF-8 text has
    path.write_bytes(raw)
    llm = Llama(str(path), n_ctx=256, verbose=False)
    assert "<\\xff\\xfe>" in llm.metadata["tokenizer.chat_template"]
    rendered = llm.chat_handler().render(ASK)
    assert rendered.prompt.startswith("<\\xff\\xfe>")
    out = llm.create_chat_completion(ASK, max_tokens=4, temperature=0)
    assert out["choices"][0]["finish_reason"] in ("stop", "length")


def test_lone_surrogates_are_value_errors_that_name_the_argument(tmp_path: Path) -> None:
    """JSON's "\\ud800" makes a str no UTF-8 exists for: a ValueError saying which argument, not a
    TypeError ("incompatible function arguments") from the binding or a UnicodeEncodeError."""
    llm = family_model(tmp_path, "qwen2.5", "bytes")
    calls = {
        "text": lambda: llm.tokenize("a\ud800"),
        "prompt": lambda: llm("a\ud800", max_tokens=1),
        "messages": lambda: llm.create_chat_completion([{"role": "user", "content": "\udcff"}], max_tokens=1),
        "tools": lambda: llm.create_chat_completion(ASK, tools=[{"type": "function", "function": {
            "name": "f\ud800", "parameters": {"type": "object"}}}], max_tokens=1),
        "grammar": lambda: LlamaGrammar.from_string('root ::= "\ud800"'),
        "JSON schema": lambda: LlamaGrammar.from_json_schema('{"const": "\ud800"}'),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=f"{what} is not valid Unicode text") as raised:
            call()
        assert not isinstance(raised.value, UnicodeError), what
