"""Random-weight llama GGUF files written with the ``gguf`` package (tests, device benchmarks).

    python tools/random_gguf.py OUT.gguf [--n-embd 1024 --n-layer 16 --n-ff 4096 --quant Q4_0]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


#: llama.cpp's FIM token kinds (``tokenizer.ggml.fim_<kind>_token_id``) -> Qwen2.5-Coder's texts.
FIM_TOKENS = {"pre": "<|fim_prefix|>", "suf": "<|fim_suffix|>", "mid": "<|fim_middle|>", "pad": "<|fim_pad|>",
              "rep": "<|repo_name|>", "sep": "<|file_sep|>"}


def add_vocab(writer: Any, special_tokens: Sequence[str] = (), *, add_space_prefix: bool = True,
              byte_only: bool = False, n_vocab_words: int | None = None, duplicate_token: bool = False,
              add_eos: bool = False) -> list[bytes]:
    """A byte-fallback SentencePiece vocabulary (``<unk>``, ``<s>``, ``</s>``, 256 byte
    tokens, a few words, then ``special_tokens`` as control tokens) into ``writer``; its tokens."""
    import gguf

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
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(words))] + [0.0] * len(special_tokens)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(add_eos)
    writer.add_add_space_prefix(add_space_prefix)
    return tokens


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
    fim: bool = False,
    fim_repo: bool = False,
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
    that many positions, then one global layer, each with its extra norms). ``fim`` adds
    Qwen's fill-in-the-middle control tokens (``<|fim_prefix|>``, ``<|fim_suffix|>``,
    ``<|fim_middle|>``) with the ``tokenizer.ggml.fim_*_token_id`` keys; ``fim_repo`` also
    ``<|fim_pad|>``, ``<|repo_name|>`` and ``<|file_sep|>`` (the repository-level pattern).
    """
    import gguf
    import gguf.quants

    rng = np.random.default_rng(seed)
    fim_names = FIM_TOKENS if fim_repo else dict(list(FIM_TOKENS.items())[:3]) if fim else {}
    special_tokens = (*special_tokens, *fim_names.values())
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
    tokens = add_vocab(writer, special_tokens, add_space_prefix=add_space_prefix, byte_only=byte_only,
                       n_vocab_words=n_vocab_words, duplicate_token=duplicate_token)
    n_vocab = len(tokens)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for key, text in fim_names.items():
        writer.add_uint32(f"tokenizer.ggml.fim_{key}_token_id", tokens.index(text.encode()))

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
    norms: list[tuple[str, int]] = []
    if sliding_window:
        norms = [("post_attention_norm", n_embd), ("post_ffw_norm", n_embd), ("attn_q_norm", n_embd // n_head),
                 ("attn_k_norm", n_embd // n_head)]
    return _finish(writer, path, t, n_layer, n_embd, n_ff, norms)


def _finish(writer: Any, path: Path, t: Any, n_layer: int, n_embd: int, n_ff: int,
            norms: Sequence[tuple[str, int]] = ()) -> Path:
    """The layers of a llama-shaped decoder (``t(name, *shape)`` writes a matrix; ``norms``:
    each layer's extra norms, (name, size)), then the file."""
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for m in ("q", "k", "v", "output"):
            t(f"blk.{i}.attn_{m}.weight", n_embd, n_embd)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for norm, n in norms:
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(n, dtype=np.float32))
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


#: Qwen3-Reranker's rerank prompt (what llama.cpp's converter stores as ``tokenizer.chat_template.rerank``).
QWEN3_RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n<Instruct>: Given "
    "a web search query, retrieve relevant passages that answer the query\n<Query>: {query}\n<Document>: "
    "{document}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


def write_tiny_reranker(path: Path, *, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_ff: int = 128,
                        n_ctx_train: int = 512, seed: int = 0, rerank_template: str | None = QWEN3_RERANK_TEMPLATE,
                        classifier: bool = True, add_eos: bool = False) -> Path:
    """Write a random-weight Qwen3 reranker GGUF, as llama.cpp's converter writes Qwen3-Reranker.

    ``{arch}.pooling_type`` rank, a ``cls.output`` head of two rows with the labels
    "yes" and "no" (llama.cpp's rank pooling takes the last token's hidden state
    through it and a softmax: the score is P(yes)), ``rerank_template`` as
    ``tokenizer.chat_template.rerank`` (None: none, so query and document are joined
    with BOS/EOS/SEP as llama-server does; ``add_eos`` sets the vocabulary's flag).
    ``classifier`` False leaves the head and the rank pooling out (a plain Qwen3).
    """
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_name("sarai-tiny-random-qwen3-reranker")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if classifier:
        writer.add_pooling_type(gguf.PoolingType.RANK)
        writer.add_classifier_output_labels(["yes", "no"])
    tokens = add_vocab(writer, ("<|im_start|>", "<|im_end|>"), add_space_prefix=False, add_eos=add_eos)
    if rerank_template is not None:
        writer.add_chat_template([{"name": "rerank", "template": rerank_template}])

    def t(name: str, *shape: int) -> None:
        writer.add_tensor(name, rng.standard_normal(shape, dtype=np.float32) * 0.2)

    t("token_embd.weight", len(tokens), n_embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    if classifier:
        t("cls.output.weight", 2, n_embd)
    head_dim = n_embd // n_head
    return _finish(writer, path, t, n_layer, n_embd, n_ff, [("attn_q_norm", head_dim), ("attn_k_norm", head_dim)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n-embd", type=int, default=1024)
    ap.add_argument("--n-layer", type=int, default=16)
    ap.add_argument("--n-head", type=int, default=16)
    ap.add_argument("--n-ff", type=int, default=4096)
    ap.add_argument("--n-vocab-words", type=int, default=32000)
    ap.add_argument("--quant", default=None, help="Q4_0 (default), Q8_0 or F16; with --shape: Q4_K_M (default) or Q8_0")
    ap.add_argument("--shape", help="a real model's shapes and tensor-type mix instead (tools/shaped_gguf.py): "
                                    "solar-10.7b, llama-3.2-3b, tiny")
    ap.add_argument("--mmproj", type=Path, help="also write a random gemma3 projector for the model here "
                                                "(tools/random_mmproj.py): the pair llama.cpp's mtmd loads")
    ap.add_argument("--mmproj-size", choices=["tiny", "siglip-400m"], default="tiny",
                    help="the projector's vision tower: tiny (16 tokens per image) or SigLIP-400M's shapes (256)")
    args = ap.parse_args()
    if args.shape:
        from shaped_gguf import SHAPES, write_shaped

        if args.shape not in SHAPES:
            ap.error(f"--shape: one of {', '.join(SHAPES)}")
        write_shaped(args.out, SHAPES[args.shape], (args.quant or "Q4_K_M").upper())
        print(args.out, args.out.stat().st_size)
        return
    args.quant = args.quant or "Q4_0"
    quant = None if args.quant.upper() in ("F16", "F32") else args.quant.upper()
    write_tiny_llama(args.out, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, n_ff=args.n_ff,
                     n_ctx_train=4096, f16=args.quant.upper() == "F16", quant=quant,
                     n_vocab_words=args.n_vocab_words)
    print(args.out, args.out.stat().st_size)
    if args.mmproj:
        from random_mmproj import SIGLIP_400M, write_tiny_mmproj

        size = SIGLIP_400M if args.mmproj_size == "siglip-400m" else {}
        write_tiny_mmproj(args.mmproj, text_n_embd=args.n_embd, f16=bool(size), **size)
        print(args.mmproj, args.mmproj.stat().st_size)


if __name__ == "__main__":
    main()
