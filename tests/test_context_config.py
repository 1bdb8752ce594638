"""Context configuration checked in one place (sarai_llama.context_config): pure, no model,
plus the two Llama-level crashes it exists to prevent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sarai_llama.context_config import MAX_THREADS, ContextConfig, kv_type


def test_defaults_and_clamps():
    c = ContextConfig(n_batch=16, n_threads=1)
    assert c.n_ubatch == 16 and c.n_threads_batch == 1  # the default ubatch never exceeds the batch
    assert ContextConfig(n_batch=2048).n_ubatch == 512
    assert ContextConfig(n_batch=64, n_ubatch=8, embeddings=True).n_ubatch == 64  # pooled input fits one ubatch
    core = ContextConfig(n_ctx=256, type_k=kv_type("q8_0")).to_core()
    assert (core.n_ctx, core.type_k) == (256, 8)


@pytest.mark.parametrize("kw, name", [
    ({"n_threads": MAX_THREADS + 1}, "n_threads"), ({"n_threads": 0}, "n_threads"),
    ({"n_threads_batch": 100000}, "n_threads_batch"), ({"n_batch": 0}, "n_batch"), ({"n_ctx": -1}, "n_ctx"),
    ({"n_threads": 2.0}, "n_threads"), ({"flash_attn": 7}, "flash_attn"), ({"pooling": 99}, "pooling"),
    ({"type_k": 12345}, "KV cache type"), ({"n_seq_max": 0}, "n_seq_max"),
    ({"n_batch": 16, "n_ubatch": 512}, "n_ubatch"), ({"n_ubatch": -3}, "n_ubatch"),
])
def test_bad_values_name_themselves(kw, name):
    with pytest.raises(ValueError, match=name):
        ContextConfig(**kw)


def test_kv_type_names():
    assert kv_type(None) == 1 and kv_type(None, f16_kv=False) == 0 and kv_type("BF16") == 30
    with pytest.raises(ValueError, match="q3"):
        kv_type("q3")


def test_huge_thread_count_is_an_error_not_a_crash(tiny_model_path):
    """Llama(n_threads=100000) then a completion used to SIGSEGV (issue 15)."""
    code = ("import sys, sarai_llama as s\n"
            "try:\n    s.Llama(sys.argv[1], n_threads=100000, verbose=False)\n"
            "except ValueError as e:\n    print('ValueError', e)\n")
    run = subprocess.run([sys.executable, "-c", code, str(tiny_model_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1000:]
    assert run.stdout.startswith("ValueError") and "n_threads" in run.stdout


def test_more_threads_than_cpus_warns():
    """Legal for ggml, but slower: said, not silently accepted (issue 15)."""
    with pytest.warns(RuntimeWarning, match="threads but this process may run on"):
        ContextConfig(n_threads=MAX_THREADS)
