"""``sarai-llama serve --cache-ram/--cache-dir`` end to end: multi-turn conversations through
the ``openai`` client, more conversations than ``--parallel``, on the tiny F32 llama (where
a restored state continues exactly as a prefill would)."""

from __future__ import annotations

import concurrent.futures
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openai", reason="pip install sarai-llama[test]")
pytest.importorskip("fastapi", reason="pip install sarai-llama[server]")
pytest.importorskip("prometheus_client", reason="pip install sarai-llama[server]")

from conftest import write_tiny_llama  # noqa: E402
from helpers import Server  # noqa: E402

CONVERSATIONS, PARALLEL = 5, 2
# Flash attention and the step budget off: see tests/test_llama_cache.py's new_llama for why.
ARGS = ("--parallel", str(PARALLEL), "--ctx-size", "4096", "-fa", "off", "--step-budget-ms", "off")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_llama(tmp_path_factory.mktemp("sc-serve") / "tiny-f32.gguf", n_ctx_train=2048, seed=21)


def words(seed: int, n: int) -> str:
    return " ".join(np.random.default_rng(seed).choice(list("bcdefghijklmnopqrstuvwxyz"), n))


def new_histories() -> list[list[dict[str, Any]]]:
    system = {"role": "system", "content": f"the {words(0, 60)}"}
    return [[system] for _ in range(CONVERSATIONS)]


def turn(server: Server, histories: list[list[dict[str, Any]]], t: int) -> list[str]:
    """Turn ``t`` of every conversation, ``PARALLEL`` at a time; the replies join the histories."""
    client, mid = server.client(), server.model_id()

    def ask(c: int) -> str:
        histories[c].append({"role": "user", "content": words(100 * c + t, 10)})
        out = client.chat.completions.create(model=mid, messages=histories[c], max_tokens=8, temperature=0, seed=1)
        return out.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        replies = list(pool.map(ask, range(CONVERSATIONS)))
    for c, reply in enumerate(replies):
        histories[c].append({"role": "assistant", "content": reply})
    return replies


def stop_gracefully(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0, server.output()
    server.stop()


def test_conversations_restore_from_ram_and_after_a_restart_from_disk(model, tmp_path):
    folder = tmp_path / "states"
    plain, cached = Server(model, *ARGS, "--cache-ram", "0"), Server(model, *ARGS, "--cache-ram", "64",
                                                                     "--cache-dir", str(folder))
    try:
        assert "state cache: off (--cache-ram 0)" in plain.output()
        assert "state cache: 64 MiB RAM (--cache-ram 64), disk" in cached.output()
        h_plain, h_cached = new_histories(), new_histories()
        for t in range(3):
            assert turn(cached, h_cached, t) == turn(plain, h_plain, t)
        m, m0 = cached.metrics(), plain.metrics()
        # Turns 2 and 3 of conversations whose sequence another had taken restored their
        # history (system prompt, earlier turns) instead of reading it again.
        assert m["sarai:state_cache_hits_total"] >= 4
        assert m["sarai:state_cache_restored_tokens_total"] >= 4 * 60
        assert m["llamacpp:prompt_tokens_total"] < m0["llamacpp:prompt_tokens_total"]
        assert "sarai:state_cache_hits_total" not in m0
        before = len(list(folder.glob("*.kvstate")))  # written through when a sequence was taken
        stop_gracefully(cached)  # the sequences still holding conversations are saved too
        files = len(list(folder.glob("*.kvstate")))
        assert files > before >= CONVERSATIONS - PARALLEL
        restarted = Server(model, *ARGS, "--cache-ram", "64", "--cache-dir", str(folder))
        try:
            assert f"({files} states there)" in restarted.output()
            assert turn(restarted, h_cached, 3) == turn(plain, h_plain, 3)
            m = restarted.metrics()
            assert m["sarai:state_cache_hits_total"] == CONVERSATIONS  # every history came back from disk
            assert m["sarai:state_cache_disk_loads_total"] == CONVERSATIONS
            # Each restored its whole history (system prompt, three turns); only the new message
            # and the re-tokenized end of the last reply were read (measured: 847 and 209 tokens).
            assert m["sarai:state_cache_restored_tokens_total"] >= CONVERSATIONS * (60 + 3 * (10 + 8))
            assert m["llamacpp:prompt_tokens_total"] < m["sarai:state_cache_restored_tokens_total"] / 2
        finally:
            restarted.stop()
    finally:
        plain.stop()
        cached.stop()
