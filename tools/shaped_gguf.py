"""Random-weight GGUFs with real models' shapes and real quantization mixes, streamed to disk.

    python tools/random_gguf.py OUT.gguf --shape solar-10.7b --quant Q4_K_M
    python tools/random_gguf.py OUT.gguf --shape llama-3.2-3b --quant Q4_K_M

What a benchmark needs of a model is its shapes and its tensor types: the kernels, the
bytes read per token and the work per prompt token follow from those, not from the
values. So the quantized blocks are written directly, random bytes with their fp16
scales set to small finite values (every block decodes to finite weights of a few
hundredths), block by block in chunks of ``CHUNK_BYTES``: a 10.7B model is written
with about ``CHUNK_BYTES`` of memory and no F16 intermediate, in the time the disk
takes (6.5 GB: about a minute here).

The type of each tensor follows llama.cpp's quantizer for the llama architecture
(vendor/llama.cpp/src/llama-quant.cpp, ``llama_tensor_get_type_impl``) for Q4_K_M:
Q4_K by default; the output matrix (or the token embedding when it is tied to the
output, as in Llama 3.2) Q6_K; ``attn_v`` and ``ffn_down`` Q6_K in the layers
``use_more_bits`` picks (the first and last eighth, and every third in between), so
the file's size matches the published Q4_K_M files of these models. Q8_0 is Q8_0
everywhere (the quantizer's output rule keeps Q8_0).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bytes of blocks generated and written at a time (the writer's memory, about twice this).
CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class Shape:
    """A llama-architecture decoder's hyperparameters (what llama.cpp's loader reads)."""

    name: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    tied: bool  # no output.weight: the token embedding is the output matrix too
    n_ctx_train: int = 4096
    rope_freq_base: float = 10000.0


SHAPES = {
    # upstage/SOLAR-10.7B-v1.0's config.json: a Mistral-7B-style llama, depth up-scaled to 48 layers.
    "solar-10.7b": Shape("solar-10.7b", n_layer=48, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8,
                         n_vocab=32000, tied=False),
    # meta-llama/Llama-3.2-3B's config.json (tie_word_embeddings: true, rope_theta 500000).
    "llama-3.2-3b": Shape("llama-3.2-3b", n_layer=28, n_embd=3072, n_ff=8192, n_head=24, n_head_kv=8,
                          n_vocab=128256, tied=True, n_ctx_train=131072, rope_freq_base=500000.0),
    # For tests: K-quant rows need multiples of 256; 8 layers give use_more_bits a mix.
    "tiny": Shape("tiny", n_layer=8, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, n_vocab=600, tied=False,
                  n_ctx_train=512),
}

QUANTS = ("Q4_K_M", "Q8_0")


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama-quant.cpp's rule for the layers whose attn_v / ffn_down get more bits."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def tensor_type(role: str, i_layer: int, shape: Shape, quant: str) -> str:
    """The ggml type name llama.cpp's quantizer gives tensor ``role`` (token_embd, output,
    attn_q/k/v/output, ffn_gate/up/down) of layer ``i_layer`` under ``quant``."""
    if quant == "Q8_0":
        return "Q8_0"
    if role == "output" or (role == "token_embd" and shape.tied):
        return "Q6_K"
    if role in ("attn_v", "ffn_down") and use_more_bits(i_layer, shape.n_layer):
        return "Q6_K"
    return "Q4_K"


def tensors(shape: Shape, quant: str) -> Iterator[tuple[str, tuple[int, int] | tuple[int], str]]:
    """(name, (rows, columns) or (n,), ggml type) in file order, as llama.cpp's converter writes them."""
    d, kv = shape.n_embd, shape.n_embd // shape.n_head * shape.n_head_kv
    yield "token_embd.weight", (shape.n_vocab, d), tensor_type("token_embd", -1, shape, quant)
    yield "output_norm.weight", (d,), "F32"
    if not shape.tied:
        yield "output.weight", (shape.n_vocab, d), tensor_type("output", -1, shape, quant)
    for i in range(shape.n_layer):
        yield f"blk.{i}.attn_norm.weight", (d,), "F32"
        for role, rows in (("attn_q", d), ("attn_k", kv), ("attn_v", kv), ("attn_output", d)):
            yield f"blk.{i}.{role}.weight", (rows, d), tensor_type(role, i, shape, quant)
        yield f"blk.{i}.ffn_norm.weight", (d,), "F32"
        yield f"blk.{i}.ffn_gate.weight", (shape.n_ff, d), tensor_type("ffn_gate", i, shape, quant)
        yield f"blk.{i}.ffn_up.weight", (shape.n_ff, d), tensor_type("ffn_up", i, shape, quant)
        yield f"blk.{i}.ffn_down.weight", (d, shape.n_ff), tensor_type("ffn_down", i, shape, quant)


def _random_blocks(rng: np.random.Generator, type_name: str, n_blocks: int) -> np.ndarray:
    """``n_blocks`` valid blocks of a quantized type: random quants, small finite fp16 scales.

    Q4_K (144 bytes): d, dmin (fp16), 12 bytes of 6-bit scales and mins, 128 of nibbles;
    w = d * sc * q - dmin * m with sc, m < 64 and q < 16: d = 1e-4 keeps |w| < 0.1.
    Q6_K (210 bytes): 192 bytes of 6-bit quants, 16 int8 scales, d (fp16) last;
    w = d * sc * (q - 32): d = 2e-5 keeps |w| < 0.09. Q8_0 (34 bytes): d (fp16), 32 int8:
    d = 5e-4, |w| < 0.07.
    """
    import gguf

    qtype = getattr(gguf.GGMLQuantizationType, type_name)
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = np.frombuffer(rng.bytes(n_blocks * size), dtype=np.uint8).reshape(n_blocks, size).copy()
    scales = {"Q4_K": [(0, 1e-4), (2, 1e-4)], "Q6_K": [(208, 2e-5)], "Q8_0": [(0, 5e-4)]}[type_name]
    for offset, value in scales:
        # Scales vary per block (x0.5 to x1.5) as real ones do; all stay finite normal fp16.
        d = (value * (0.5 + rng.random(n_blocks, dtype=np.float32))).astype(np.float16)
        raw[:, offset:offset + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw


def write_shaped(path: Path, shape: Shape, quant: str = "Q4_K_M", *, seed: int = 0) -> Path:
    """Write ``shape`` with ``quant``'s tensor types to ``path`` (random weights, norms 1)."""
    import gguf

    from random_gguf import add_vocab

    if quant not in QUANTS:
        raise ValueError(f"unknown quantization {quant!r} (one of {', '.join(QUANTS)})")
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"sarai-random-{shape.name}-{quant}")
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{quant}"))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_words = shape.n_vocab - len(add_vocab(gguf.GGUFWriter(None, "llama")))  # the fixed part's size
    if len(add_vocab(writer, n_vocab_words=n_words)) != shape.n_vocab:
        raise AssertionError("vocabulary size")
    plan = list(tensors(shape, quant))
    for name, dims, type_name in plan:
        qtype = getattr(gguf.GGMLQuantizationType, type_name)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(dims))
        writer.add_tensor_info(name, dims, np.dtype(np.float32), n // block * size, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    for name, dims, type_name in plan:
        n = int(np.prod(dims))
        if type_name == "F32":
            data = np.ones(n, dtype=np.float32).view(np.uint8)
            fout.write(data.tobytes())
            writer.write_padding(fout, data.nbytes)
            continue
        block, size = gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, type_name)]
        left = n // block
        per_chunk = max(1, CHUNK_BYTES // size)
        while left:
            k = min(left, per_chunk)
            fout.write(_random_blocks(rng, type_name, k).tobytes())
            left -= k
        writer.write_padding(fout, n // block * size)
    writer.close()
    return path
