"""The C++ sampler chain (src/_core/sampler.cpp) on a real model's vocabulary.

Its top-k fast path hands llama.cpp's chain only the k best candidates, found
in one pass over the logits, instead of all n_vocab; these tests hold it to
the choices of the full chain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarai_llama import _core


@pytest.fixture()
def model(tiny_model_path: Path) -> _core.Model:
    return _core.Model(str(tiny_model_path))


def chain(model: _core.Model, seed: int, *, top_k: int, full: bool) -> _core.Sampler:
    s = _core.SamplerParams()  # the server's defaults: top-p 0.95, min-p 0.05, temperature 0.8
    s.seed = seed
    s.top_k = top_k
    if full:
        # A zero bias changes no logit but puts a sampler before top-k, which
        # turns the fast path off: llama.cpp's chain sees all n_vocab candidates.
        s.logit_bias = [(0, 0.0)]
    return _core.Sampler(model, s)


@pytest.mark.parametrize("top_k", [1, 2, 40, 200])
def test_top_k_fast_path_draws_what_the_full_chain_draws(model: _core.Model, top_k: int):
    assert model.n_vocab > top_k + 16  # the scan's blocks of 16 and its tail both run
    fast, full = chain(model, 7, top_k=top_k, full=False), chain(model, 7, top_k=top_k, full=True)
    rng = np.random.default_rng(top_k)
    for _ in range(300):
        # Peaked and flat rows, so that top-p/min-p cut some of the k, or none.
        scale = rng.choice([0.5, 3.0, 20.0])
        logits = (rng.standard_normal(model.n_vocab) * scale).astype(np.float32)
        a = fast.sample(logits)  # sample() also accepts the token into its chain
        b = full.sample(logits)
        assert a == b


def test_top_k_ties_go_to_the_lower_token_id(model: _core.Model):
    logits = np.zeros(model.n_vocab, dtype=np.float32)
    logits[[5, 9, model.n_vocab - 1]] = 2.0  # three equal best logits
    for seed in range(20):
        tok = chain(model, seed, top_k=1, full=False).sample(logits)
        assert tok == 5
