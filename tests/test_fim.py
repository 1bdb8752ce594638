"""Fill-in-the-middle: the one FIM prompt builder (``sarai_llama.fim``) and its three doors:
``Llama.create_completion(suffix=...)``, ``/v1/completions``'s ``suffix`` (the ``openai`` client)
and llama-server's ``/infill`` (raw HTTP, streamed and not).

Tiny random-weight llama GGUFs carry Qwen's FIM control tokens and the
``tokenizer.ggml.fim_*_token_id`` keys (``tools/random_gguf.py``); the plain one has none
and must refuse a suffix, never drop it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_tiny_llama
from sarai_llama import Llama, _core
from sarai_llama.errors import ParameterError
from sarai_llama.fim import FimBudget, fills, fim_prompt

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

# Text whose tokens read back as itself: no lone surrogates (no UTF-8), no U+2581 (the
# SentencePiece space mark reads back as a space), no "<|" (a prompt may spell special tokens).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\u2581"), max_size=40).filter(
    lambda t: "<|" not in t)


@pytest.fixture(scope="module")
def fim_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_llama(tmp_path_factory.mktemp("fim") / "tiny-fim.gguf", fim=True, add_space_prefix=False,
                            n_ctx_train=1024, seed=7)


@pytest.fixture(scope="module")
def repo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_llama(tmp_path_factory.mktemp("fim") / "tiny-fim-repo.gguf", fim_repo=True,
                            add_space_prefix=False, seed=8)


@pytest.fixture(scope="module")
def vocab(fim_path: Path) -> Any:
    return _core.Model(str(fim_path), vocab_only=True)


def tok(model: Any, text: str) -> list[int]:
    return list(model.tokenize(text.encode(), False, False)) if text else []


def text_of(model: Any, tokens: list[int]) -> str:
    return bytes(model.detokenize(tokens, False)).decode()


# ------------------------------------------------------------------------------ the tokens
def test_fim_tokens_come_from_the_vocabulary(vocab: Any, repo_path: Path, tiny_model_path: Path) -> None:
    fim = vocab.fim_tokens
    for attr, text in (("pre", "<|fim_prefix|>"), ("suf", "<|fim_suffix|>"), ("mid", "<|fim_middle|>")):
        assert list(vocab.tokenize(text.encode(), False, True)) == [getattr(fim, attr)]
    assert (fim.pad, fim.rep, fim.sep) == (-1, -1, -1)
    repo = _core.Model(str(repo_path), vocab_only=True).fim_tokens
    assert min(repo.pre, repo.suf, repo.mid, repo.pad, repo.rep, repo.sep) >= 0
    plain = _core.Model(str(tiny_model_path), vocab_only=True).fim_tokens
    assert (plain.pre, plain.suf, plain.mid, plain.pad, plain.rep, plain.sep) == (-1,) * 6


# ------------------------------------------------------------------------------ the prompt
@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(prefix=TEXT, suffix=TEXT, prompt=TEXT, spm=st.booleans())
def test_prompt_order(vocab: Any, prefix: str, suffix: str, prompt: str, spm: bool) -> None:
    """[BOS] <PRE> prefix prompt <SUF> suffix <MID> (SPM: <SUF> suffix <PRE> prefix prompt <MID>),
    each FIM token once, the texts read back whole and in place, empty and non-ASCII ones too."""
    fim = vocab.fim_tokens
    tokens = fim_prompt(vocab, prefix, suffix, prompt=prompt, spm=spm)
    assert tokens[0] == vocab.token_bos and tokens[-1] == fim.mid
    for special in (fim.pre, fim.suf, fim.mid, vocab.token_bos):
        assert tokens.count(special) == 1
    i_pre, i_suf = tokens.index(fim.pre), tokens.index(fim.suf)
    if spm:
        assert i_suf == 1 < i_pre
        assert text_of(vocab, tokens[2:i_pre]) == suffix
        assert text_of(vocab, tokens[i_pre + 1:-1]) == prefix + prompt
    else:
        assert i_pre == 1 < i_suf
        assert text_of(vocab, tokens[2:i_suf]) == prefix + prompt
        assert text_of(vocab, tokens[i_suf + 1:-1]) == suffix


def test_texts_stay_text(vocab: Any) -> None:
    """A prefix or suffix that spells a FIM token is code, not a marker; a token-id prefix is kept as is."""
    fim = vocab.fim_tokens
    tokens = fim_prompt(vocab, "a <|fim_middle|> b", "<|fim_prefix|>")
    assert tokens.count(fim.mid) == 1 and tokens.count(fim.pre) == 1
    ids = tok(vocab, "def f(")
    assert fim_prompt(vocab, ids, "x") == fim_prompt(vocab, "def f(", "x")


def test_extra_context(vocab: Any, repo_path: Path) -> None:
    """The repository-level pattern where the vocabulary has FIM_REP/FIM_SEP; snippets otherwise;
    no repository header without extra files."""
    repo = _core.Model(str(repo_path), vocab_only=True)
    f = repo.fim_tokens
    extra = [("a.py", "x = 1\n"), ("b.py", "y = 2")]
    got = fim_prompt(repo, "def g(", ")", extra=extra)
    want = [repo.token_bos, f.rep, *tok(repo, "myproject\n"), f.sep, *tok(repo, "a.py\n"), *tok(repo, "x = 1\n"),
            f.sep, *tok(repo, "b.py\n"), *tok(repo, "y = 2"), f.sep, *tok(repo, "filename\n"),
            f.pre, *tok(repo, "def g("), f.suf, *tok(repo, ")"), f.mid]
    assert got == want
    assert fim_prompt(repo, "def g(", ")") == [repo.token_bos, f.pre, *tok(repo, "def g("), f.suf, *tok(repo, ")"),
                                              f.mid]
    v = vocab.fim_tokens
    snippet = tok(vocab, "\n\n--- snippet ---\n\n")
    assert fim_prompt(vocab, "p", "s", extra=extra) == [
        vocab.token_bos, *snippet, *tok(vocab, "x = 1\n"), *snippet, *tok(vocab, "y = 2"),
        v.pre, *tok(vocab, "p"), v.suf, *tok(vocab, "s"), v.mid]


def test_budget_cuts_as_llama_server(vocab: Any) -> None:
    """/infill's cut: the prefix keeps its last 3/4 of a batch, the suffix its first quarter less
    the prompt and 2, the extra context its last n_ctx - n_batch - 2 * n_predict tokens."""
    fim = vocab.fim_tokens
    prefix, suffix, body = "abcdefghijklmnopqrstuvwxyz" * 2, "zyxwvutsrqponmlkjihgfedcba" * 2, "0123456789" * 5
    pre, suf, extra = tok(vocab, prefix), tok(vocab, suffix), tok(vocab, "\n\n--- snippet ---\n\n") + tok(vocab, body)
    budget = FimBudget(n_batch=32, n_ctx=64, n_predict=8)
    got = fim_prompt(vocab, prefix, suffix, prompt="q", extra=[("f", body)], budget=budget)
    keep_extra = 64 - 32 - 16
    want = [vocab.token_bos, *extra[-keep_extra:], fim.pre, *pre[-24:], *tok(vocab, "q"), fim.suf,
            *suf[:32 // 4 - 2 - 1], fim.mid]
    assert got == want


def test_missing_fim_tokens_are_named(tiny_model_path: Path) -> None:
    plain = _core.Model(str(tiny_model_path), vocab_only=True)
    with pytest.raises(ParameterError) as err:
        fim_prompt(plain, "def f(", "return x")
    assert err.value.param == "suffix" and "prefix, suffix, middle" in str(err.value)
    assert not fills(plain, None) and not fills(plain, "")  # nothing to fill: a plain completion
    assert fills(plain, "x")  # then refused by fim_prompt, never dropped
    with pytest.raises(ParameterError) as err:
        fills(plain, "x", echo=True)
    assert err.value.param == "echo"


# ------------------------------------------------------------------------------ Llama
def test_llama_create_completion_suffix(fim_path: Path, tiny_model_path: Path) -> None:
    with Llama(str(fim_path), n_ctx=512, verbose=False) as llm:
        tokens = fim_prompt(llm._vocab().model, "def add(a, b):\n    ", "\n    return c")
        kw: dict[str, Any] = dict(max_tokens=8, temperature=0)
        out = llm.create_completion("def add(a, b):\n    ", suffix="\n    return c", **kw)
        assert out["usage"]["prompt_tokens"] == len(tokens)
        assert out["choices"][0]["text"] == llm.create_completion(tokens, **kw)["choices"][0]["text"]
        streamed = llm.create_completion("def add(a, b):\n    ", suffix="\n    return c", stream=True, **kw)
        assert "".join(c["choices"][0]["text"] for c in streamed) == out["choices"][0]["text"]
        with pytest.raises(ValueError, match="echo"):
            llm.create_completion("x", suffix="y", echo=True, max_tokens=1)
    with Llama(str(tiny_model_path), n_ctx=256, verbose=False) as plain:
        with pytest.raises(ValueError, match="no FIM prefix, suffix, middle token"):
            plain.create_completion("def f(", suffix="return x", max_tokens=2)
        assert plain.create_completion("hi", suffix="", max_tokens=2, temperature=0)["choices"][0]["text"] == \
            plain.create_completion("hi", max_tokens=2, temperature=0)["choices"][0]["text"]


# ------------------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def server(fim_path: Path) -> Iterator[Any]:
    pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from helpers import Server

    s = Server(fim_path, "--parallel", "2", "--ctx-size", "1024", "--seed", "1")
    yield s
    s.stop()


def greedy(n: int) -> dict[str, Any]:
    # ignore_eos: a random-weight model may end at any step; the lengths stay fixed.
    return {"temperature": 0, "n_predict": n, "ignore_eos": True}


def sse(response: Any) -> list[dict[str, Any]]:
    events = []
    for line in response.iter_lines():
        assert line != "data: [DONE]"  # llama-server's native streams have no [DONE]
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return events


def test_completions_suffix_through_openai(server: Any, vocab: Any) -> None:
    c = server.client()
    prefix, suffix = "for i in range(", "):\n    print(i)"
    kw: dict[str, Any] = dict(model=server.model_id(), max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    out = c.completions.create(prompt=prefix, suffix=suffix, **kw)
    tokens = fim_prompt(vocab, prefix, suffix)
    assert out.usage.prompt_tokens == len(tokens) and out.usage.completion_tokens == 6
    assert out.choices[0].text == c.completions.create(prompt=tokens, **kw).choices[0].text
    chunks = list(c.completions.create(prompt=prefix, suffix=suffix, stream=True, **kw))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == out.choices[0].text
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        c.completions.create(prompt=prefix, suffix=suffix, echo=True, **kw)
    assert err.value.param == "echo"


def test_infill(server: Any, vocab: Any) -> None:
    import httpx

    prefix, suffix = "def area(r):\n    return ", " * r * r\n"
    r = httpx.post(server.url + "/infill", json={"input_prefix": prefix, "input_suffix": suffix, **greedy(6)},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stop"] is True and body["tokens_predicted"] == 6
    assert body["tokens_evaluated"] == len(fim_prompt(vocab, prefix, suffix))
    same = server.client().completions.create(model=server.model_id(), prompt=prefix, suffix=suffix, max_tokens=6,
                                              temperature=0, extra_body={"ignore_eos": True})
    assert body["content"] == same.choices[0].text  # one prompt builder behind both
    # extra context and a prompt: the same tokens as the builder makes with /infill's budget
    extra = [{"filename": "util.py", "text": "PI = 3.14159\n"}, {"text": "import math\n"}]
    r = httpx.post(server.url + "/infill", json={"input_prefix": prefix, "input_suffix": suffix, "prompt": "PI",
                                                 "input_extra": extra, **greedy(4)}, timeout=60)
    n_ctx = server.client().models.list().data[0].model_extra["meta"]["n_ctx"]
    want = fim_prompt(vocab, prefix, suffix, prompt="PI", extra=[("util.py", "PI = 3.14159\n"), ("tmp", "import math\n")],
                      budget=FimBudget(512, n_ctx, 4))
    assert r.status_code == 200 and r.json()["tokens_evaluated"] == len(want), r.text
    # streamed: llama-server's events, the same text, one last "stop": true with the counts
    with httpx.stream("POST", server.url + "/infill", json={"input_prefix": prefix, "input_suffix": suffix,
                                                            "stream": True, **greedy(6)}, timeout=60) as resp:
        assert resp.status_code == 200
        events = sse(resp)
    assert [e["stop"] for e in events] == [False] * (len(events) - 1) + [True]
    assert "".join(e["content"] for e in events) == body["content"]
    assert events[-1]["tokens_predicted"] == 6
    # a missing required field is a 400 naming it
    r = httpx.post(server.url + "/infill", json={"input_prefix": prefix}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_suffix", r.text


def test_models_without_fim_tokens_refuse(tiny_model_path: Path) -> None:
    """/infill and a non-empty suffix are 400s naming the missing tokens; an empty suffix is a
    plain completion (the ASGI app, no uvicorn)."""
    import asyncio

    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    from sarai_llama.server.app import create_app
    from sarai_llama.server.settings import Settings

    app, state = create_app(Settings.create(str(tiny_model_path), ctx_size=256, parallel=1, threads=1))
    state.load()
    assert state.phase == "ready", state.failure

    async def talk() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asgi") as http:
            r = await http.post("/infill", json={"input_prefix": "def f(", "input_suffix": "x", "n_predict": 2})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == "input_suffix" and "no FIM prefix, suffix, middle token" in err["message"]
            c = openai.AsyncOpenAI(base_url="http://asgi/v1", api_key="none", http_client=http, max_retries=0)
            name = tiny_model_path.name
            with pytest.raises(openai.BadRequestError) as bad:
                await c.completions.create(model=name, prompt="def f(", suffix="return x", max_tokens=2)
            assert bad.value.param == "suffix" and "tokenizer.ggml.fim_pre_token_id" in bad.value.message
            plain = await c.completions.create(model=name, prompt="hi", max_tokens=2, temperature=0)
            empty = await c.completions.create(model=name, prompt="hi", suffix="", max_tokens=2, temperature=0)
            assert empty.choices[0].text == plain.choices[0].text

    try:
        asyncio.run(talk())
    finally:
        state.close()
