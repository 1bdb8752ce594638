"""Embeddings decoded together: the texts of one call, and of concurrent calls, share
``llama_decode``s on one pooled context (``_core.PooledBatch`` via ``embedding.Embedder``),
from Python and over ``/v1/embeddings``.

A vector must not depend on which other texts shared its decode: checked on random F32
llamas without flash attention (where a batch's shape changes only float rounding), over
several seeds, lengths and vocabularies.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import write_tiny_llama
from sarai_llama import _core
from sarai_llama.context_config import ContextConfig
from sarai_llama.embedding import Embedder

TEXTS = ["hello world", "a", "the quick brown fox jumps over the lazy dog " * 6, "Größe 熊猫 ?", "x y z",
         "one two three four five six seven eight nine ten", "bye"]


def embedder(path: Path, window: int = 512, n_seq: int = 16, **kw: Any) -> Embedder:
    config = ContextConfig.from_keywords(n_ctx=window, n_batch=window, embeddings=True, flash_attn=False, **kw)
    return Embedder(_core.Model(str(path)), config, n_seq)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_texts_decoded_together_equal_each_alone(tmp_path: Path, seed: int, pooling: str) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", seed=seed, n_vocab_words=50 * seed)
    emb = embedder(path, pooling_type=pooling)
    together, n_tokens = emb.embed(TEXTS)
    before = emb.n_decodes
    alone = [emb.embed([t])[0][0] for t in TEXTS]
    assert emb.n_decodes - before == len(TEXTS)
    for a, b in zip(together, alone):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    # different texts, different vectors; but "cls" reads the first token, BOS for every text, and
    # a causal model's first position sees nothing after it
    assert len({tuple(v) for v in together}) == (1 if pooling == "cls" else len(TEXTS))
    assert n_tokens == sum(emb.embed([t])[1] for t in TEXTS)
    # the same vectors through llama.cpp's one-sequence path (a plain Context)
    config = ContextConfig.from_keywords(n_ctx=512, n_batch=512, embeddings=True, flash_attn=False,
                                         pooling_type=pooling)
    model = _core.Model(str(path))
    ctx = _core.Context(model, config.to_core())
    for t, v in zip(TEXTS, together):
        ctx.clear()
        ctx.eval(list(model.tokenize(t.encode(), True, True)))
        assert [float(x) for x in ctx.embeddings()] == pytest.approx(v, rel=1e-4, abs=1e-5)


def test_packing_follows_the_window_and_the_sequence_count(tmp_path: Path) -> None:
    emb = embedder(write_tiny_llama(tmp_path / "m.gguf", seed=4), window=66, n_seq=3)
    for words, per_decode in ((20, 3), (30, 2), (40, 1)):  # up to 3 inputs, while their tokens fit 66
        texts = ["w " * words] * 7
        assert 66 // (per_decode + 1) < emb.embed(texts[:1])[1] <= 66 // per_decode
        before = emb.n_decodes
        vectors, _ = emb.embed(texts)
        assert emb.n_decodes - before == -(-7 // per_decode) and len(vectors) == 7
    with pytest.raises(ValueError, match="exceeds the 66-token"):
        emb.embed(["w " * 100], truncate=False)
    cut, n = emb.embed(["w " * 100])
    assert n == 66 and len(cut) == 1
    plain = emb.embed(["w"])[0][0]
    norm = math.sqrt(sum(x * x for x in plain))
    assert emb.embed(["w"], normalize=True)[0][0] == pytest.approx([x / norm for x in plain], rel=1e-6)


def test_concurrent_calls_share_decodes(tmp_path: Path) -> None:
    """While one call's decode runs, calls from other threads queue; the next decode takes
    them all at once, and each gets the vectors it would get alone."""
    path = write_tiny_llama(tmp_path / "big.gguf", seed=5, n_embd=256, n_layer=4, n_head=4, n_ff=512,
                            n_ctx_train=4096)
    emb = embedder(path, window=4096, n_seq=16)
    heavy = ["the quick brown fox " * 50] * 16  # thousands of tokens: long enough to queue behind
    small = [f"text number {i} " * (i + 1) for i in range(7)]
    want = [emb.embed([t])[0][0] for t in small]
    want_heavy = emb.embed(heavy[:1])[0][0]
    before = emb.n_decodes
    emb.embed(heavy)
    heavy_decodes = emb.n_decodes - before
    got: dict[int, Any] = {}
    errors: list[BaseException] = []

    def call(i: int, texts: list[str]) -> None:
        try:
            got[i] = emb.embed(texts)[0]
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    before = emb.n_decodes
    lead = threading.Thread(target=call, args=(-1, heavy))
    lead.start()
    time.sleep(0.05)
    others = [threading.Thread(target=call, args=(i, [t])) for i, t in enumerate(small)]
    for t in others:
        t.start()
    for t in [lead, *others]:
        t.join(120)
    assert not errors
    decodes = emb.n_decodes - before
    # the heavy call's decodes, then the small calls together (not 7 more)
    assert decodes <= heavy_decodes + 2, f"{len(small) + 1} calls took {decodes} decodes"
    for i, w in enumerate(want):
        assert got[i][0] == pytest.approx(w, rel=1e-4, abs=1e-5)
    assert all(v == pytest.approx(want_heavy, rel=1e-4, abs=1e-5) for v in got[-1])


def test_bad_input_of_one_call_does_not_fail_the_others(tmp_path: Path) -> None:
    config = ContextConfig.from_keywords(n_ctx=32, n_batch=32, embeddings=True)
    batch = _core.PooledBatch(_core.Model(str(write_tiny_llama(tmp_path / "m.gguf", seed=6))), config.to_core(), 4)
    with pytest.raises(ValueError, match="at most 32"):
        batch.run([[1, 2], [1] * 33])
    with pytest.raises(ValueError):
        batch.run([[1, 10**6]])
    with pytest.raises(ValueError, match="no tokens"):
        batch.run([[]])
    assert batch.run([]) == []
    assert len(batch.run([[1, 2, 3]])[0]) == 64


def test_server_embeddings_of_concurrent_requests(tmp_path: Path) -> None:
    """Eight clients at once over HTTP get what one client gets alone (unit vectors)."""
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    import asyncio

    import httpx

    from helpers import Server

    path = write_tiny_llama(tmp_path / "m.gguf", seed=7)
    s = Server(path, "--parallel", "1", "--ctx-size", "512", "--flash-attn", "off")
    try:
        url, mid = s.url + "/v1/embeddings", s.model_id()
        alone = [httpx.post(url, json={"model": mid, "input": t, "encoding_format": "float"}, timeout=60).json()
                 for t in TEXTS]

        async def together() -> list[Any]:
            async with httpx.AsyncClient(timeout=60) as c:
                rs = await asyncio.gather(*(c.post(url, json={"model": mid, "input": t, "encoding_format": "float"})
                                            for t in TEXTS))
            return [r.json() for r in rs]

        for a, b in zip(alone, asyncio.run(together())):
            va, vb = a["data"][0]["embedding"], b["data"][0]["embedding"]
            assert vb == pytest.approx(va, rel=1e-4, abs=1e-5)
            assert sum(x * x for x in vb) == pytest.approx(1.0, rel=1e-4)
            assert a["usage"] == b["usage"]
    finally:
        s.stop()


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_sequence_count_gives_way_to_the_window(tmp_path: Path, pooling: str) -> None:
    """llama.cpp aborts the process when the sequence count does not divide a mean-pooled
    window (its worst-case graph): the count becomes the largest divisor instead."""
    model = _core.Model(str(write_tiny_llama(tmp_path / "m.gguf", seed=8)))
    for window, n_seq, want in ((64, 3, 2), (100, 16, 10), (97, 16, 1), (512, 16, 16), (66, 3, 3)):
        config = ContextConfig.from_keywords(n_ctx=window, n_batch=window, embeddings=True, pooling_type=pooling)
        batch = _core.PooledBatch(model, config.to_core(), n_seq)
        assert (batch.n_batch, batch.n_seq) == (window, want)
        assert len(batch.run([[1, 5, 9]] * (want + 1))) == want + 1


def test_server_window() -> None:
    from sarai_llama.pooled import DEFAULT_SEQS, DEFAULT_WINDOW, server_window

    assert server_window(16384) == DEFAULT_WINDOW
    assert server_window(1000) == 992 and 992 % DEFAULT_SEQS == 0
    assert server_window(10) == 10
