"""The engine's step budget: a long prompt does not hold generating streams back.

Real compiled core on real GGUF files (a tiny random F32 llama; Gemma 3 270M
marked slow). Nothing here is timed: the budget's effect is read from the
engine's own per-step counters (``stats()``: the step's generating rows,
prompt tokens and the budget it ran under). A target of 1 microsecond is below
any step's own time, so the budget is its floor whatever the machine's speed;
speed itself is measured by ``tools/bench_stall.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import sarai_llama  # noqa: F401  (loads the CPU backend)
from sarai_llama import _core
from sarai_llama.context_config import DEFAULT_STEP_BUDGET_MS, ContextConfig
from sarai_llama.engine import Engine, Request
from sarai_llama.sampling import SamplingParams
from sarai_llama.server import settings as S

from conftest import write_tiny_llama
from test_engine import drain, greedy, make_engine, prompts

Event = _core.Event
TINY_TARGET_MS = 0.001  # below any step's time: every budgeted step takes the floor
N_BATCH = 64


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> _core.Model:
    pytest.importorskip("gguf")
    path = write_tiny_llama(tmp_path_factory.mktemp("budget") / "tiny-f32.gguf", n_ctx_train=1024, seed=5)
    return _core.Model(str(path))


def engine_with(model: _core.Model, budget_ms: float, n_seq: int = 2) -> _core.Engine:
    e = make_engine(model, n_seq, n_ctx=1024, n_batch=N_BATCH)
    e.step_budget_ms = budget_ms
    return e


def stream_then_long_prompt(engine: _core.Engine, model: _core.Model, n_long: int = 300):
    """A stream generates; a long prompt arrives. Per step until the prompt's first token:
    (stats after the step, whether the stream got a token in it). Returns (ids, steps, results)."""
    short, long_ = prompts(model, 2, length=10, seed=7)
    long_ = long_ + prompts(model, 1, length=n_long, seed=8)[0][1:]
    a = engine.submit(short, greedy(), max_tokens=400, ignore_eos=True)
    out: dict[int, list[int]] = {a: []}
    while not out[a]:
        out[a] += [e.token for e in engine.step() if e.kind == Event.TOKEN]
    b = engine.submit(long_, greedy(), max_tokens=8, ignore_eos=True)
    out[b] = []
    steps = []
    while not out[b]:
        events = engine.step()
        for e in events:
            if e.kind == Event.TOKEN:
                out[e.id].append(e.token)
        steps.append((engine.stats(), any(e.id == a and e.kind == Event.TOKEN for e in events)))
    engine.cancel(a)
    for rid, r in drain(engine).items():
        out[rid] += r["tokens"]
    return (a, b), steps, out


def test_budget_bounds_prompt_tokens_and_the_stream_gets_a_token_every_step(model):
    engine = engine_with(model, TINY_TARGET_MS)
    (a, b), steps, _ = stream_then_long_prompt(engine, model)
    floor = engine.prompt_budget(1)
    assert 0 < floor < N_BATCH - 1  # the floor, not the batch: the target is below any step
    for st, stream_got_token in steps:
        assert st["last_gen_rows"] == 1 and stream_got_token
        assert 0 < st["last_prompt_tokens"] <= st["last_budget"] == floor
    assert len(steps) >= 300 // floor
    st = engine.stats()
    assert st["max_prompt_beside_gen"] == floor and st["n_budgeted_steps"] >= len(steps) - 1
    assert st["prompt_token_ms"] > 0 and st["logits_row_ms"] > 0  # learned from its own steps


def test_without_budget_the_prompt_takes_the_whole_batch(model):
    engine = engine_with(model, 0.0)
    _, steps, _ = stream_then_long_prompt(engine, model)
    assert steps[0][0]["last_prompt_tokens"] == N_BATCH - 1 and steps[0][0]["last_budget"] == -1
    assert engine.stats()["n_budgeted_steps"] == 0
    assert engine.prompt_budget(1) == N_BATCH - 1


def test_greedy_output_is_the_same_with_and_without_budget(model):
    """F32: batch composition does not change logits, so the budget changes only timing."""
    streams, prompts_ = [], []
    for budget in (0.0, TINY_TARGET_MS):
        (a, b), _, out = stream_then_long_prompt(engine_with(model, budget), model)
        streams.append(out[a])  # cancelled after the prompt's end: a budget leaves it more tokens
        prompts_.append(out[b])
    n = min(map(len, streams))
    assert streams[0][:n] == streams[1][:n] and n > 2
    assert prompts_[0] == prompts_[1] and len(prompts_[0]) == 8


def test_a_prompt_alone_gets_full_batches(model):
    engine = engine_with(model, TINY_TARGET_MS)
    engine.reset_stats()
    p = prompts(model, 1, length=3 * N_BATCH + 10, seed=4)[0]
    rid = engine.submit(p, greedy(), max_tokens=2, ignore_eos=True)
    chunks = []
    while not engine.stats()["n_sampled"]:
        engine.step()
        st = engine.stats()
        chunks.append(st["last_prompt_tokens"])
        assert st["last_budget"] == -1  # nothing generating: no budget applies
    assert chunks == [N_BATCH, N_BATCH, N_BATCH, 10]
    assert drain(engine)[rid]["end"].finish_reason == "length"
    # Two prompts arriving together, nothing generating yet: they share full batches too.
    for q in prompts(model, 2, length=N_BATCH, seed=9):
        engine.submit(q, greedy(), max_tokens=2)
    engine.step()
    assert engine.stats()["last_prompt_tokens"] == N_BATCH and engine.stats()["last_budget"] == -1
    drain(engine)


def test_budget_is_the_target_turned_into_prompt_tokens(model):
    """prompt_budget = (target - logits_row_ms * rows) / prompt_token_ms, within [floor, room],
    and never less than the rows' own time in prompt tokens: on a machine too busy for the
    target, the prompt and the streams share each step instead of the prompt crawling."""
    engine = engine_with(model, TINY_TARGET_MS)
    floor = engine.prompt_budget(1)  # nothing measured yet: the first chunk is the floor
    stream_then_long_prompt(engine, model)
    st = engine.stats()
    row, tok = st["logits_row_ms"], st["prompt_token_ms"]
    for rows in (1, 3):
        for target in (row * rows + tok * 40.5, row * rows + tok * 1000, TINY_TARGET_MS):
            engine.step_budget_ms = target
            left = max(target - row * rows, row * rows)
            want = min(N_BATCH - rows, max(floor, math.floor(left / tok)))
            assert engine.prompt_budget(rows) == want, (rows, target)
    engine.step_budget_ms = row * 3 / 2  # the rows alone take more than the target
    assert engine.prompt_budget(3) == min(N_BATCH - 3, max(floor, math.floor(row * 3 / tok)))
    assert engine.prompt_budget(0) == N_BATCH  # nothing generating: the whole batch
    engine.step_budget_ms = 0
    assert engine.prompt_budget(2) == N_BATCH - 2


def test_the_setting_reaches_the_engine_and_bad_values_are_refused(model, tmp_path: Path):
    assert ContextConfig().step_budget_ms == DEFAULT_STEP_BUDGET_MS > 0
    for bad in (-1, float("nan"), float("inf"), "150", True):
        with pytest.raises(ValueError, match="step_budget_ms"):
            ContextConfig(step_budget_ms=bad)
    with pytest.raises(ValueError):
        engine_with(model, 0.0).step_budget_ms = -1.0
    path = write_tiny_llama(tmp_path / "m.gguf", n_ctx_train=256)
    eng = Engine(_core.Model(str(path)), ContextConfig(n_ctx=256, n_seq_max=2, step_budget_ms=40))
    assert eng._core.step_budget_ms == 40.0
    (h,) = [eng.submit(Request([1, 300, 301], SamplingParams(temperature=0.0), max_tokens=3))]
    assert len([t for piece in h for t in piece.tokens]) == 3
    assert S.parse(["m"], environ={}).step_budget_ms == DEFAULT_STEP_BUDGET_MS
    assert S.parse(["m", "--step-budget-ms", "off"], environ={}).step_budget_ms == 0.0
    assert S.parse(["m"], environ={"SARAI_STEP_BUDGET_MS": "80"}).step_budget_ms == 80.0
    for bad in ("-5", "soon", "inf"):
        with pytest.raises(SystemExit):
            S.parse(["m", "--step-budget-ms", bad], environ={})


@pytest.mark.slow
def test_gemma_stream_keeps_getting_tokens_while_a_long_prompt_is_read(gemma_path: Path):
    """Gemma at the default target: every step while the prompt is read carries the stream's
    token and no more prompt tokens than the budget derived from the measured costs."""
    m = _core.Model(str(gemma_path))
    engine = make_engine(m, 2, n_ctx=4096, n_batch=512)
    engine.step_budget_ms = DEFAULT_STEP_BUDGET_MS
    a = engine.submit(m.tokenize(b"Once upon a time"), greedy(), max_tokens=1000, ignore_eos=True)
    while not engine.stats()["n_sampled"]:
        engine.step()
    engine.step()  # one decode-only step: the logits rows' cost
    b = engine.submit([m.token_bos] + list(range(1000, 3000)), greedy(), max_tokens=1)
    steps, done = 0, False
    while not done:
        events = engine.step()
        steps += 1
        st = engine.stats()
        assert any(e.id == a and e.kind == Event.TOKEN for e in events)
        assert st["last_gen_rows"] == 1 and st["last_prompt_tokens"] <= st["last_budget"]
        done = any(e.id == b for e in events)
    st = engine.stats()
    print(f"2001-token prompt beside one stream: {steps} steps; {st['prompt_token_ms']:.2f} ms per prompt "
          f"token, {st['logits_row_ms']:.1f} ms per logits row, {st['n_budgeted_steps']} steps cut by the budget")
    engine.cancel(a)
    drain(engine)


def test_the_prompt_nearest_its_first_token_goes_first(model):
    """Shortest remaining prefill first: beside a stream, a short prompt that arrives just after
    a long one gets its first token long before the long one, which still finishes (ageing)."""
    engine = engine_with(model, TINY_TARGET_MS, n_seq=3)
    stream, long_, short = prompts(model, 3, length=10, seed=11)
    long_ = long_ + prompts(model, 1, length=300, seed=12)[0][1:]
    a = engine.submit(stream, greedy(), max_tokens=600, ignore_eos=True)
    firsts: dict[int, int] = {}
    step = 0
    while a not in firsts:  # generating (the prompt cost is learnt from the long prompt's first chunk)
        step += 1
        for e in engine.step():
            firsts.setdefault(e.id, step)
    b = engine.submit(long_, greedy(), max_tokens=2, ignore_eos=True)
    c = engine.submit(short, greedy(), max_tokens=2, ignore_eos=True)
    while b not in firsts:
        step += 1
        for e in engine.step():
            if e.kind == Event.TOKEN:
                firsts.setdefault(e.id, step)
    engine.cancel(a)
    drain(engine)
    floor = engine.prompt_budget(1)
    # First come, first served would read the long prompt's 300 tokens before the short one's.
    assert firsts[c] - firsts[a] <= 2 * (len(short) // floor + 2) < firsts[b] - firsts[a], firsts
