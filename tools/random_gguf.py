"""Random-weight llama GGUF files written with the ``gguf`` package (tests, device benchmarks).

    python tools/random_gguf.py OUT.gguf [--n-embd 1024 --n-layer 16 --n-ff 4096 --quant Q4_0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


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
    rms_eps: float = 1e-5,
    f16: bool = False,
    quant: str | None = None,
    n_vocab_words: int | None = None,
    seed: int = 0,
    chat_template: str | None = None,
    special_tokens: tuple[str, ...] = (),
    add_space_prefix: bool = True,
    byte_only: bool = False,
    sliding_window: int | None = None,
) -> Path:
    """Write a random-weight llama GGUF with a byte-fallback SentencePiece vocabulary.

    ``block_count`` overrides the recorded layer count, ``duplicate_token``
    repeats a vocabulary entry and ``rms_eps`` sets the norm epsilon (to produce
    hostile files). ``f16`` stores the
    matrices in F16; ``quant`` ("Q4_0", "Q8_0") quantizes them with gguf's own
    quantizer; ``n_vocab_words`` pads the vocabulary to a realistic size.
    ``chat_template`` is stored as ``tokenizer.chat_template``, and
    ``special_tokens`` (e.g. ``"<|im_start|>"``) are added as control tokens.
    ``add_space_prefix`` False stops SentencePiece from putting a space before
    text that follows a special token, as the BPE vocabularies of the families
    whose templates tests use do not either. ``byte_only`` leaves the vocabulary at
    ``<unk>``, ``<s>``, ``</s>`` and the 256 byte tokens (plus ``special_tokens``):
    every piece of text is spelled in bytes. ``sliding_window`` writes a Gemma 3
    model instead (llama.cpp's ``gemma3`` architecture: five sliding-window layers of
    that many positions, then one global layer, each with its extra norms).
    """
    import gguf
    import gguf.quants

    rng = np.random.default_rng(seed)
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode())
        types.append(gguf.TokenType.BYTE)
    words = ["\u2581", "\u2581the", "\u2581a", "\u2581is", "\u2581of", "\u2581and", "\u2581to", "\u2581in"]
    words += [f"\u2581{c}" for c in "bcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz.,!?")
    if byte_only:
        words = []
    if n_vocab_words:
        words += [f"\u2581w{i}" for i in range(n_vocab_words)]
    if duplicate_token:
        words.append(words[-1])  # a hostile vocabulary: llama.cpp asserts on duplicates
    for w in words:
        tokens.append(w.encode())
        types.append(gguf.TokenType.NORMAL)
    for special in special_tokens:
        tokens.append(special.encode())
        types.append(gguf.TokenType.CONTROL)
    n_vocab = len(tokens)
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(words))] + [0.0] * len(special_tokens)

    arch = "gemma3" if sliding_window else "llama"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"sarai-tiny-random-{arch}")
    if sliding_window:
        writer.add_sliding_window(sliding_window)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer if block_count is None else block_count)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(rms_eps)
    qtype = getattr(gguf.GGMLQuantizationType, quant) if quant else None
    if qtype is not None:
        writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{quant}"))
    else:
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
    writer.add_add_space_prefix(add_space_prefix)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def t(name: str, *shape: int, scale: float = 0.2) -> None:
        # Matrices in F16 or quantized when asked; norms stay F32 as in real files.
        data = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
        if qtype is not None:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data.astype(np.float16) if f16 else data)

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
        if sliding_window:
            for norm, n in (("post_attention_norm", n_embd), ("post_ffw_norm", n_embd),
                            ("attn_q_norm", n_embd // n_head), ("attn_k_norm", n_embd // n_head)):
                writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(n, dtype=np.float32))
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n-embd", type=int, default=1024)
    ap.add_argument("--n-layer", type=int, default=16)
    ap.add_argument("--n-head", type=int, default=16)
    ap.add_argument("--n-ff", type=int, default=4096)
    ap.add_argument("--n-vocab-words", type=int, default=32000)
    ap.add_argument("--quant", default="Q4_0", help="Q4_0, Q8_0, or F16")
    args = ap.parse_args()
    quant = None if args.quant.upper() in ("F16", "F32") else args.quant.upper()
    write_tiny_llama(args.out, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, n_ff=args.n_ff,
                     n_ctx_train=4096, f16=args.quant.upper() == "F16", quant=quant,
                     n_vocab_words=args.n_vocab_words)
    print(args.out, args.out.stat().st_size)


if __name__ == "__main__":
    main()
