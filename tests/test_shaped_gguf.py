"""Seed-sized models without a download (tools/shaped_gguf.py) and the bandwidth roofline (roofline.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import shaped_gguf
from shaped_gguf import SHAPES, Shape, tensor_type, tensors, write_shaped

from sarai_llama import _core, roofline
from sarai_llama.llama import Llama


def _plan_bytes(shape: Shape, quant: str) -> int:
    import gguf

    total = 0
    for _, dims, type_name in tensors(shape, quant):
        block, size = gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, type_name)]
        total += math.prod(dims) // block * size
    return total


@pytest.mark.parametrize(("shape", "published"), [("solar-10.7b", 6.46e9), ("llama-3.2-3b", 2.02e9)])
def test_q4_k_m_mix_matches_the_published_files(shape, published):
    # TheBloke's solar-10.7b-v1.0.Q4_K_M.gguf is 6.46 GB, bartowski's Llama-3.2-3B-Instruct-Q4_K_M.gguf
    # 2.02 GB (llama.cpp's quantizer): the tensor-type mix that gives those sizes is the real one.
    assert abs(_plan_bytes(SHAPES[shape], "Q4_K_M") - published) / published < 0.01


@pytest.mark.parametrize("tied", [False, True])
def test_tiny_shape_loads_and_generates_with_the_real_core(tmp_path, tied):
    shape = dataclasses.replace(SHAPES["tiny"], tied=tied)
    path = write_shaped(tmp_path / "m.gguf", shape, "Q4_K_M", seed=3)
    found = _core.gguf_tensors(str(path))
    assert [(name, kind.upper()) for name, kind, _ in found] == [(name, t) for name, _, t in tensors(shape, "Q4_K_M")]
    assert sum(size for _, _, size in found) == _plan_bytes(shape, "Q4_K_M")
    assert ("output.weight" in {n for n, _, _ in found}) is not tied
    assert {t for _, t, _ in found} == {"f32", "q4_K", "q6_K"}
    llm = Llama(str(path), n_ctx=128, trusted=True, verbose=False)
    assert llm.n_vocab() == shape.n_vocab
    llm.eval(llm.tokenize(b"the a is of"))
    assert np.isfinite(np.asarray(llm.scores)).all()
    out = llm("the a", max_tokens=4, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1
    bytes_per_token = roofline.weight_bytes_per_token(path)
    embd = next(size for name, _, size in found if name == "token_embd.weight")
    total = sum(size for _, _, size in found)
    assert bytes_per_token == (total if tied else total - embd)


def test_q4_k_m_types_follow_use_more_bits():
    # 48 layers (SOLAR): attn_v and ffn_down get Q6_K in the first and last 6 layers and every
    # third between (llama-quant.cpp), 24 layers in all; the rest stays Q4_K.
    shape = SHAPES["solar-10.7b"]
    six = [i for i in range(48) if tensor_type("ffn_down", i, shape, "Q4_K_M") == "Q6_K"]
    assert six[:6] == list(range(6)) and six[-6:] == list(range(42, 48)) and len(six) == 24
    assert all(tensor_type(r, i, shape, "Q4_K_M") == "Q4_K" for r in ("attn_q", "attn_k", "ffn_up") for i in range(48))
    assert tensor_type("token_embd", -1, shape, "Q4_K_M") == "Q4_K"
    assert tensor_type("token_embd", -1, SHAPES["llama-3.2-3b"], "Q4_K_M") == "Q6_K"  # tied: the output's type


def test_blocks_decode_to_small_finite_weights(tmp_path):
    import gguf
    import gguf.quants

    rng = np.random.default_rng(0)
    for type_name in ("Q4_K", "Q6_K", "Q8_0"):
        blocks = shaped_gguf._random_blocks(rng, type_name, 4096)
        weights = gguf.quants.dequantize(blocks, getattr(gguf.GGMLQuantizationType, type_name))
        assert np.isfinite(weights).all() and 0.01 < np.abs(weights).max() < 0.2, type_name


def test_unknown_quant_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="Q4_K_M"):
        write_shaped(tmp_path / "m.gguf", SHAPES["tiny"], "Q2_K")


def test_bandwidth_is_measured_and_checked():
    b = roofline.measure_bandwidth(1, buffer_bytes=64 << 20, passes=2)
    assert b.threads == 1 and b.bytes_per_s >= b.median_bytes_per_s > 1e8
    assert roofline.fraction(10.0, int(b.bytes_per_s / 20), b) == pytest.approx(0.5)
    for bad in (dict(threads=0), dict(threads=1, passes=0), dict(threads=1, buffer_bytes=1000)):
        with pytest.raises(ValueError):
            roofline.measure_bandwidth(**bad)
