"""Rerank: a classifier head's scores for (query, document) pairs, batched on one rank-pooled
context (``_core.PooledBatch``), from Python (``Llama(..., pooling_type="rank").rerank``) and over
HTTP (``/v1/rerank``, ``/rerank``).

The model is a tiny random-weight Qwen3 reranker written as llama.cpp's converter writes
Qwen3-Reranker (rank pooling, a two-row ``cls.output`` head "yes"/"no", a rerank prompt
template; ``tools/random_gguf.py``): its scores mean nothing, but they differ per pair, lie in
(0, 1) (P(yes)), and must not depend on which other pairs share a decode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_tiny_llama
from sarai_llama import Llama, _core
from sarai_llama.context_config import ContextConfig
from sarai_llama.errors import ParameterError
from sarai_llama.rerank import Reranker

pytest.importorskip("gguf")
from random_gguf import QWEN3_RERANK_TEMPLATE, write_tiny_reranker  # noqa: E402

QUERY = "what is a panda?"
DOCS = ["hi", "it is a bear", "The giant panda is a bear species endemic to China.", "", "pandas: a python library",
        "Der Große Panda ist ein Bär. 熊猫是一种熊。", "bamboo " * 30, "a panda eats bamboo", "zzz", "?"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rerank")
    return {
        "template": write_tiny_reranker(d / "reranker.gguf", seed=11, n_ctx_train=4096),
        "plain": write_tiny_reranker(d / "reranker-no-template.gguf", seed=12, rerank_template=None, add_eos=True),
        "headless": write_tiny_reranker(d / "qwen3.gguf", seed=13, classifier=False),
        "llama": write_tiny_llama(d / "llama.gguf", seed=14),
    }


def config(window: int = 512, **kw: Any) -> ContextConfig:
    return ContextConfig.from_keywords(n_ctx=window, n_batch=window, embeddings=True, pooling_type="rank", **kw)


@pytest.fixture(scope="module")
def reranker(models: dict[str, Path]) -> Reranker:
    return Reranker(_core.Model(str(models["template"])), config(window=4096))


def test_pairs_are_formatted_as_llama_server(models: dict[str, Path], reranker: Reranker) -> None:
    model = reranker.model
    assert reranker.template == QWEN3_RERANK_TEMPLATE
    # the template filled in one pass: a query spelling "{document}" stays text
    text = QWEN3_RERANK_TEMPLATE.replace("{document}", "d").replace("{query}", "q {document}")
    assert reranker.pair_tokens("q {document}", "d") == list(model.tokenize(text.encode(), False, True))
    # without a template: BOS query EOS document EOS (the vocabulary adds BOS and EOS, no SEP)
    plain = Reranker(_core.Model(str(models["plain"])), config())
    m = plain.model
    q, d = list(m.tokenize(b"query", False, False)), list(m.tokenize(b"doc", False, False))
    assert plain.pair_tokens("query", "doc") == [m.token_bos, *q, m.token_eos, *d, m.token_eos]


@pytest.mark.parametrize("kind", ["template", "plain"])
def test_batched_scores_equal_each_pair_alone(models: dict[str, Path], kind: str) -> None:
    """All pairs in one decode score as each pair alone: to float rounding with llama.cpp's plain
    attention and an F32 cache. With flash attention (llama.cpp's default, as llama-server's)
    the CPU kernel for a 15-token batch is not the one for a 300-token batch, which moves a
    random-weight score by up to ~1e-3; which other pairs share the batch still changes nothing."""
    window = 4096 if kind == "template" else 512
    model = _core.Model(str(models[kind]))
    exact = Reranker(model, config(window, flash_attn=False, type_k="f32", type_v="f32"))
    scores, n_tokens = exact.score(QUERY, DOCS)
    assert n_tokens <= exact.window and len(DOCS) <= 16  # one decode for the whole call
    assert n_tokens == sum(len(exact.pair_tokens(QUERY, d)) for d in DOCS)
    assert len(scores) == len(DOCS) and all(0.0 < s < 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) == len(DOCS)  # the head reads each pair: no constant
    alone = [exact.score(QUERY, [d])[0][0] for d in DOCS]
    assert alone == pytest.approx(scores, rel=1e-5, abs=1e-6)
    fast = Reranker(model, config(window))
    batched = fast.score(QUERY, DOCS)[0]
    assert batched == pytest.approx(scores, abs=2e-3)
    assert fast.score(QUERY, DOCS[::-1])[0][::-1] == pytest.approx(batched, rel=1e-5, abs=1e-6)
    assert fast.score(QUERY, DOCS[5:] + DOCS[:5])[0] == pytest.approx(batched[5:] + batched[:5], rel=1e-5, abs=1e-6)
    # the same score through llama.cpp's one-sequence path (a plain Context under rank pooling)
    ctx = _core.Context(model, config(window, flash_attn=False, type_k="f32", type_v="f32").to_core())
    for doc, score in zip(DOCS[:3], scores):
        ctx.clear()
        ctx.eval(exact.pair_tokens(QUERY, doc))
        out = ctx.embeddings()
        assert len(out) == 2 and float(out[0]) == pytest.approx(score, rel=1e-5)  # P(yes), P(no)
        assert float(out[0] + out[1]) == pytest.approx(1.0, rel=1e-5)


def test_pairs_longer_than_the_window(models: dict[str, Path]) -> None:
    small = Reranker(_core.Model(str(models["template"])), config(window=384))
    with pytest.raises(ParameterError) as err:
        small.score(QUERY, ["ok", "word " * 200])
    assert err.value.param == "documents" and "documents[1]" in str(err.value)


def test_models_without_a_classifier_head(models: dict[str, Path]) -> None:
    for name in ("headless", "llama"):
        with pytest.raises(ValueError, match="no classifier head"):
            Reranker(_core.Model(str(models[name])), config())


def test_llama_rerank(models: dict[str, Path], reranker: Reranker) -> None:
    with Llama(str(models["template"]), embedding=True, pooling_type="rank", verbose=False) as llm:
        assert llm.rerank(QUERY, DOCS) == pytest.approx(reranker.score(QUERY, DOCS)[0], rel=1e-5)
        assert len(llm.embed("one text")) == 2  # rank pooling: the classifier's outputs
    with Llama(str(models["template"]), embedding=True, verbose=False) as mean:
        with pytest.raises(ValueError, match='pooling_type="rank"'):
            mean.rerank(QUERY, DOCS)
    with pytest.raises(ValueError, match="no classifier head"):
        Llama(str(models["llama"]), embedding=True, pooling_type="rank", verbose=False)


# ------------------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def server(models: dict[str, Path]) -> Iterator[Any]:
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from helpers import Server

    s = Server(models["template"], "--parallel", "1", "--ctx-size", "1024")
    yield s
    s.stop()


def test_rerank_endpoint(server: Any, reranker: Reranker) -> None:
    import httpx

    want, n_tokens = reranker.score(QUERY, DOCS)
    r = httpx.post(server.url + "/v1/rerank", json={"model": server.model_id(), "query": QUERY, "documents": DOCS},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
    got = [x["relevance_score"] for x in results]
    assert got == sorted(got, reverse=True)  # best first
    # the server's window holds fewer pairs per decode: other batch sizes, other kernels (see above)
    assert [x["relevance_score"] for x in sorted(results, key=lambda x: x["index"])] == pytest.approx(want, abs=2e-3)
    assert all(x["document"] == {"text": DOCS[x["index"]]} for x in results)
    assert body["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens} and body["object"] == "list"
    # top_n, return_documents, Jina's {"text": ...} documents, llama-server's path
    r = httpx.post(server.url + "/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCS],
                                                 "top_n": 3, "return_documents": False}, timeout=60)
    top = r.json()["results"]
    assert r.status_code == 200 and top == [{"index": x["index"], "relevance_score": x["relevance_score"]}
                                            for x in results[:3]]
    for body, param in (({"query": QUERY, "documents": []}, "documents"),
                        ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
                        ({"documents": DOCS}, "query"),
                        ({"query": QUERY, "documents": ["x " * 3000]}, "documents")):
        r = httpx.post(server.url + "/v1/rerank", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_rerank_refused_for_other_models(models: dict[str, Path]) -> None:
    """A model without a classifier head is a 400 that says why (the ASGI app, no uvicorn)."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from sarai_llama.server.app import create_app
    from sarai_llama.server.settings import Settings

    app, state = create_app(Settings.create(str(models["llama"]), ctx_size=256, parallel=1, threads=1))
    state.load()
    assert state.phase == "ready", state.failure

    async def talk() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asgi") as http:
            for _ in range(2):  # the second answer comes from the remembered reason
                r = await http.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
                assert r.status_code == 400, r.text
                err = r.json()["error"]
                assert err["param"] == "model" and "no classifier head" in err["message"]

    try:
        asyncio.run(talk())
    finally:
        state.close()
