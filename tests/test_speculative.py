"""Speculative decoding in the engine (n-gram drafts verified in the batch) on the real core.

Exactness is asserted where llama.cpp's arithmetic does not depend on a batch's
shape: F32 random-weight models with an F32 KV cache and flash attention off.
(llama.cpp's CPU flash attention accumulates in F16 in the order the KV cells
happen to lie in, so with it a draft's rows, like batching itself, can flip a
near-tie.) Random weights do not repeat text by themselves: a +100 logit bias
on a few tokens makes them write short-period sequences, which n-gram drafts
sometimes predict and sometimes do not, so both acceptance and rollback run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_llama
from sarai_llama import Llama, LogitsProcessorList, _core
from sarai_llama.context_config import ContextConfig
from sarai_llama.engine import Engine, Request, run_all
from sarai_llama.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding, Speculation
from sarai_llama.sampling import SamplingParams

Event = _core.Event
EXACT = dict(flash_attn=0, type_k=0, type_v=0)  # F32 KV, no flash attention: batch-shape-independent
BIASED = [(20, 100.0), (21, 100.0), (22, 100.0)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[_core.Model]:
    pytest.importorskip("gguf")
    d = tmp_path_factory.mktemp("spec")
    return [_core.Model(str(write_tiny_llama(d / f"tiny-{s}.gguf", n_ctx_train=512, seed=s))) for s in range(5)]


def engine(model: _core.Model, spec: Speculation, n_seq: int = 3, **cfg: object) -> _core.Engine:
    config = ContextConfig(**{"n_ctx": 512, "n_batch": 64, "n_threads": 1, "n_seq_max": n_seq, **EXACT, **cfg})
    e = _core.Engine(model, config.to_core())
    e.set_speculation(spec.to_core())
    return e


def prompts(model: _core.Model) -> list[list[int]]:
    return [list(model.tokenize(t, True, False)) for t in (b"one two three one two three one two",
                                                           b"the cat sat on the mat", b"x")]


def drain(e: _core.Engine) -> dict[int, dict]:
    out: dict[int, dict] = {}
    while not e.idle():
        for ev in e.step():
            r = out.setdefault(ev.id, {"tokens": [], "end": None})
            if ev.kind == Event.TOKEN:
                r["tokens"].append(ev.token)
            elif ev.kind in (Event.DONE, Event.ERROR):
                r["end"] = ev
    return out


def generate(model: _core.Model, spec: Speculation, ps: list[list[int]], max_tokens: int = 80,
             **sampling: object) -> tuple[list[list[int]], list[str], _core.Engine]:
    e = engine(model, spec)
    params = SamplingParams(**{"temperature": 0.0, "logit_bias": BIASED, **sampling}).to_core(7)
    ids = [e.submit(p, params, max_tokens) for p in ps]
    got = drain(e)
    return [got[i]["tokens"] for i in ids], [got[i]["end"].finish_reason for i in ids], e


FORCED = Speculation(draft_max=8, draft_min=8, ngram_size=2)  # every proposal drafted whole
ADAPTIVE = Speculation(draft_max=8, ngram_size=2)


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.9, "seed": 11},
                                      {"temperature": 0.7, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
                                      {"grammar": 'root ::= ("one " | "two " | "three ")+', "logit_bias": ()}],
                         ids=["greedy", "seeded", "plain-dist", "grammar"])
def test_output_equals_plain_decoding_across_models(models, sampling):
    """The property: whatever was drafted and however much was accepted, each sequence's
    tokens and finish are plain decoding's, for several models, three sequences at once."""
    drafted = accepted = 0
    for model in models:
        ps = prompts(model)
        plain, plain_end, _ = generate(model, Speculation(), ps, **sampling)
        for spec in (FORCED, ADAPTIVE):
            got, end, e = generate(model, spec, ps, **sampling)
            assert got == plain and end == plain_end
            st = e.stats()
            drafted += st["n_drafted"]
            accepted += st["n_draft_accepted"]
    assert 0 < accepted < drafted  # drafts were accepted and rejected: both paths ran


def test_rollback_leaves_exact_kv_positions_and_the_next_turn_reuses_them(models):
    model = models[1]
    p = prompts(model)[0]
    e = engine(model, FORCED, n_seq=1)
    params = SamplingParams(temperature=0.0, logit_bias=BIASED).to_core(0)
    rid = e.submit(p, params, 60)
    out = drain(e)[rid]
    assert 0 < out["end"].n_draft_accepted < out["end"].n_drafted  # rejected drafts were rolled back
    cached = e.cached(0)
    # The cache holds exactly prompt + output (the last token is sampled, not decoded) ...
    assert cached == p + out["tokens"][:-1]
    # ... at positions 0..n-1: restoring the state checks that, cell by cell.
    e.set_seq_state(0, e.seq_state(0), cached)
    # The next turn reuses the whole cached prefix and continues as plain decoding does.
    turn2 = p + out["tokens"] + p[1:6]
    rid = e.submit(turn2, params, 30)
    got = drain(e)[rid]
    assert got["end"].n_reused == len(cached)
    plain = engine(model, Speculation(), n_seq=1)
    pid = plain.submit(turn2, params, 30)
    assert got["tokens"] == drain(plain)[pid]["tokens"]


def test_max_tokens_and_stop_token_within_drafts(models):
    model = models[2]
    ps = prompts(model)
    for n in range(1, 25, 3):  # the budget ends at every offset of a draft
        plain, _, _ = generate(model, Speculation(), ps, max_tokens=n)
        got, end, _ = generate(model, FORCED, ps, max_tokens=n)
        assert got == plain and all(len(t) == n for t in got) and set(end) == {"length"}
    # The end-of-generation token inside the repeated pattern: drafts propose it, and
    # the sequence stops at it exactly where plain decoding does.
    eos = model.token_eos
    biased = [*BIASED, (eos, 100.0)]
    plain, plain_end, _ = generate(model, Speculation(), ps, max_tokens=60, logit_bias=biased)
    got, end, e = generate(model, FORCED, ps, max_tokens=60, logit_bias=biased)
    assert got == plain and end == plain_end and "stop" in end
    assert all(t[-1] == eos for t, f in zip(got, end) if f == "stop")


def test_cancel_during_drafts_leaves_the_others_exact(models):
    model = models[3]
    ps = prompts(model)
    plain, _, _ = generate(model, Speculation(), ps, max_tokens=60)
    e = engine(model, FORCED)
    params = SamplingParams(temperature=0.0, logit_bias=BIASED).to_core(7)
    ids = [e.submit(p, params, 60) for p in ps]
    seen: dict[int, list[int]] = {i: [] for i in ids}
    ends: dict[int, Event] = {}
    while e.stats()["n_drafted"] == 0 or len(seen[ids[0]]) < 10:
        for ev in e.step():
            if ev.kind == Event.TOKEN:
                seen[ev.id].append(ev.token)
    assert e.cancel(ids[0])
    while not e.idle():
        for ev in e.step():
            if ev.kind == Event.TOKEN:
                seen[ev.id].append(ev.token)
            elif ev.kind == Event.DONE:
                ends[ev.id] = ev
    assert ends[ids[0]].finish_reason == "cancelled" and seen[ids[0]] == plain[0][: len(seen[ids[0]])]
    assert [seen[i] for i in ids[1:]] == plain[1:]


def test_what_cannot_speculate_says_why(models):
    model = models[0]
    e = engine(model, FORCED, n_seq=2)
    p = prompts(model)[0]
    greedy = SamplingParams(temperature=0.0).to_core(0)
    off = e.submit(p, greedy, 3, draft_max=0)
    ext = e.submit(p, greedy, 1, external_sampling=True)
    ends = {}
    while not e.idle():
        for ev in e.step():
            if ev.kind == Event.NEED_TOKEN:
                ends.update({x.id: x for x in e.provide_token(ev.id, 20) if x.kind == Event.DONE})
            elif ev.kind == Event.DONE:
                ends[ev.id] = ev
    assert "draft_max 0" in ends[off].speculation and "Python" in ends[ext].speculation
    with pytest.raises(ValueError, match="draft_max"):
        e.submit(p, greedy, 3, draft_max=257)
    with pytest.raises(ValueError, match="draft_min"):
        Speculation(draft_min=-1)
    with pytest.raises(TypeError, match="LlamaPromptLookupDecoding"):
        Speculation.of(LlamaDraftModel())
    assert Speculation.of(LlamaPromptLookupDecoding(3, 7)) == Speculation(draft_max=7, ngram_size=3)


def test_the_python_driver_runs_requests_with_their_own_limits(models):
    model = models[4]
    config = ContextConfig(n_ctx=512, n_batch=64, n_threads=1, n_seq_max=2, **EXACT)
    ps = prompts(model)[:2]
    sampling = SamplingParams(temperature=0.0, logit_bias=tuple(BIASED))
    plain = run_all(Engine(model, config), [Request(p, sampling, 40) for p in ps])
    eng = Engine(model, config, speculation=FORCED)
    reqs = [Request(ps[0], sampling, 40), Request(ps[1], sampling, 40, draft_max=0)]
    handles = [eng.submit(r) for r in reqs]
    while eng.step():
        pass
    for h, pieces in zip(handles, plain):
        assert h.tokens == [t for piece in pieces for t in piece.tokens]
    assert handles[0].drafted > 0 and handles[1].drafted == 0 and "draft_max 0" in handles[1].speculation


# ------------------------------------------------------------------ Llama(draft_model=...)
@pytest.fixture(scope="module")
def pair(tiny_model_path: Path) -> tuple[Llama, Llama]:
    kw = dict(n_ctx=512, n_batch=64, n_threads=1, verbose=False, flash_attn=False, type_k="f32", type_v="f32")
    return Llama(str(tiny_model_path), **kw), Llama(str(tiny_model_path), draft_model=LlamaPromptLookupDecoding(
        max_ngram_size=2, num_pred_tokens=8), **kw)


def text(out) -> str:
    return out["choices"][0]["text"]


BIAS = {20: 100.0, 21: 100.0, 22: 100.0}


def test_llama_draft_model_is_the_engines_speculation(pair):
    plain, drafted = pair
    before = drafted.engine.stats()["n_drafted"]
    for prompt in ("one two three one two", "the cat"):
        kw = dict(max_tokens=60, temperature=0, logit_bias=BIAS)
        assert text(drafted(prompt, **kw)) == text(plain(prompt, **kw))
    assert drafted.engine.stats()["n_drafted"] > before
    # Streaming, stop strings and logprobs go through the same engine path.
    full = text(plain("one two", max_tokens=40, temperature=0, logit_bias=BIAS))
    chunks = list(drafted("one two", max_tokens=40, temperature=0, logit_bias=BIAS, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == full
    stop = full[len(full) // 2: len(full) // 2 + 3]
    if stop.strip():
        cut = drafted("one two", max_tokens=40, temperature=0, logit_bias=BIAS, stop=[stop])
        assert text(cut) == full[: full.index(stop)] and cut["choices"][0]["finish_reason"] == "stop"
    lp = drafted("one two", max_tokens=12, temperature=0, logit_bias=BIAS, logprobs=2)["choices"][0]["logprobs"]
    ref = plain("one two", max_tokens=12, temperature=0, logit_bias=BIAS, logprobs=2)["choices"][0]["logprobs"]
    assert lp["tokens"] == ref["tokens"] and np.allclose(lp["token_logprobs"], ref["token_logprobs"], atol=1e-4)


def test_llama_python_hooks_run_without_drafts(pair):
    _, drafted = pair
    calls = []

    def proc(ids, scores):
        calls.append(len(ids))
        return scores

    before = drafted.engine.stats()["n_drafted"]
    out = drafted("one two three one two", max_tokens=12, temperature=0, logit_bias=BIAS, logits_processor=LogitsProcessorList([proc]))
    assert out["usage"]["completion_tokens"] == 12 and len(calls) == 12
    assert drafted.engine.stats()["n_drafted"] == before


def test_gemma_rewriting_task_agrees_with_plain(gemma_path: Path):
    """Gemma (Q4_K_M) rewriting a paragraph: long drafts, mostly accepted. With an F32
    cache and flash attention off a draft's rows leave the other rows' logits as they
    are on this model, so the text is plain decoding's."""
    from bench_speculative import REPETITIVE

    kw = dict(n_ctx=1024, n_threads=2, verbose=False, flash_attn=False, type_k="f32", type_v="f32")
    plain = Llama(str(gemma_path), **kw)
    want = text(plain(REPETITIVE, max_tokens=64, temperature=0))
    plain.close()
    llm = Llama(str(gemma_path), draft_model=LlamaPromptLookupDecoding(3, 16), **kw)
    got = text(llm(REPETITIVE, max_tokens=64, temperature=0))
    st = llm.engine.stats()
    assert got == want
    assert st["n_draft_accepted"] >= 32 and st["n_spec_steps"] < 32


# ------------------------------------------------------------------ the server
def test_server_speculates_with_per_request_limits(models, tmp_path):
    """Two apps on one F32 model, with and without drafts, answer the official client
    alike; ``speculative.n_max`` per request turns drafts off or is a 400 naming itself."""
    import asyncio

    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from sarai_llama.server.app import create_app
    from sarai_llama.server.settings import Settings

    path = write_tiny_llama(tmp_path / "tiny.gguf", n_ctx_train=512, seed=2)
    common = dict(ctx_size=1024, parallel=2, threads=1, flash_attn="off", cache_type_k="f32", cache_type_v="f32",
                  draft_max=8, draft_min=8, spec_ngram_size_n=2)
    apps = [create_app(Settings.create(str(path), spec_type=kind, **common)) for kind in ("none", "ngram-simple")]
    for _, state in apps:
        state.load()
        assert state.phase == "ready", state.failure
    bias = {"20": 100, "21": 100, "22": 100}

    async def answers(app) -> tuple[list[str], str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asgi") as http:
            c = openai.AsyncOpenAI(base_url="http://asgi/v1", api_key="none", http_client=http, max_retries=0)
            outs = await asyncio.gather(*(c.completions.create(model=path.name, prompt=p, max_tokens=40, temperature=0,
                                                               logit_bias=bias) for p in ("one two one", "the cat")))
            stream = [ch async for ch in await c.completions.create(model=path.name, prompt="one two one",
                                                                    max_tokens=40, temperature=0, logit_bias=bias,
                                                                    stream=True)]
            assert "".join(ch.choices[0].text for ch in stream) == outs[0].choices[0].text
            return [o.choices[0].text for o in outs], (await http.get("/metrics")).text

    async def limits(app, state) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asgi") as http:
            c = openai.AsyncOpenAI(base_url="http://asgi/v1", api_key="none", http_client=http, max_retries=0)
            before = state.default.engine.stats()["n_drafted"]
            await c.completions.create(model=path.name, prompt="one two one", max_tokens=30, temperature=0,
                                       logit_bias=bias, extra_body={"speculative.n_max": 0})
            assert state.default.engine.stats()["n_drafted"] == before
            with pytest.raises(openai.BadRequestError) as err:
                await c.completions.create(model=path.name, prompt="x", max_tokens=3,
                                           extra_body={"speculative.n_max": 300})
            assert err.value.param == "speculative.n_max"

    try:
        (plain, _), (drafted, metrics) = (asyncio.run(answers(app)) for app, _ in apps)
        assert drafted == plain
        drafts = [line for line in metrics.splitlines() if line.startswith("sarai:draft_tokens_total{")]
        assert drafts and float(drafts[0].split()[-1]) > 0
        asyncio.run(limits(*apps[1]))
    finally:
        for _, state in apps:
            state.close()


def test_draft_policy_on_recorded_step_times():
    """The draft-length policy (spec.h) from recorded (rows, ms) steps, without a model."""
    choose = _core.choose_draft_lengths
    cheap_rows = [(1, 10.0), (5, 14.0)] * 10  # a row costs 1 ms beside a fixed 9 ms
    assert choose(cheap_rows, [(0.95, 16, 0)], 1, 64)[0] >= 8  # likely tokens for 1 ms each
    assert choose(cheap_rows, [(0.2, 16, 0)], 1, 64) == [1]  # 0.2 of a token still beats 1/10 per ms
    assert choose(cheap_rows, [(0.05, 16, 0)], 1, 64) == [0]
    assert choose(cheap_rows, [(0.95, 16, 0)], 1, 4) == [3]  # max_rows: the step's one token + 3
    assert choose(cheap_rows, [(0.05, 16, 6)], 1, 64) == [6]  # the floor, whatever the costs
    assert choose(cheap_rows, [(0.95, 16, 0)], 1, 64, max_ms=12.5) == [2]  # 10 ms + 2 rows: the step budget
    assert choose([], [(0.95, 16, 0)], 1, 64) == [0]  # nothing measured yet: no drafts
    # Rows as dear as the whole step (as a noisy fit can make them): drafting never pays ...
    steep = [(1, 10.0), (5, 50.0)] * 10
    assert choose(steep, [(0.95, 16, 0)], 1, 64) == [0]
    # ... and once the recent steps all had one row, the slope is not current: a candidate
    # whose proposals are mostly right explores with one row, so the line can learn again
    # (before this, a steep fit stopped drafting for good), while free text does not.
    stale = steep + [(1, 10.0)] * 80  # ~65 one-row steps decay the old rows below the variance floor
    assert choose(stale, [(0.95, 16, 0), (0.5, 16, 0), (0.9, 0, 0)], 3, 64) == [1, 0, 0]  # 0.5: a new request's prior
    assert choose(stale, [(0.95, 16, 0)] * 3, 3, 4) == [1, 0, 0]  # within max_rows
