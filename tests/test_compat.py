"""llama-cpp-python compatibility on the real core: seeds, text_offset, the eval -> sample loop,
prompt caches, tokenizer, helpers, and the ``llama_cpp`` alias (sarai_llama.compat).

Seed numbers and tokenization facts were compared with llama-cpp-python 0.3.36 on the same files.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

import sarai_llama.compat
from sarai_llama import Llama, LlamaDiskCache, LlamaRAMCache, MinTokensLogitsProcessor
from sarai_llama.sampling import next_call_seed
from sarai_llama.llama_speculative import LlamaPromptLookupDecoding  # llama-cpp-python's module name

ROOT = Path(__file__).resolve().parent.parent
SPM_VOCAB = ROOT / "vendor" / "llama.cpp" / "models" / "ggml-vocab-llama-spm.gguf"


def new_tiny(path: Path, **kw) -> Llama:
    return Llama(str(path), n_ctx=128, n_batch=32, n_threads=1, verbose=False, **kw)


def text(out) -> str:
    return out["choices"][0]["text"]


# ------------------------------------------------------------------ seeds
def test_each_call_draws_its_seed_from_the_previous_one(tiny_model_path):
    m = new_tiny(tiny_model_path, seed=1337)
    kw = dict(max_tokens=12, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a, b = text(m("the", **kw)), text(m("the", **kw))
    assert a != b  # llama-cpp-python: successive calls differ ...
    assert m.seed == next_call_seed(next_call_seed(1337)) == 3477306578  # ... by its chain (same number there)
    m.set_seed(1337)
    assert [text(m("the", **kw)), text(m("the", **kw))] == [a, b]  # ... and a run repeats


def test_save_and_load_state_carry_the_seed(tiny_model_path):
    m = new_tiny(tiny_model_path, seed=5)
    kw = dict(max_tokens=10, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    state = m.save_state()
    assert state.seed == 5 and state.n_tokens == len(state.input_ids)
    first = text(m("the", **kw))
    text(m("the", **kw))
    m.load_state(state)
    assert text(m("the", **kw)) == first


def test_an_explicit_seed_becomes_the_objects_seed(tiny_model_path):
    m = new_tiny(tiny_model_path)
    m("the", max_tokens=2, seed=42)
    assert m.seed == 42


# ------------------------------------------------------------------ text_offset, echo
def test_text_offset_counts_from_the_prompt_start(tiny_model_path):
    m = new_tiny(tiny_model_path)
    prompt = "the quick brown fox"
    lp = m(prompt, max_tokens=4, logprobs=1, temperature=0)["choices"][0]["logprobs"]
    assert lp["text_offset"][0] == len(prompt)
    # later ones advance by the text released before each token (random-weight tokens may be partial UTF-8)
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][-1] <= len(prompt) + 4 * 16


def test_echo_returns_the_prompt_as_given(tiny_model_path):
    m = new_tiny(tiny_model_path)
    out = m(" leading space", max_tokens=3, echo=True, temperature=0)
    assert text(out).startswith(" leading space")


@pytest.mark.skipif(not SPM_VOCAB.exists(), reason="vendor/llama.cpp is not filled (make vendor)")
def test_spm_detokenize_after_bos_as_llama_cpp_python():
    m = Llama(str(SPM_VOCAB), vocab_only=True, verbose=False)
    tokens = m.tokenize(b"Hello World")
    assert tokens == [1, 15043, 2787] and m.detokenize(tokens) == b"Hello World"
    assert m.detokenize(m.tokenize(b"Hello World", add_bos=False)) != b"Hello World"  # the SentencePiece space
    assert m.tokenize(b"Hello World</s>", special=True) == [1, 15043, 2787, 2]
    assert m.detokenize(m.tokenize(b"", add_bos=True, special=True)) == b""


# ------------------------------------------------------------------ eval -> sample
def test_eval_then_sample_matches_generate(tiny_model_path):
    m = new_tiny(tiny_model_path)
    tokens = m.tokenize(b"the quick brown fox")
    expected = list(itertools.islice(m.generate(tokens, temp=0.0), 3))
    m.reset()
    m.eval(tokens)
    assert m.n_tokens == len(tokens) and list(m.eval_tokens) == tokens
    assert m.scores.shape == (1, m.n_vocab())
    assert m.sample(temp=0.0, idx=len(tokens) - 1) == expected[0]
    assert 0 <= m.sample(temp=0.8) < m.n_vocab()  # llama.cpp's chain, through the engine
    assert m.n_tokens == len(tokens)  # sampling evaluates nothing new
    with pytest.raises(ValueError, match="idx"):
        m.sample(temp=0.0, idx=0)
    m.eval([expected[0]])
    assert m.sample(temp=0.0) == expected[1]


def test_sample_before_eval_is_an_error(tiny_model_path):
    m = new_tiny(tiny_model_path)
    with pytest.raises(ValueError, match="eval"):
        m.sample()


# ------------------------------------------------------------------ caches
@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_a_cached_prompt_state_is_loaded_by_another_llama(tiny_model_path, tmp_path, kind):
    cache = LlamaRAMCache() if kind == "ram" else LlamaDiskCache(tmp_path / "cache")
    prompt = "the quick brown fox jumps over"
    writer = new_tiny(tiny_model_path)
    writer.set_cache(cache)
    expected = text(writer(prompt, max_tokens=4, temperature=0))
    assert cache.cache_size > 0 and writer.tokenize(prompt.encode()) in cache
    reader = new_tiny(tiny_model_path)
    reader.set_cache(LlamaDiskCache(tmp_path / "cache") if kind == "disk" else cache)  # disk: as a new process would
    loads = []
    original = reader.load_state
    reader.load_state = lambda state: (loads.append(state), original(state))[1]  # type: ignore[method-assign]
    assert text(reader(prompt, max_tokens=4, temperature=0)) == expected
    assert len(loads) == 1 and reader.n_tokens >= len(reader.tokenize(prompt.encode()))


# ------------------------------------------------------------------ helpers
def test_helpers(tiny_model_path):
    m = new_tiny(tiny_model_path)
    assert Llama.longest_token_prefix([1, 2, 3], [1, 2, 4]) == 2
    logits = np.array([[1.0, 2.0, 3.0], [0.0, -np.inf, 0.0]], dtype=np.float32)
    lp = Llama.logits_to_logprobs(logits)
    np.testing.assert_allclose(np.exp(lp).sum(axis=-1), 1.0, rtol=1e-6)
    assert lp[1, 1] == -np.inf and np.isfinite(lp[1, 0])
    tok = m.tokenizer()
    assert tok.decode(tok.encode("the fox")) == "the fox"  # the space after BOS dropped, as there
    assert isinstance(m.pooling_type(), int)
    proc = MinTokensLogitsProcessor(2, m.token_eos())
    scores = np.zeros(m.n_vocab(), dtype=np.float32)
    assert proc(np.array([1, 2]), scores.copy())[m.token_eos()] == -np.inf
    assert proc(np.array([1, 2, 3, 4]), scores.copy())[m.token_eos()] == 0.0


def test_prompt_lookup_candidates():
    find = LlamaPromptLookupDecoding.find_candidate_pred_tokens
    assert find(np.array([1, 2, 3, 1, 2, 3, 1, 2, 3]), 3, 2).tolist() == [1, 2]
    assert find(np.array([1, 2, 9, 1, 2]), 2, 5).tolist() == [9, 1, 2]
    assert find(np.array([1, 2, 3, 4, 5]), 3, 2).tolist() == []
    assert LlamaPromptLookupDecoding(num_pred_tokens=1)(np.array([4, 5, 4])).tolist() == [5]


# ------------------------------------------------------------------ the alias
@pytest.fixture
def clean_alias():
    saved = {k: v for k, v in sys.modules.items() if k == "llama_cpp" or k.startswith("llama_cpp.")}
    for k in saved:
        del sys.modules[k]
    yield
    sarai_llama.compat.uninstall()
    sys.modules.update(saved)


def test_install_registers_llama_cpp(clean_alias, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "llama_cpp").exists()])
    names = sarai_llama.compat.install()
    assert "llama_cpp.llama_types" in names and sarai_llama.compat.installed()
    import llama_cpp
    from llama_cpp import ChatCompletionRequestUserMessage
    from llama_cpp import Llama as Aliased
    from llama_cpp import LlamaRAMCache as Cache
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding as Lookup

    assert Aliased is Llama and Cache is LlamaRAMCache and Lookup is LlamaPromptLookupDecoding
    assert ChatCompletionRequestUserMessage(role="user", content="hi") == {"role": "user", "content": "hi"}
    assert llama_cpp.__version__ and sarai_llama.compat.install() == names  # idempotent
    with pytest.raises(ModuleNotFoundError):
        import llama_cpp.llama_cpp


def test_install_refuses_to_shadow_a_real_llama_cpp(clean_alias, monkeypatch, tmp_path):
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="does not shadow"):
        sarai_llama.compat.install()
    assert "llama_cpp" not in sys.modules


# ------------------------------------------------------------------ openai types, from_pretrained
def test_chat_completion_openai_v1_types(tiny_model_path):
    pytest.importorskip("openai")
    m = new_tiny(tiny_model_path, chat_format="chatml")
    msgs = [{"role": "user", "content": "hi"}]
    out = m.create_chat_completion_openai_v1(messages=msgs, max_tokens=3, temperature=0)
    assert type(out).__name__ == "ChatCompletion" and out.choices[0].message.role == "assistant"
    chunks = list(m.create_chat_completion_openai_v1(messages=msgs, max_tokens=3, temperature=0, stream=True))
    assert all(type(c).__name__ == "ChatCompletionChunk" for c in chunks) and chunks[0].choices[0].delta.role


def test_from_pretrained_offline_is_a_clear_error(tmp_path):
    pytest.importorskip("huggingface_hub")
    import os
    import subprocess

    code = ("from sarai_llama import Llama, ModelLoadError\n"
            "try:\n    Llama.from_pretrained('sarai-test/no-such-repo', '*.gguf')\n"
            "except ModelLoadError as e:\n    print('ModelLoadError', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ModelLoadError") and "no-such-repo" in out.stdout, out.stderr
