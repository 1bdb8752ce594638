"""sarai_llama.grammar: a grammar that does not parse raises at construction, with the
parser's message (issue 15); grammars deep enough to overflow llama.cpp's recursion
are refused instead of crashing."""

from __future__ import annotations

import re

import pytest

from sarai_llama import LlamaGrammar, _core


@pytest.mark.parametrize("text, message", [
    ("root ::= (((", "expecting ')'"),
    ("root ::= [a-", "unexpected end of input"),
    ("root := \"a\"", "expecting ::="),
    ("root ::= foo", "undefined rule 'foo'"),
    ('start ::= "a"', "no rule named 'root'"),
    ("root ::= " + "(" * 300 + '"a"' + ")" * 300, "nests parentheses 300 deep"),
    ("\n".join(f"r{i} ::= r{i + 1}" for i in range(400)) + '\nr400 ::= "a"\nroot ::= r0\n', "lead into each other"),
])
def test_bad_grammar_raises_at_construction(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LlamaGrammar.from_string(text)


def test_good_grammars_pass():
    for text in ['root ::= "yes" | "no"', "# c\n\nroot ::= [a-z]{1,3} x\nx ::= \"!\"?\n",
                 "root ::= " + "(" * 200 + '"a"' + ")" * 200, 'root ::= <[5]> "a"']:
        assert LlamaGrammar.from_string(text).grammar == text


def test_token_ids_are_checked_against_the_model(tiny):
    _core.check_grammar('root ::= <[5]> "a"', "root", tiny._model)
    with pytest.raises(ValueError, match="token id 99999"):
        tiny("the", max_tokens=2, grammar='root ::= <[99999]> "a"')


def waiting_request(model: _core.Model, grammar: str) -> tuple[_core.Engine, int]:
    """An engine with one request under ``grammar`` waiting for the caller's token."""
    p = _core.ContextParams()
    p.n_ctx = p.n_batch = p.n_ubatch = 64
    engine = _core.Engine(model, p)
    s = _core.SamplerParams()
    s.temperature = 0.0
    s.grammar = grammar
    rid = engine.submit([1, 3 + ord("h")], s, max_tokens=4, external_sampling=True)
    assert [e.kind for e in engine.step()] == [_core.Event.NEED_TOKEN]
    return engine, rid


def test_matcher_errors_are_value_errors(tiny):
    """The grammar matcher's own errors are ValueErrors with its reason, in every build: in the
    manylinux wheels (one libc++ per library) they were "Caught an unknown exception!" while
    the matcher ran in libllama, and an end of generation the grammar did not allow yet
    aborted the process (llama.cpp's GGML_ABORT)."""
    model = tiny._model
    s = _core.SamplerParams()
    s.grammar, s.grammar_lazy, s.grammar_trigger_patterns = 'root ::= "a"', True, ["(unclosed"]
    with pytest.raises(ValueError, match="invalid grammar trigger"):
        _core.Sampler(model, s)
    s = _core.SamplerParams()
    s.grammar, s.grammar_prefill = 'root ::= "a"', "zz"
    with pytest.raises(ValueError, match="rejects the generation prompt: Unexpected empty grammar stack"):
        _core.Sampler(model, s)
    engine, rid = waiting_request(model, 'root ::= "ab"')
    with pytest.raises(ValueError, match="not accepted by the request's sampler: Unexpected empty grammar stack"):
        engine.provide_token(rid, 3 + ord("z"))  # the byte token of "z"
    engine, rid = waiting_request(model, 'root ::= "ab"')
    engine.provide_token(rid, 3 + ord("a"))
    assert [e.kind for e in engine.step()] == [_core.Event.NEED_TOKEN]
    with pytest.raises(ValueError, match="does not allow the end of generation here"):
        engine.provide_token(rid, model.token_eos)
    engine.provide_token(rid, 3 + ord("b"))
    assert [e.kind for e in engine.step()] == [_core.Event.NEED_TOKEN]
    assert [e.kind for e in engine.provide_token(rid, model.token_eos)][-1] == _core.Event.DONE


@pytest.fixture
def tiny(tiny_model_path):
    from sarai_llama import Llama

    llm = Llama(str(tiny_model_path), n_ctx=64, n_threads=1, verbose=False)
    yield llm
    llm.close()
