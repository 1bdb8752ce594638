"""Sampling parameters checked in one place (sarai_llama.sampling): pure, no model."""

from __future__ import annotations

import math
import warnings

import pytest

from sarai_llama import LlamaGrammar
from sarai_llama.sampling import SamplingParams


def test_defaults_are_llama_cpp_python_ones():
    p = SamplingParams.from_kwargs()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty) == (0.8, 40, 0.95, 0.05, 1.0)
    assert not p.greedy and SamplingParams(temperature=0).greedy


@pytest.mark.parametrize("kw, name", [
    ({"temperature": math.nan}, "temperature"), ({"temperature": -1}, "temperature"),
    ({"temperature": math.inf}, "temperature"), ({"top_p": 5.0}, "top_p"), ({"top_k": -3}, "top_k"),
    ({"min_p": -0.1}, "min_p"), ({"typical_p": 2}, "typical_p"), ({"top_k": 2.5}, "top_k"),
    ({"mirostat_mode": 3}, "mirostat_mode"), ({"presence_penalty": 9}, "presence_penalty"),
    ({"repeat_penalty": "high"}, "repeat_penalty"), ({"logit_bias": {-1: 1.0}}, "logit_bias"),
    ({"logit_bias": {5: math.nan}}, "logit_bias"), ({"grammar": "  "}, "grammar"), ({"top_p": True}, "top_p"),
])
def test_bad_values_name_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        SamplingParams.from_kwargs(**kw)


def test_logit_bias_minus_100_bans_and_string_keys_work():
    p = SamplingParams.from_kwargs(logit_bias={"7": -100, 3: 2.5})
    assert p.logit_bias == ((7, -math.inf), (3, 2.5))


def test_grammar_object_and_temp_alias():
    g = LlamaGrammar.from_string('root ::= "a"')
    p = SamplingParams.from_kwargs(grammar=g, temp=0.0)
    assert p.grammar == 'root ::= "a"' and p.grammar_root == "root" and p.temperature == 0.0


def test_dropped_knobs_warn_only_when_used():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SamplingParams.from_kwargs(tfs_z=1.0, penalize_nl=True)
    with pytest.warns(RuntimeWarning, match="tfs_z"):
        SamplingParams.from_kwargs(tfs_z=0.5)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="top_q"):
        SamplingParams.from_kwargs(top_q=0.5)


def test_seed_wraps_to_32_bits_and_core_params_carry_everything():
    p = SamplingParams.from_kwargs(seed=-1, top_k=7, mirostat_mode=2, grammar='root ::= "b"')
    assert p.seed == 0xFFFFFFFF
    core = p.to_core(default_seed=5)
    assert (core.seed, core.top_k, core.mirostat, core.grammar) == (0xFFFFFFFF, 7, 2, 'root ::= "b"')
    assert SamplingParams().to_core(default_seed=5).seed == 5
