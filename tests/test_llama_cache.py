"""``Llama``'s prompt caches as views on the engine's state cache: the same greedy output
with and without them (completions, chat, batches; F32 random models, several seeds), and
a disk cache that a new ``Llama`` on the same file reads back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sarai_llama import Llama, LlamaDiskCache, LlamaRAMCache, LlamaState

from conftest import write_tiny_llama

LETTERS = "bcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module", params=[11, 12, 13])
def model_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_llama(tmp_path_factory.mktemp("lc") / f"llama-{request.param}.gguf", n_ctx_train=1024,
                            seed=request.param)


@pytest.fixture(scope="module")
def gemma3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_llama(tmp_path_factory.mktemp("lc") / "gemma3.gguf", n_ctx_train=1024, seed=14,
                            sliding_window=16)


def new_llama(path: Path, n_seq_max: int = 1) -> Llama:
    # Flash attention off: llama.cpp's CPU flash attention computes in F16, so the logits of
    # a prompt evaluated in other chunks (a prefix restored, then the rest) differ by up to
    # ~2e-3 even on an F32 model, enough to flip a random model's near-ties, with or without
    # a cache; without it they differ by ~1e-6. No step budget: its chunking follows timings.
    return Llama(str(path), n_ctx=1024, n_batch=64, n_threads=2, n_seq_max=n_seq_max, flash_attn=False,
                 step_budget_ms=0, verbose=False)


def words(seed: int, n: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(list(LETTERS), n))


def count_loads(llm: Llama) -> list[LlamaState]:
    loads: list[LlamaState] = []
    original = llm.load_state
    llm.load_state = lambda state: (loads.append(state), original(state))[1]  # type: ignore[method-assign]
    return loads


def completions(llm: Llama, conversations: int = 3, turns: int = 3, system: int = 30) -> list[str]:
    """Conversations taking turns on one sequence: each later turn finds it taken by another."""
    history = {c: f"the {words(0, system)} {c}" for c in range(conversations)}
    replies = []
    for t in range(turns):
        for c in range(conversations):
            prompt = f"{history[c]} {words(100 * c + t, 8)}"
            reply = llm(prompt, max_tokens=6, temperature=0)["choices"][0]["text"]
            history[c] = prompt + reply
            replies.append(reply)
    return replies


def chats(llm: Llama, conversations: int = 3, turns: int = 3) -> list[str]:
    messages: dict[int, list[dict[str, Any]]] = {
        c: [{"role": "system", "content": f"the {words(1, 30)}"}] for c in range(conversations)}
    replies = []
    for t in range(turns):
        for c in range(conversations):
            messages[c].append({"role": "user", "content": words(200 * c + t, 8)})
            out = llm.create_chat_completion(messages[c], max_tokens=6, temperature=0)
            reply = out["choices"][0]["message"]["content"]
            messages[c].append({"role": "assistant", "content": reply})
            replies.append(reply)
    return replies


@pytest.mark.parametrize("talk", [completions, chats], ids=["completion", "chat"])
def test_greedy_output_is_the_same_with_the_cache(model_path, talk):
    expected = talk(new_llama(model_path))
    llm = new_llama(model_path)
    llm.set_cache(LlamaRAMCache())
    loads = count_loads(llm)
    assert talk(llm) == expected
    # Every later turn (2 turns x 3 conversations) found its sequence taken and loaded its state.
    assert len(loads) == 6
    assert all(state.seed is None for state in loads)  # a cache keeps no seed: the seed chain is untouched


def test_the_engine_restores_taken_sequences_of_a_batch(model_path):
    # create_completions runs on the engine alone: 4 conversations on 2 sequences stash
    # and restore through the store the cache views, with no load_state in between.
    def batches(llm: Llama) -> list[str]:
        history = [f"the {words(2, 40)} {c}" for c in range(4)]
        replies = []
        for t in range(3):
            prompts = [f"{h} {words(300 * c + t, 8)}" for c, h in enumerate(history)]
            outs = [o["choices"][0]["text"] for o in llm.create_completions(prompts, max_tokens=6, temperature=0)]
            history = [p + o for p, o in zip(prompts, outs)]
            replies += outs
        return replies

    expected = batches(new_llama(model_path, n_seq_max=2))
    llm = new_llama(model_path, n_seq_max=2)
    llm.set_cache(LlamaRAMCache())
    assert batches(llm) == expected
    stats = llm.engine.stats()
    assert stats["state_cache_hits"] >= 4 and stats["state_cache_restored_tokens"] >= 4 * 40


def test_sliding_window_states_load_past_their_window(gemma3_path):
    # Histories of ~350 tokens on a 16-token window (the window layers' cache of 256 cells
    # wraps around): the states the cache keeps have lost their oldest cells and still
    # continue exactly.
    expected = completions(new_llama(gemma3_path), system=300)
    llm = new_llama(gemma3_path)
    llm.set_cache(LlamaRAMCache())
    loads = count_loads(llm)
    assert completions(llm, system=300) == expected
    assert len(loads) == 6 and all(state.min_prefix > 1 for state in loads)


def test_disk_cache_survives_a_new_llama(model_path, tmp_path):
    folder = tmp_path / "states"
    writer = new_llama(model_path)
    writer.set_cache(LlamaDiskCache(folder))
    prompt = f"the {words(3, 40)}"
    expected = writer(prompt, max_tokens=8, temperature=0)["choices"][0]["text"]
    writer.close()
    assert len(list(folder.iterdir())) == 1
    reader = new_llama(model_path)
    cache = LlamaDiskCache(folder)
    reader.set_cache(cache)
    assert reader.tokenize(prompt.encode()) in cache and cache.cache_size > 0
    loads = count_loads(reader)
    assert reader(prompt, max_tokens=8, temperature=0)["choices"][0]["text"] == expected
    # The state holds the prompt and the reply but its last token (sampled, never evaluated).
    assert len(loads) == 1 and loads[0].n_tokens == len(reader.tokenize(prompt.encode())) + 8 - 1


def test_a_cache_belongs_to_one_model(model_path, gemma3_path, tmp_path, caplog):
    cache = LlamaDiskCache(tmp_path / "states")
    llm = new_llama(model_path)
    llm.set_cache(cache)
    llm(f"the {words(4, 30)}", max_tokens=2, temperature=0)
    with pytest.raises(ValueError, match="holds states of"):
        new_llama(gemma3_path).set_cache(cache)
    # A new cache on the folder, bound to the other model, ignores the file, saying so.
    other = LlamaDiskCache(tmp_path / "states")
    new_llama(gemma3_path).set_cache(other)
    assert other.cache_size == 0 and other.store.stats()["disk_rejected"] == 1
    assert any("another model" in r.getMessage() for r in caplog.records)
    llm.set_cache(None)
    assert llm.engine.state_cache is None


def test_ram_cache_views_the_store(tiny_model_path):
    m = Llama(str(tiny_model_path), n_ctx=128, n_threads=2, verbose=False)
    states = {}
    for text in ("a b c d", "e f g h", "i j k l"):
        m.reset()
        m.eval(m.tokenize(text.encode()))
        states[text] = m.save_state()
    size = states["a b c d"].llama_state_size
    cache = LlamaRAMCache(capacity_bytes=size * 2 + size // 2)
    cache[states["a b c d"].input_ids] = states["a b c d"]
    cache[states["e f g h"].input_ids + (7,)] = states["e f g h"]  # llama-cpp-python's key: prompt + completion
    assert cache.cache_size == 2 * size and cache.capacity_bytes == size * 2 + size // 2
    got = cache[list(states["a b c d"].input_ids) + [9]]  # uses "a b c d": "e f g h" is now the oldest
    assert got.input_ids == states["a b c d"].input_ids and got.llama_state == states["a b c d"].llama_state
    cache[states["i j k l"].input_ids] = states["i j k l"]
    # Every state starts with BOS, so every key is "in" the cache (llama-cpp-python's rule:
    # one shared token); the longest prefix tells which states are left.
    assert cache._find_longest_prefix_key(states["e f g h"].input_ids) != states["e f g h"].input_ids
    assert cache._find_longest_prefix_key(states["a b c d"].input_ids) == states["a b c d"].input_ids
    assert cache.cache_size == 2 * size
    with pytest.raises(KeyError):
        cache[[m.token_eos()]]
    with pytest.raises(ValueError, match="tokens it holds"):
        cache[states["a b c d"].input_ids] = states["e f g h"]
    with pytest.raises(ValueError):
        LlamaRAMCache(capacity_bytes=-1)
    cache.capacity_bytes = 0
    assert cache.cache_size == 0
