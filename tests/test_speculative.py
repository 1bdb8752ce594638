"""Prompt-lookup speculative decoding (llama_speculative.py) on the real core."""

from __future__ import annotations

import numpy as np
import pytest

from sarai_llama import Llama
from sarai_llama.llama_speculative import LlamaPromptLookupDecoding

PROMPT = "one two three four one two three four one two three four one two"


@pytest.fixture(scope="module")
def pair(tiny_model_path):
    kw = dict(n_ctx=256, n_batch=64, n_threads=1, verbose=False)
    return Llama(str(tiny_model_path), **kw), Llama(str(tiny_model_path), draft_model=LlamaPromptLookupDecoding(), **kw)


def text(out) -> str:
    return out["choices"][0]["text"]


def test_greedy_text_equals_plain_decoding_on_f32(pair):
    plain, drafted = pair
    for prompt in (PROMPT, "the cat"):
        assert text(drafted(prompt, max_tokens=40, temperature=0)) == text(plain(prompt, max_tokens=40, temperature=0))
    s = drafted._spec.stats
    assert s["steps"] > 0 and s["drafted"] > 0 and 0 <= s["accepted"] <= s["drafted"]


def test_max_tokens_stop_strings_and_streaming(pair):
    plain, drafted = pair
    out = drafted(PROMPT, max_tokens=7, temperature=0)
    assert out["usage"]["completion_tokens"] == 7 and out["choices"][0]["finish_reason"] == "length"
    full = text(plain(PROMPT, max_tokens=30, temperature=0))
    stop = full[5:8]
    if stop.strip():
        cut = drafted(PROMPT, max_tokens=30, temperature=0, stop=[stop])
        assert text(cut) == full[: full.index(stop)] and cut["choices"][0]["finish_reason"] == "stop"
    chunks = list(drafted(PROMPT, max_tokens=12, temperature=0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == text(drafted(PROMPT, max_tokens=12, temperature=0))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_seeded_sampling_repeats(pair):
    _, drafted = pair
    kw = dict(max_tokens=20, temperature=1.0, seed=11)
    assert text(drafted(PROMPT, **kw)) == text(drafted(PROMPT, **kw))


def test_requests_it_cannot_serve_use_the_engine(pair):
    _, drafted = pair
    before = drafted._spec.stats["steps"]
    out = drafted(PROMPT, max_tokens=5, temperature=0, logprobs=2)
    assert len(out["choices"][0]["logprobs"]["tokens"]) == 5 and drafted._spec.stats["steps"] == before
    paused = drafted(PROMPT, max_tokens=20, temperature=0, stream=True)
    next(paused)  # holds the speculative context ...
    assert text(drafted("the cat", max_tokens=4, temperature=0))  # ... so this one runs on the engine
    assert list(paused)


def test_prompt_lookup_draft_model():
    draft = LlamaPromptLookupDecoding(max_ngram_size=2, num_pred_tokens=3)
    assert draft(np.array([7, 8, 9, 10, 11, 7, 8])).tolist() == [9, 10, 11]
    with pytest.raises(ValueError):
        LlamaPromptLookupDecoding(num_pred_tokens=0)
