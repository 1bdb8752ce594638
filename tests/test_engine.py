"""sarai_llama._core.Engine: continuous batching over one llama_context.

Real compiled core on real GGUF files: tiny random-weight F32 llamas written
here (milliseconds per test) and, marked slow, Gemma 3 270M.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import sarai_llama  # noqa: F401  (loads the CPU backend)
from sarai_llama import _core

from conftest import write_tiny_llama

Event = _core.Event


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> _core.Model:
    pytest.importorskip("gguf")
    path = write_tiny_llama(tmp_path_factory.mktemp("engine") / "tiny-f32.gguf", n_ctx_train=512, seed=3)
    return _core.Model(str(path))


def make_engine(model: _core.Model, n_seq: int, n_ctx: int = 512, n_batch: int = 64) -> _core.Engine:
    p = _core.ContextParams()
    p.n_ctx = n_ctx
    p.n_batch = n_batch
    p.n_ubatch = n_batch
    p.n_threads = p.n_threads_batch = 2
    p.n_seq_max = n_seq
    return _core.Engine(model, p)


def greedy() -> _core.SamplerParams:
    s = _core.SamplerParams()
    s.temperature = 0.0
    return s


def prompts(model: _core.Model, n: int, length: int = 12, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # Skip the control and byte tokens: ordinary words make ordinary prompts.
    return [[1] + rng.integers(259, model.n_vocab, length - 1).tolist() for _ in range(n)]


def drain(engine: _core.Engine, max_steps: int = 10_000) -> dict[int, dict]:
    """Step until idle; per request id: tokens, text bytes, DONE/ERROR event."""
    out: dict[int, dict] = {}
    for _ in range(max_steps):
        if engine.idle():
            return out
        for ev in engine.step():
            r = out.setdefault(ev.id, {"tokens": [], "text": b"", "end": None, "events": []})
            r["events"].append(ev)
            r["text"] += ev.text
            if ev.kind == Event.TOKEN:
                r["tokens"].append(ev.token)
            elif ev.kind in (Event.DONE, Event.ERROR):
                r["end"] = ev
    raise AssertionError("engine did not become idle")


def alone(model: _core.Model, prompt: list[int], max_tokens: int, **kw) -> list[int]:
    engine = make_engine(model, 1, **kw)
    rid = engine.submit(prompt, greedy(), max_tokens=max_tokens, ignore_eos=True)
    return drain(engine)[rid]["tokens"]


def test_interleaved_greedy_equals_alone(model):
    ps = prompts(model, 4, seed=1)
    ps = [p[: 8 + 3 * i] for i, p in enumerate(ps)]  # distinct lengths: prompts end at different steps
    engine = make_engine(model, 4)
    ids = [engine.submit(p, greedy(), max_tokens=24, ignore_eos=True) for p in ps]
    got = drain(engine)
    for rid, p in zip(ids, ps):
        assert got[rid]["end"].finish_reason == "length"
        assert got[rid]["tokens"] == alone(model, p, 24), "batched output differs from the sequence alone"
    st = engine.stats()
    assert st["n_steps"] > 0 and 0 < st["t_decode_ms"] <= st["t_step_ms"]


def test_prompt_chunks_and_staggered_admission(model):
    # n_batch 16 < prompt lengths: prompts are split over steps and share them
    # with generating sequences; a request submitted mid-run joins the batch.
    ps = prompts(model, 3, length=40, seed=2)
    engine = make_engine(model, 3, n_batch=16)
    a = engine.submit(ps[0], greedy(), max_tokens=20, ignore_eos=True)
    early = [ev.token for _ in range(5) for ev in engine.step() if ev.kind == Event.TOKEN]
    assert 0 < len(early) < 20  # a is generating when the others arrive
    b = engine.submit(ps[1], greedy(), max_tokens=20, ignore_eos=True)
    c = engine.submit(ps[2], greedy(), max_tokens=20, ignore_eos=True)
    got = drain(engine)
    for rid, p in ((b, ps[1]), (c, ps[2])):
        assert got[rid]["tokens"] == alone(model, p, 20, n_batch=16)
    assert early + got[a]["tokens"] == alone(model, ps[0], 20, n_batch=16)


def test_cancel_one_leaves_others_unchanged(model):
    ps = prompts(model, 3, seed=4)
    engine = make_engine(model, 3)
    ids = [engine.submit(p, greedy(), max_tokens=30, ignore_eos=True) for p in ps]
    seen = {i: [] for i in ids}
    done = {}
    cancelled = False
    while not engine.idle():
        for ev in engine.step():
            if ev.kind == Event.TOKEN:
                seen[ev.id].append(ev.token)
            elif ev.kind == Event.DONE:
                done[ev.id] = ev
        if not cancelled and len(seen[ids[1]]) >= 5:
            assert engine.cancel(ids[1])
            cancelled = True
    assert done[ids[1]].finish_reason == "cancelled"
    assert len(seen[ids[1]]) < 30
    for i in (0, 2):
        assert done[ids[i]].finish_reason == "length"
        assert seen[ids[i]] == alone(model, ps[i], 30)
    assert not engine.cancel(ids[1])  # finished: unknown now


def test_cancel_from_another_thread(model):
    engine = make_engine(model, 2)
    ps = prompts(model, 2, seed=5)
    a = engine.submit(ps[0], greedy(), max_tokens=-1, ignore_eos=True)
    b = engine.submit(ps[1], greedy(), max_tokens=10, ignore_eos=True)
    t = threading.Timer(0.05, lambda: engine.cancel(a))
    t.start()
    got = drain(engine)
    t.join()
    assert got[a]["end"].finish_reason in ("cancelled", "length")
    assert got[b]["tokens"] == alone(model, ps[1], 10)


def test_context_end_finishes_with_length(model):
    engine = make_engine(model, 1, n_ctx=64)
    n_ctx = engine.n_ctx_seq
    p = prompts(model, 1, length=10, seed=6)[0]
    rid = engine.submit(p, greedy(), max_tokens=-1, ignore_eos=True)
    got = drain(engine)[rid]
    assert got["end"].kind == Event.DONE and got["end"].finish_reason == "length"
    # Every position holds a token; the last sampled one needs none.
    assert len(got["tokens"]) == n_ctx - len(p) + 1
    assert engine.kv_used() == n_ctx


def test_kv_full_with_many_sequences_ends_them_with_length(model):
    # Four sequences that each may use the whole (unified) cache: they run out
    # of cells together; the engine ends them with "length", never aborts.
    engine = make_engine(model, 4, n_ctx=64)
    ps = prompts(model, 4, length=8, seed=7)
    ids = [engine.submit(p, greedy(), max_tokens=-1, ignore_eos=True) for p in ps]
    got = drain(engine)
    assert all(got[i]["end"].finish_reason == "length" for i in ids)
    assert sum(len(got[i]["tokens"]) for i in ids) >= 64 - 4 * 8
    # Still usable: the free sequences' cells are evicted for a new request.
    rid = engine.submit(ps[0], greedy(), max_tokens=5, ignore_eos=True)
    assert drain(engine)[rid]["tokens"] == alone(model, ps[0], 5, n_ctx=64)


def test_prefix_reuse_evaluates_only_the_suffix(model):
    engine = make_engine(model, 2)
    base = prompts(model, 1, length=30, seed=8)[0]
    suffix = prompts(model, 1, length=11, seed=9)[0][1:]
    a = engine.submit(base, greedy(), max_tokens=4, ignore_eos=True)
    drain(engine)
    engine.perf_reset()
    second = base[:20] + suffix
    b = engine.submit(second, greedy(), max_tokens=1, ignore_eos=True)
    got = drain(engine)[b]
    assert got["end"].n_reused == 20
    assert engine.perf()["n_p_eval"] == len(suffix)
    assert got["tokens"] == alone(model, second, 1)
    assert a != b


def test_prefix_copied_from_a_busy_sequence(model):
    # The sequence holding the prefix is still generating: the new request
    # goes to another sequence and shares the prefix with llama_memory_seq_cp.
    engine = make_engine(model, 2)
    base = prompts(model, 1, length=30, seed=10)[0]
    a = engine.submit(base, greedy(), max_tokens=40, ignore_eos=True)
    early = [ev.token for _ in range(3) for ev in engine.step() if ev.kind == Event.TOKEN]
    second = base[:25] + [300, 301, 302]
    b = engine.submit(second, greedy(), max_tokens=6, ignore_eos=True)
    got = drain(engine)
    assert got[b]["end"].n_reused == 25
    assert got[b]["tokens"] == alone(model, second, 6)
    assert early + got[a]["tokens"] == alone(model, base, 40)


def test_identical_prompt_reevaluates_last_token(model):
    engine = make_engine(model, 1)
    p = prompts(model, 1, seed=11)[0]
    engine.submit(p, greedy(), max_tokens=3, ignore_eos=True)
    first = drain(engine)
    rid = engine.submit(p, greedy(), max_tokens=3, ignore_eos=True)
    again = drain(engine)[rid]
    assert again["end"].n_reused == len(p) - 1
    assert again["tokens"] == next(iter(first.values()))["tokens"]


def test_queued_requests_run_after_a_slot_frees(model):
    ps = prompts(model, 5, seed=12)
    engine = make_engine(model, 2)
    ids = [engine.submit(p, greedy(), max_tokens=6 + i, ignore_eos=True) for i, p in enumerate(ps)]
    assert engine.n_queued() == 5
    first = engine.step()
    assert engine.n_active() == 2 and engine.n_queued() == 3
    got = drain(engine)
    for ev in first:
        got[ev.id]["tokens"].insert(0, ev.token)
    for i, (rid, p) in enumerate(zip(ids, ps)):
        assert got[rid]["tokens"] == alone(model, p, 6 + i)
    assert engine.idle() and engine.n_active() == 0


def test_cancel_queued_and_release(model):
    ps = prompts(model, 3, seed=13)
    engine = make_engine(model, 1)
    a = engine.submit(ps[0], greedy(), max_tokens=50, ignore_eos=True)
    b = engine.submit(ps[1], greedy(), max_tokens=5, ignore_eos=True)
    c = engine.submit(ps[2], greedy(), max_tokens=5, ignore_eos=True)
    assert engine.cancel(b)
    evs = engine.step()
    assert any(e.id == b and e.kind == Event.DONE and e.finish_reason == "cancelled" for e in evs)
    for _ in range(3):
        engine.step()
    assert engine.release(a)  # the caller ends it (a stop string): no event
    got = drain(engine)
    assert a not in got and got[c]["tokens"] == alone(model, ps[2], 5)
    assert not engine.release(a)


def test_invalid_requests_raise_value_error(model):
    engine = make_engine(model, 2, n_ctx=64)
    ok = prompts(model, 1)[0]
    with pytest.raises(ValueError, match="empty"):
        engine.submit([], greedy())
    with pytest.raises(ValueError, match="out of range"):
        engine.submit([1, model.n_vocab], greedy())
    with pytest.raises(ValueError, match="out of range"):
        engine.submit([1, -1], greedy())
    with pytest.raises(ValueError, match="shorter"):
        engine.submit([5] * engine.n_ctx_seq, greedy())
    for field, value in (("temperature", float("nan")), ("top_p", 2.0), ("min_p", -0.5), ("top_k", -3),
                         ("mirostat", 7), ("typical_p", 0.0)):
        s = greedy()
        setattr(s, field, value)
        with pytest.raises(ValueError, match=field):
            engine.submit(ok, s)
    s = greedy()
    s.grammar = "root ::= ("
    with pytest.raises(ValueError, match="grammar"):
        engine.submit(ok, s)
    s = greedy()
    s.logit_bias = [(model.n_vocab + 5, 1.0)]
    with pytest.raises(ValueError, match="out of range"):
        engine.submit(ok, s)
    with pytest.raises(ValueError, match="n_probs"):
        engine.submit(ok, greedy(), n_probs=model.n_vocab + 1)
    with pytest.raises(ValueError, match="max_tokens"):
        engine.submit(ok, greedy(), max_tokens=-2)
    with pytest.raises(ValueError, match="not waiting"):
        engine.provide_token(12345, 1)
    with pytest.raises(ValueError, match="n_seq"):
        make_engine(model, 0)
    assert engine.idle()  # nothing was queued by the failures


def test_external_sampling_round_trip(model):
    p = prompts(model, 1, seed=14)[0]
    want = alone(model, p, 8)
    engine = make_engine(model, 2)
    ext = engine.submit(p, greedy(), max_tokens=8, ignore_eos=True, external_sampling=True, n_probs=2)
    other = engine.submit(prompts(model, 1, seed=15)[0], greedy(), max_tokens=12, ignore_eos=True)
    tokens, end, n_need = [], None, 0
    use_sample_with = False
    while not engine.idle():
        for ev in engine.step():
            if ev.id != ext:
                continue
            assert ev.kind == Event.NEED_TOKEN
            n_need += 1
            logits = engine.logits(ext)
            assert logits.shape == (model.n_vocab,)
            if use_sample_with:  # the request's own (greedy) chain on caller-modified logits
                evs = engine.sample_with(ext, logits + 0.0)
            else:
                evs = engine.provide_token(ext, int(np.argmax(logits)))
            use_sample_with = not use_sample_with
            for e in evs:
                if e.kind == Event.TOKEN:
                    tokens.append(e.token)
                    assert e.logprob <= 0 and len(e.top) == 2 and e.top[0][0] == e.token
                else:
                    end = e
    assert tokens == want and n_need == 8
    assert end is not None and end.finish_reason == "length"
    with pytest.raises(ValueError, match="not waiting"):
        engine.logits(other)


def test_logprobs_are_a_log_softmax_of_the_raw_logits(model):
    p = prompts(model, 1, seed=16)[0]
    engine = make_engine(model, 1)
    rid = engine.submit(p, greedy(), max_tokens=1, n_probs=5, external_sampling=True)
    (need,) = [e for e in engine.step() if e.id == rid]
    raw = engine.logits(rid).astype(np.float64)
    lsm = raw - (raw.max() + math.log(np.exp(raw - raw.max()).sum()))
    (tok_ev, done) = engine.provide_token(rid, 7)
    assert tok_ev.logprob == pytest.approx(lsm[7], abs=1e-4)
    best = np.argsort(-lsm)[:5]
    assert [t for t, _ in tok_ev.top] == best.tolist()
    assert [lp for _, lp in tok_ev.top] == pytest.approx(lsm[best].tolist(), abs=1e-4)
    assert done.finish_reason == "length" and need.kind == Event.NEED_TOKEN


def test_utf8_bytes_concatenate_to_detokenize(model):
    ps = prompts(model, 3, seed=17)
    engine = make_engine(model, 3)
    s = _core.SamplerParams()
    s.temperature = 1.5  # wander through the byte tokens too
    s.top_k = 0
    s.top_p = 1.0
    s.min_p = 0.0
    s.seed = 42
    ids = [engine.submit(p, s, max_tokens=60, ignore_eos=True) for p in ps]
    got = drain(engine)
    for rid in ids:
        assert got[rid]["text"] == model.detokenize(got[rid]["tokens"])
        # No event splits a character: a chunk may end in an unfinished lead
        # byte only when the next byte shows it can never be finished.
        full, pos = got[rid]["text"], 0
        for ev in got[rid]["events"]:
            pos += len(ev.text)
            if ev.text and incomplete_tail(ev.text) and pos < len(full):
                assert full[pos] & 0xC0 != 0x80, f"character split after byte {pos}"


def incomplete_tail(b: bytes) -> int:
    """Bytes at the end of ``b`` that start a UTF-8 character without finishing it."""
    for back in range(1, min(4, len(b)) + 1):
        c = b[-back]
        if c & 0xC0 == 0x80:
            continue
        need = 2 if c & 0xE0 == 0xC0 else 3 if c & 0xF0 == 0xE0 else 4 if c & 0xF8 == 0xF0 else 1
        return back if need > back else 0
    return 0


def test_eos_stops_unless_ignored(model):
    # Force the end-of-sequence token with a logit bias.
    s = greedy()
    s.logit_bias = [(model.token_eos, 1e4)]
    engine = make_engine(model, 1)
    p = prompts(model, 1, seed=18)[0]
    rid = engine.submit(p, s, max_tokens=5)
    got = drain(engine)[rid]
    assert got["tokens"] == [model.token_eos] and got["end"].finish_reason == "stop"
    rid = engine.submit(p, s, max_tokens=5, ignore_eos=True)
    got = drain(engine)[rid]
    assert got["tokens"] == [model.token_eos] * 5 and got["end"].finish_reason == "length"
    assert all(e.eog for e in got["events"] if e.kind == Event.TOKEN)


def test_clear_and_threads(model):
    engine = make_engine(model, 2)
    p = prompts(model, 1, seed=19)[0]
    engine.submit(p, greedy(), max_tokens=50, ignore_eos=True)
    engine.step()
    engine.set_threads(1, 1)
    with pytest.raises(ValueError):
        engine.set_threads(0, 1)
    engine.clear()
    assert engine.idle() and engine.kv_used() == 0
    rid = engine.submit(p, greedy(), max_tokens=3, ignore_eos=True)
    assert drain(engine)[rid]["end"].n_reused == 0


@pytest.mark.slow
def test_gemma_batched_vs_alone_agreement(gemma_path: Path):
    """Reports (does not assert) how often batched greedy output equals the alone run.

    llama.cpp's logits depend on how tokens are grouped into batches
    (quantized matmuls take other kernels for other batch sizes), so on a real
    quantized model batched and alone runs may diverge after a few tokens.
    """
    m = _core.Model(str(gemma_path))
    texts = [b"The capital of France is", b"def fibonacci(n):", b"Once upon a time", b"The three laws of"]
    ps = [m.tokenize(t) for t in texts]
    n_gen = 32
    engine = make_engine(m, 4, n_ctx=1024, n_batch=256)
    ids = [engine.submit(p, greedy(), max_tokens=n_gen, ignore_eos=True) for p in ps]
    got = drain(engine)
    same_total = 0
    for rid, p, t in zip(ids, ps, texts):
        single = alone(m, p, n_gen, n_ctx=1024, n_batch=256)
        batched = got[rid]["tokens"]
        prefix = next((i for i, (x, y) in enumerate(zip(single, batched)) if x != y), n_gen)
        same_total += prefix
        print(f"{t!r}: batched == alone for the first {prefix}/{n_gen} tokens")
        assert len(batched) == n_gen
    print(f"Gemma agreement: {same_total}/{4 * n_gen} tokens before the first divergence")


@pytest.mark.slow
def test_gemma_cancel_aborts_a_long_prompt(gemma_path: Path):
    """A cancel that arrives during the decode of a long prompt aborts that decode."""
    m = _core.Model(str(gemma_path))
    engine = make_engine(m, 2, n_ctx=2048, n_batch=1024)
    prompt = [m.token_bos] + list(range(1000, 2000))
    t0 = time.perf_counter()
    rid = engine.submit(prompt, greedy(), max_tokens=4)
    timer = threading.Timer(0.3, lambda: engine.cancel(rid))
    timer.start()
    events = engine.step()
    elapsed = time.perf_counter() - t0
    timer.join()
    events += engine.step()
    (done,) = [e for e in events if e.id == rid]
    assert done.kind == Event.DONE and done.finish_reason == "cancelled"
    assert engine.kv_used() == 0
    print(f"cancelled a 1001-token prompt after {elapsed:.2f} s")
    # Had the aborted chunk left cells behind, positions 0.. of this sequence
    # would clash with them (llama_decode refuses) or change the output.
    rid = engine.submit(prompt[:50], greedy(), max_tokens=4, ignore_eos=True)
    got = drain(engine)[rid]
    assert got["end"].finish_reason == "length" and got["end"].n_reused == 0
    assert got["tokens"] == alone(m, prompt[:50], 4, n_ctx=2048, n_batch=1024)
