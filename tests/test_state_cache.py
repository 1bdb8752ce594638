"""The state cache (issue 26): KV states of taken sequences kept in RAM / on disk and restored.

Real compiled core on real GGUF files: tiny random-weight F32 llamas and Gemma 3
models (sliding window) written by ``tools/random_gguf.py``, and Gemma 3 270M
Q4_K_M. The budget's memory-limit detection reads recorded cgroup trees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sarai_llama  # noqa: F401  (loads the CPU backend)
from sarai_llama import _core, memory, state_cache

from conftest import write_tiny_llama, write_tree

Event = _core.Event
MIB = 1 << 20


# ------------------------------------------------------------------ memory limit (recorded trees)
def test_cgroup_v2_memory_limit_is_the_smallest_on_the_path(tmp_path):
    root = write_tree(tmp_path, {
        "proc/self/cgroup": "0::/kubepods/pod1/ctr\n",
        "sys/fs/cgroup/kubepods/memory.max": "max\n",
        "sys/fs/cgroup/kubepods/pod1/memory.max": f"{14 << 30}\n",
        "sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "max\n",
        "sys/fs/cgroup/kubepods/pod1/ctr/memory.high": "max\n",
    })
    assert memory.cgroup_memory_limit(root) == 14 << 30


def test_cgroup_v2_memory_high_counts(tmp_path):
    root = write_tree(tmp_path, {"proc/self/cgroup": "0::/x\n", "sys/fs/cgroup/x/memory.max": f"{8 << 30}\n",
                                 "sys/fs/cgroup/x/memory.high": f"{6 << 30}\n"})
    assert memory.cgroup_memory_limit(root) == 6 << 30


def test_cgroup_v1_memory_limit(tmp_path):
    root = write_tree(tmp_path, {
        "proc/self/cgroup": "12:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n",
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{2 << 30}\n",
        "sys/fs/cgroup/memory/docker/memory.limit_in_bytes": "9223372036854771712\n",
    })
    assert memory.cgroup_memory_limit(root) == 2 << 30


def test_cgroup_v1_unlimited_and_mountinfo(tmp_path):
    # A v1 hierarchy mounted where mountinfo says, with the container's path as its root.
    root = write_tree(tmp_path, {
        "proc/self/mountinfo": "30 25 0:26 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
        "proc/self/cgroup": "9:memory:/docker/abc\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    })
    assert memory.cgroup_memory_limit(root) is None


def test_budget_under_a_limit_leaves_model_kv_and_margin(tmp_path):
    root = write_tree(tmp_path, {
        "proc/self/cgroup": "0::/pod\n", "sys/fs/cgroup/pod/memory.max": f"{4 << 30}\n",
        "proc/self/status": f"Name:\tpython\nRssAnon:\t{300 * 1024} kB\n",
    })
    budget, why = memory.explain_cache_budget(1 << 30, 200 * MIB, root)
    margin = max(memory.MARGIN_BYTES, int((4 << 30) * memory.MARGIN_SHARE))
    assert budget == (4 << 30) - (1 << 30) - 300 * MIB - margin
    assert "cgroup memory limit 4096 MiB" in why and "model 1024 MiB" in why
    # The KV cache counts even before its pages are resident.
    budget2, _ = memory.explain_cache_budget(1 << 30, 500 * MIB, root)
    assert budget2 == budget - 200 * MIB
    # A model that fills the pod leaves nothing: never negative.
    assert memory.explain_cache_budget(4 << 30, 0, root)[0] == 0


def test_budget_without_a_limit_is_a_share_of_ram(tmp_path):
    root = write_tree(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "max\n",
                                 "proc/meminfo": f"MemTotal: {16 << 20} kB\nMemAvailable: {6 << 20} kB\n"})
    budget, why = memory.explain_cache_budget(1 << 30, 0, root)
    assert budget == min(int((16 << 30) * memory.RAM_SHARE), (6 << 30) // 2) == 3 << 30
    assert "no memory limit" in why


# ------------------------------------------------------------------ the engine with a cache
def make_engine(model: _core.Model, n_seq: int = 1, n_ctx: int = 512, n_batch: int = 64,
                cache: _core.StateCache | None = None) -> _core.Engine:
    p = _core.ContextParams()
    p.n_ctx = n_ctx
    p.n_batch = p.n_ubatch = n_batch
    p.n_threads = p.n_threads_batch = 2
    p.n_seq_max = n_seq
    engine = _core.Engine(model, p)
    if cache is not None:
        engine.state_cache = cache
    return engine


def greedy() -> _core.SamplerParams:
    s = _core.SamplerParams()
    s.temperature = 0.0
    return s


def words(model: _core.Model, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(259, model.n_vocab, n).tolist()


def run(engine: _core.Engine, prompt: list[int], n: int) -> tuple[list[int], _core.Event]:
    rid = engine.submit(prompt, greedy(), max_tokens=n, ignore_eos=True)
    tokens, end = [], None
    while not engine.idle():
        for ev in engine.step():
            if ev.id == rid and ev.kind == Event.TOKEN:
                tokens.append(ev.token)
            elif ev.id == rid:
                end = ev
    assert end is not None and end.kind == Event.DONE
    return tokens, end


def conversation(engine: _core.Engine, model: _core.Model, seed: int, turns: int = 3,
                 system: int = 60) -> tuple[list[list[int]], list[int]]:
    """Conversations A and B alternate on one sequence: every turn of A finds its sequence taken by B.

    Returns A's replies per turn and the n_reused of A's turns."""
    sys_tokens = [1] + words(model, system, seed)
    hist = {"a": list(sys_tokens), "b": list(sys_tokens)}
    replies, reused = [], []
    for t in range(turns):
        for who in ("a", "b"):
            hist[who] += words(model, 12, seed * 100 + t * 2 + (who == "b"))
            out, end = run(engine, hist[who], 6)
            # The next turn's prompt holds the reply, as a chat history does (the last
            # sampled token was never decoded: the cache ends before it).
            hist[who] += out
            if who == "a":
                replies.append(out)
                reused.append(end.n_reused)
    return replies, reused


@pytest.fixture(scope="module")
def llama_f32(tmp_path_factory) -> _core.Model:
    pytest.importorskip("gguf")
    path = write_tiny_llama(tmp_path_factory.mktemp("sc") / "llama.gguf", n_ctx_train=1024, seed=5)
    return _core.Model(str(path))


@pytest.fixture(scope="module")
def gemma_f32(tmp_path_factory) -> tuple[_core.Model, Path]:
    pytest.importorskip("gguf")
    path = write_tiny_llama(tmp_path_factory.mktemp("sc") / "gemma3.gguf", n_ctx_train=1024, seed=6,
                            sliding_window=16)
    return _core.Model(str(path)), path


def new_cache(path: Path | str, ram: int = 64 * MIB) -> _core.StateCache:
    return state_cache.create(path, "test", ram)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restored_turns_equal_prefill_llama_f32(llama_f32, tmp_path, seed):
    cache = _core.StateCache(64 * MIB, "llama-test")
    with_cache = conversation(make_engine(llama_f32, cache=cache), llama_f32, seed)
    without = conversation(make_engine(llama_f32), llama_f32, seed)
    assert with_cache[0] == without[0]  # greedy replies token for token
    s = cache.stats()
    assert s["hits"] == 4 and s["restored_tokens"] > 0  # turns 2 and 3 of A and of B
    # Later turns restored their whole history (system, earlier messages and replies, less the
    # reply's last token, never decoded); without the cache only the shared system prompt is reused.
    assert with_cache[1][1:] == [61 + 12 + 5, 61 + 2 * (12 + 6) - 1]
    assert without[1][1:] == [61, 61]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restored_turns_equal_prefill_sliding_window_f32(gemma_f32, seed):
    # Histories far longer than the 16-token window: today a sliding-window sequence
    # taken by another request loses everything; the cache keeps it.
    model, path = gemma_f32
    # 300 system tokens: the sliding-window cache (256 cells here) wraps around.
    cache = new_cache(path)
    with_cache = conversation(make_engine(model, cache=cache), model, seed, system=300)
    without = conversation(make_engine(model), model, seed, system=300)
    assert with_cache[0] == without[0]
    assert cache.stats()["hits"] == 4
    assert with_cache[1][1:] == [301 + 12 + 5, 301 + 2 * (12 + 6) - 1]
    assert without[1][1:] == [301, 301]  # the other conversation's window covers the system prompt only


def test_sliding_window_own_sequence_continues(gemma_f32):
    # A finished sequence's own last window is intact: its next turn reuses it whole
    # (the window rule is exact: cells from keep - n_swa + 1 on).
    model, _ = gemma_f32
    engine = make_engine(model)
    prompt = [1] + words(model, 80, 7)
    out, _ = run(engine, prompt, 6)
    nxt = prompt + out + words(model, 10, 8)
    got, end = run(engine, nxt, 4)
    assert end.n_reused == len(prompt) + len(out) - 1
    assert got == run(make_engine(model), nxt, 4)[0]


def test_short_histories_are_not_cached(llama_f32):
    cache = _core.StateCache(64 * MIB, "x")
    engine = make_engine(llama_f32, cache=cache)
    run(engine, [1] + words(llama_f32, 10, 1), 4)
    run(engine, [1] + words(llama_f32, 10, 2), 4)
    assert cache.stats()["saves"] == 0


def test_eviction_keeps_the_budget_and_the_recent(llama_f32):
    probe = _core.StateCache(64 * MIB, "x")
    engine = make_engine(llama_f32, cache=probe)
    prompts = [[1] + words(llama_f32, 50, 100 + i) for i in range(6)]
    for p in prompts:
        run(engine, p, 2)
    one = probe.stats()["bytes"] // probe.stats()["entries"]
    cache = _core.StateCache(int(one * 2.5), "x")  # room for two states
    engine = make_engine(llama_f32, cache=cache)
    for p in prompts:
        run(engine, p, 2)
        s = cache.stats()
        assert s["bytes"] <= s["budget_bytes"]
    s = cache.stats()
    assert s["entries"] == 2 and s["evictions"] == 3  # 5 saved (the last one still lives in its sequence)
    # The most recent states are kept: the 5th conversation restores (this request's admission
    # stashes the 6th, which evicts the 4th), the 1st does not.
    _, end = run(engine, prompts[4] + [300, 301], 1)
    assert end.n_reused >= 50
    _, end = run(engine, prompts[0] + [300, 301], 1)
    assert end.n_reused <= 1
    cache.budget = 0
    assert cache.stats()["entries"] == 0 and cache.stats()["bytes"] == 0


def test_disk_tier_survives_a_restart_and_refuses_damaged_files(llama_f32, tmp_path):
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"model bytes")
    d = tmp_path / "states"
    cache = state_cache.create(model_file, "layout", 64 * MIB, str(d), 64 * MIB)
    engine = make_engine(llama_f32, cache=cache)
    a = [1] + words(llama_f32, 60, 1)
    out_a, _ = run(engine, a, 4)
    run(engine, [1] + words(llama_f32, 60, 2), 4)  # takes A's sequence: A goes to RAM and disk
    files = sorted(d.glob("*.kvstate"))
    assert len(files) == 1 and not list(d.glob("*.tmp*"))

    # A restarted process: a new cache on the same directory, a new engine.
    cache2 = state_cache.create(model_file, "layout", 64 * MIB, str(d), 64 * MIB)
    assert cache2.stats()["disk_entries"] == 1 and not cache2.take_warnings()
    engine2 = make_engine(llama_f32, cache=cache2)
    nxt = a + out_a + [300, 301, 302]
    got, end = run(engine2, nxt, 4)
    assert end.n_reused == len(a) + len(out_a) - 1
    assert cache2.stats()["disk_loads"] == 1
    assert got == run(make_engine(llama_f32), nxt, 4)[0]

    # Another model's cache ignores the file, with a warning.
    other = tmp_path / "other.gguf"
    other.write_bytes(b"other model bytes")
    foreign = state_cache.create(other, "layout", 64 * MIB, str(d), 64 * MIB)
    assert foreign.stats()["disk_entries"] == 0 and foreign.stats()["disk_rejected"] == 1
    assert "another model" in " ".join(foreign.take_warnings())

    # A damaged file (one byte of its data flipped) is refused when loaded, never restored.
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    cache3 = state_cache.create(model_file, "layout", 64 * MIB, str(d), 64 * MIB)
    engine3 = make_engine(llama_f32, cache=cache3)
    _, end = run(engine3, nxt, 1)
    assert end.n_reused == 0
    assert cache3.stats()["disk_rejected"] == 1 and cache3.stats()["hits"] == 0
    assert "checksum" in " ".join(cache3.take_warnings())

    # A truncated file and a stranger's file are refused when the directory is read.
    files[0].write_bytes(bytes(data[:100]))
    (d / "junk.kvstate").write_bytes(b"not a state")
    cache4 = state_cache.create(model_file, "layout", 64 * MIB, str(d), 64 * MIB)
    warnings = " ".join(cache4.take_warnings())
    assert cache4.stats()["disk_rejected"] == 2 and "truncated" in warnings and "not a sarai-llama" in warnings


def test_disk_tier_stays_within_its_budget(llama_f32, tmp_path):
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"model")
    d = tmp_path / "states"
    probe = state_cache.create(model_file, "l", 64 * MIB, str(d), 64 * MIB)
    engine = make_engine(llama_f32, cache=probe)
    prompts = [[1] + words(llama_f32, 50, 200 + i) for i in range(5)]
    for p in prompts:
        run(engine, p, 2)
    size = max(f.stat().st_size for f in d.glob("*.kvstate"))
    for f in d.glob("*.kvstate"):
        f.unlink()
    cache = state_cache.create(model_file, "l", 64 * MIB, str(d), int(size * 2.5))
    engine = make_engine(llama_f32, cache=cache)
    for p in prompts:
        run(engine, p, 2)
    assert len(list(d.glob("*.kvstate"))) == 2
    assert sum(f.stat().st_size for f in d.glob("*.kvstate")) <= size * 2.5


@pytest.mark.slow
def test_gemma_q4_restore(gemma_path: Path):
    """Gemma 3 270M (sliding window 512, Q4_K_M): later turns restore their history.

    Greedy replies with and without the cache are compared and reported, not asserted:
    on quantized weights llama.cpp's logits depend on how tokens are grouped into
    batches (restored history + new tokens vs one long prefill), so a near-tie can flip.
    """
    model = _core.Model(str(gemma_path))
    cache = new_cache(gemma_path, 256 * MIB)
    with_cache = conversation(make_engine(model, n_ctx=2048, n_batch=256, cache=cache), model, 4, system=600)
    without = conversation(make_engine(model, n_ctx=2048, n_batch=256), model, 4, system=600)
    assert cache.stats()["hits"] == 4
    assert all(r >= 600 + 12 for r in with_cache[1][1:])
    same = sum(a == b for a, b in zip(with_cache[0], without[0]))
    print(f"gemma q4: {same} of {len(without[0])} replies equal with and without the cache")
