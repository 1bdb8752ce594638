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


@pytest.fixture
def tiny(tiny_model_path):
    from sarai_llama import Llama

    llm = Llama(str(tiny_model_path), n_ctx=64, n_threads=1, verbose=False)
    yield llm
    llm.close()
