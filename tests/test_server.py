"""``sarai-llama serve`` end to end: real server processes on 127.0.0.1, the official ``openai`` client.

Every test talks HTTP to a ``sarai-llama serve`` subprocess running the real
compiled core on a real GGUF (the tiny random-weight F32 llama: milliseconds
per token; Gemma 3 270M where a generation must last long enough to act on it
mid-way). Loops are bounded; nothing is mocked.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="pip install sarai-llama[test]")
httpx = pytest.importorskip("httpx", reason="pip install sarai-llama[test]")
pytest.importorskip("fastapi", reason="pip install sarai-llama[server]")
pytest.importorskip("prometheus_client", reason="pip install sarai-llama[server]")

from conftest import free_port, write_tiny_llama  # noqa: E402
from helpers import STARTUP_S, Server  # noqa: E402

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_llama(tmp_path_factory.mktemp("serve") / "tiny-f32.gguf", n_ctx_train=1024, seed=5)


@pytest.fixture(scope="module")
def server(tiny: Path) -> Iterator[Server]:
    s = Server(tiny, "--parallel", "8", "--ctx-size", "2048", "--max-queue", "32", "--seed", "1")
    yield s
    s.stop()


def greedy(**kw: object) -> dict[str, object]:
    # ignore_eos: a random-weight model may sample its end token at any step; the lengths stay fixed.
    return {"temperature": 0, "extra_body": {"ignore_eos": True, **kw}}


# ------------------------------------------------------------------------------ basics
def test_models_list(server: Server, tiny: Path) -> None:
    models = server.client().models.list()
    assert [m.id for m in models.data] == [tiny.name]


def test_completion(server: Server) -> None:
    c = server.client()
    out = c.completions.create(model=server.model_id(), prompt="hello world", max_tokens=8, **greedy())
    assert out.object == "text_completion"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 8 and out.usage.prompt_tokens > 0
    assert out.choices[0].text
    again = c.completions.create(model=server.model_id(), prompt="hello world", max_tokens=8, **greedy())
    assert again.choices[0].text == out.choices[0].text  # greedy is deterministic across requests
    # one JSON access-log line per request, with the ids and token counts
    deadline = time.monotonic() + 10  # written once the response is out: it may trail the client a little
    while True:
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        mine = [rec for rec in lines if rec.get("id") == again.id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(mine) == 1, lines[-3:]
    rec = mine[0]
    assert rec["path"] == "/v1/completions" and rec["status"] == 200 and rec["completion_tokens"] == 8
    assert rec["prompt_tokens"] == again.usage.prompt_tokens and rec["request_id"] and rec["duration_ms"] > 0


def test_completion_stream_with_usage(server: Server) -> None:
    c = server.client()
    full = c.completions.create(model=server.model_id(), prompt="one two", max_tokens=12, **greedy())
    chunks = list(c.completions.create(model=server.model_id(), prompt="one two", max_tokens=12, stream=True,
                                       stream_options={"include_usage": True}, **greedy()))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == full.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_chat_and_stream(server: Server) -> None:
    c = server.client()
    msgs = [{"role": "user", "content": "Say something"}]
    out = c.chat.completions.create(model=server.model_id(), messages=msgs, max_tokens=10, **greedy())
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 10
    stream = c.chat.completions.create(model=server.model_id(), messages=msgs, max_tokens=10, stream=True,
                                       stream_options={"include_usage": True}, **greedy())
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == out.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10 and chunks[-1].usage.prompt_tokens == out.usage.prompt_tokens


def test_n_choices(server: Server) -> None:
    c = server.client()
    mid = server.model_id()
    out = c.completions.create(model=mid, prompt="pick", max_tokens=6, n=3, temperature=1.5, seed=7,
                               extra_body={"ignore_eos": True, "top_k": 0, "min_p": 0})
    assert [ch.index for ch in out.choices] == [0, 1, 2]
    assert out.usage.completion_tokens == 18
    assert len({ch.text for ch in out.choices}) > 1  # seeds differ per choice
    chunks = list(c.chat.completions.create(model=mid, messages=[{"role": "user", "content": "hi"}], n=2,
                                            max_tokens=5, stream=True, **greedy()))
    for i in (0, 1):
        mine = [ch.choices[0] for ch in chunks if ch.choices and ch.choices[0].index == i]
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "length"
    texts = ["".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices and ch.choices[0].index == i)
             for i in (0, 1)]
    assert texts[0] == texts[1] and texts[0]  # greedy: both choices equal


def test_raw_sse_framing(server: Server) -> None:
    """Exactly what the OpenAI client parses: ``data: {json}`` events separated by blank lines, then [DONE]."""
    body = {"model": server.model_id(), "prompt": "abc", "max_tokens": 5, "stream": True, "temperature": 0,
            "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert e.startswith("data: ") and "\n" not in e
        json.loads(e[6:])


def test_tokenize_detokenize(server: Server) -> None:
    toks = httpx.post(server.url + "/tokenize", json={"content": "hello world"}, timeout=10).json()["tokens"]
    assert toks and all(isinstance(t, int) for t in toks)
    text = httpx.post(server.url + "/detokenize", json={"tokens": toks}, timeout=10).json()["content"]
    assert text.strip() == "hello world"
    bad = httpx.post(server.url + "/detokenize", json={"tokens": [10**9]}, timeout=10)
    assert bad.status_code == 400


def test_extension_fields_honoured_unknown_ignored(server: Server) -> None:
    c = server.client()
    mid = server.model_id()
    # A grammar that allows only "a" characters: every generated piece obeys it.
    out = c.completions.create(model=mid, prompt="x", max_tokens=6, temperature=0,
                               extra_body={"grammar": 'root ::= "a"+', "top_k": 5, "min_p": 0.1,
                                           "repeat_penalty": 1.1, "cache_prompt": True, "no_such_field": 1})
    assert set(out.choices[0].text) <= {"a"} and out.choices[0].text
    # n_probs (llama-server's name) gives logprobs with that many alternatives
    out = c.completions.create(model=mid, prompt="x", max_tokens=3, **greedy(n_probs=2))
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == 3 and all(len(t) >= 1 for t in lp.top_logprobs)
    # ignore_eos honoured: a max_tokens-long answer even on a model that may end early
    out = c.completions.create(model=mid, prompt="x", max_tokens=40, **greedy())
    assert out.usage.completion_tokens == 40


def test_embeddings_base64_and_float(server: Server) -> None:
    c = server.client()
    mid = server.model_id()
    default = c.embeddings.create(model=mid, input=["hello world", "bye"])  # the client asks for base64
    floats = c.embeddings.create(model=mid, input=["hello world", "bye"], encoding_format="float")
    assert len(default.data) == len(floats.data) == 2
    for a, b in zip(default.data, floats.data):
        assert len(a.embedding) == len(b.embedding) == 64  # the tiny model's n_embd
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
        assert sum(x * x for x in b.embedding) == pytest.approx(1.0, rel=1e-3)  # normalised, like OpenAI's
    assert floats.data[0].embedding != pytest.approx(floats.data[1].embedding)
    assert floats.usage.prompt_tokens > 0
    r = httpx.post(server.url + "/v1/embeddings", json={"model": mid, "input": "word " * 5000}, timeout=30)
    assert r.status_code == 400


# ------------------------------------------------------------------------------ bad input
def test_bad_requests_get_4xx_and_server_keeps_serving(server: Server) -> None:
    url = server.url
    mid = server.model_id()
    cases = [
        (b"{not json", 400),
        (json.dumps({"model": mid, "prompt": "x", "max_tokens": "many"}).encode(), 400),
        (json.dumps({"model": mid, "prompt": "x", "temperature": "hot"}).encode(), 400),
        (json.dumps({"model": mid, "prompt": "x", "temperature": -1}).encode(), 400),
        (json.dumps({"model": mid, "prompt": "x", "max_tokens": 10**12}).encode(), 400),
        (json.dumps({"model": mid, "prompt": "x", "max_tokens": 0}).encode(), 400),
        (json.dumps({"model": mid, "prompt": "word " * 3000, "max_tokens": 4}).encode(), 400),
        (json.dumps({"model": mid, "prompt": [5, -3]}).encode(), 400),
        (json.dumps({"model": mid, "prompt": "x", "grammar": "root ::= ("}).encode(), 400),
        (json.dumps({"model": "gpt-9", "prompt": "x"}).encode(), 404),
        (json.dumps({"model": mid}).encode(), 400),
        (json.dumps([1, 2, 3]).encode(), 400),
    ]
    for body, status in cases:
        r = httpx.post(url + "/v1/completions", content=body, headers={"content-type": "application/json"},
                       timeout=30)
        assert r.status_code == status, (body[:80], r.status_code, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], r.text
    # OpenAI's logit_bias range holds over HTTP (the Python API takes any float, as llama-cpp-python).
    ban = httpx.post(url + "/v1/completions", json={"model": mid, "prompt": "x", "logit_bias": {"2": -1e9}}, timeout=30)
    assert ban.status_code == 400 and ban.json()["error"]["param"] == "logit_bias", ban.text
    long = httpx.post(url + "/v1/completions", json={"model": mid, "prompt": "word " * 3000}, timeout=30)
    assert long.json()["error"]["code"] == "context_length_exceeded"
    for bad_stream in ({"grammar": "root ::= ("}, {"logit_bias": {"99999999": 1}}, {"top_k": "x"}):
        r = httpx.post(url + "/v1/completions", json={"model": mid, "prompt": "x", "stream": True, **bad_stream},
                       timeout=30)
        assert r.status_code == 400, (bad_stream, r.text)  # refused before the stream's 200
    chat = httpx.post(url + "/v1/chat/completions", json={"model": mid, "messages": "hi"}, timeout=30)
    assert chat.status_code == 400
    huge = httpx.post(url + "/v1/completions", content=b"x" * (5 * 1024 * 1024),
                      headers={"content-type": "application/json"}, timeout=30)
    assert huge.status_code == 413
    assert httpx.get(url + "/no/such/route", timeout=10).status_code == 404
    # still serving
    out = server.client().completions.create(model=mid, prompt="still there", max_tokens=4, **greedy())
    assert out.usage.completion_tokens == 4


# ------------------------------------------------------------------------------ concurrency
def _stream_text(client: openai.OpenAI, mid: str, prompt: str, n: int) -> tuple[str, list[str]]:
    chunks = list(client.completions.create(model=mid, prompt=prompt, max_tokens=n, stream=True, **greedy()))
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    return "".join(ch.choices[0].text for ch in chunks if ch.choices), finishes


def test_eight_concurrent_streams_equal_sequential(server: Server) -> None:
    client = server.client()
    mid = server.model_id()
    prompts = [f"prompt number {i} says {'x' * i} and more" for i in range(8)]
    sequential = [_stream_text(client, mid, p, 24) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        concurrent_ = list(pool.map(lambda p: _stream_text(server.client(), mid, p, 24), prompts))
    for (seq_text, seq_fin), (con_text, con_fin) in zip(sequential, concurrent_):
        assert con_fin[-1] == "length" and all(f is None for f in con_fin[:-1])
        assert con_text == seq_text


def test_disconnect_frees_the_sequence(tiny: Path) -> None:
    s = Server(tiny, "--parallel", "1", "--ctx-size", "4096", "--max-queue", "4")
    try:
        mid = s.model_id()
        body = {"model": mid, "prompt": "go", "max_tokens": 4000, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in got)
        # The only sequence is free again at once: the next request does not wait for 4000 tokens,
        # and the engine decoded far fewer than 4000 steps (its own counter, not what reached HTTP).
        out = s.client().completions.create(model=mid, prompt="next", max_tokens=2, **greedy())
        assert out.usage.completion_tokens == 2
        m = s.metrics()
        assert m["llamacpp:n_decode_total"] < 2000, m
        assert m["llamacpp:requests_processing"] == 0
    finally:
        s.stop()


@pytest.mark.slow
def test_a_waiting_stream_gets_pings_then_its_tokens(gemma_path: Path) -> None:
    # Gemma, not the tiny model: the long stream must still run (~50 tokens/s) while the other waits.
    s = Server(gemma_path, "--parallel", "1", "--ctx-size", "1024", "--ping-interval", "0.2")
    try:
        mid = s.model_id()
        long = {"model": mid, "prompt": "go", "max_tokens": 500, "stream": True, "ignore_eos": True}
        short = {"model": mid, "prompt": "next", "max_tokens": 3, "stream": True, "ignore_eos": True}
        with httpx.Client(timeout=30) as a, httpx.Client(timeout=30) as b:
            with a.stream("POST", s.url + "/v1/completions", json=long) as ra:
                a_lines = ra.iter_lines()  # kept: a dropped iterator would close the stream
                # Decoding has begun (on a busy machine the first token may come after a ping).
                assert next(line for line in a_lines if line and line != ": ping").startswith("data: ")
                with b.stream("POST", s.url + "/v1/completions", json=short) as rb:
                    assert rb.status_code == 200
                    lines = (line for line in rb.iter_lines() if line)
                    # The only sequence is busy: the waiting stream hears SSE comments, not silence.
                    assert next(lines) == ": ping"
                    ra.close()  # the long stream's client leaves; its sequence goes to the waiting one
                    rest = [line for line in lines if line != ": ping"]
        assert rest[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in rest[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # all 3 tokens came
    finally:
        s.stop()


@pytest.mark.slow
def test_queue_full_gets_503_with_headers(gemma_path: Path) -> None:
    s = Server(gemma_path, "--parallel", "1", "--ctx-size", "1024", "--max-queue", "1")
    try:
        mid = s.model_id()
        body = {"model": mid, "prompt": "Once upon a time", "max_tokens": 300, "stream": True, "ignore_eos": True}
        first = httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60)
        r1 = first.__enter__()
        assert r1.status_code == 200
        lines1 = r1.iter_lines()  # kept: a dropped line iterator would close the stream
        next(lines1)  # decoding: the one sequence is taken
        second = httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60)
        r2 = second.__enter__()  # admitted, waiting in the queue (its headers come at once)
        assert r2.status_code == 200
        try:
            third = httpx.post(s.url + "/v1/completions", json={**body, "stream": False}, timeout=30)
            assert third.status_code == 503, third.text
            assert third.headers["retry-after"] == "1"
            assert third.headers["x-should-retry"] == "false"
            assert third.json()["error"]["code"] == "server_busy"
            with pytest.raises(openai.APIStatusError) as exc:
                s.client().completions.create(model=mid, prompt="x", max_tokens=2)
            assert exc.value.status_code == 503
        finally:
            second.__exit__(None, None, None)
            first.__exit__(None, None, None)
        # both closed: capacity comes back
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = httpx.post(s.url + "/v1/completions", json={"model": mid, "prompt": "x", "max_tokens": 2},
                           timeout=30)
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.status_code == 200
    finally:
        s.stop()


# ------------------------------------------------------------------------------ auth, health, metrics
def test_api_keys(tiny: Path) -> None:
    s = Server(tiny, "--api-key", "k1,sekrit", "--ctx-size", "512")
    try:
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200  # public
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": "sekri"}, {"Authorization": "sekrit"}):
            r = httpx.get(s.url + "/v1/models", headers=headers, timeout=10)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(s.url + "/metrics", timeout=10).status_code == 401  # not public unless told
        assert httpx.get(s.url + "/v1/models", headers={"X-Api-Key": "sekrit"}, timeout=10).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        assert s.client("k1").models.list().data
    finally:
        s.stop()


def test_health_503_while_loading_then_200(tiny: Path) -> None:
    s = Server(tiny, "--ctx-size", "512", env={"SARAI_DEBUG_LOAD_DELAY": "3"}, wait=False)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline and (not seen or seen[-1] != 200):
            try:
                seen.append(httpx.get(s.url + "/health", timeout=2).status_code)
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.05)
        assert 503 in seen and seen[-1] == 200, seen
        assert seen.index(200) > seen.index(503)
    finally:
        s.stop()


def test_metrics_count_tokens(server: Server) -> None:
    before = server.metrics()
    server.client().completions.create(model=server.model_id(), prompt="count me", max_tokens=7, **greedy())
    after = server.metrics()
    assert after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] == 7
    assert after["llamacpp:prompt_tokens_total"] + after["sarai:prompt_tokens_reused_total"] > \
        before["llamacpp:prompt_tokens_total"] + before["sarai:prompt_tokens_reused_total"]
    for name in ("llamacpp:requests_processing", "llamacpp:requests_deferred", "sarai:queue_length",
                 "llamacpp:kv_cache_usage_ratio", "sarai:time_to_first_token_seconds_count",
                 "sarai:inter_token_latency_seconds_count"):
        assert name in after, name
    assert after["sarai:time_to_first_token_seconds_count"] > before.get("sarai:time_to_first_token_seconds_count", 0)


# ------------------------------------------------------------------------------ SIGTERM
@pytest.mark.slow
def test_sigterm_drains_running_streams_then_exits_0(gemma_path: Path) -> None:
    s = Server(gemma_path, "--parallel", "4", "--ctx-size", "2048", "--drain-timeout", "300")
    try:
        mid = s.model_id()
        started = threading.Barrier(4)
        results: list[tuple[str, list[str | None], bool]] = []

        def stream(i: int) -> None:
            client = s.client()
            chunks = []
            for n, ch in enumerate(client.completions.create(model=mid, prompt=f"Story {i}: once upon a time",
                                                             max_tokens=40, stream=True, **greedy())):
                chunks.append(ch)
                if n == 1:
                    started.wait(30)
            results.append(("".join(c.choices[0].text for c in chunks if c.choices),
                            [c.choices[0].finish_reason for c in chunks if c.choices], True))

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        started.wait(30)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        r = httpx.get(s.url + "/health", timeout=10)
        assert r.status_code == 503 and r.json()["status"] == "draining"
        r = httpx.post(s.url + "/v1/completions", json={"model": mid, "prompt": "late", "max_tokens": 2},
                       timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_draining"
        assert s.proc.poll() is None  # still draining the three
        for t in threads:
            t.join(300)
        assert len(results) == 3
        for text, finishes, _ in results:
            assert finishes[-1] == "length" and text
        assert s.proc.wait(30) == 0, s.output()
    finally:
        s.stop()


# ------------------------------------------------------------------------------ load
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_bounded_load_no_5xx_and_rss_flat(tiny: Path) -> None:
    """600 requests from 12 clients against 4 sequences and a queue of 4: every answer is a 200 or a
    503-by-design, and the process does not grow between the 100th and the 600th request."""
    s = Server(tiny, "--parallel", "4", "--ctx-size", "1024", "--max-queue", "4", "--access-log", "false")
    try:
        mid = s.model_id()
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def client(n: int, seed: int) -> None:
            with httpx.Client(timeout=60) as http:
                for i in range(n):
                    body = {"model": mid, "prompt": f"load {seed} {i}", "max_tokens": 3, "ignore_eos": True,
                            "stream": i % 2 == 0}
                    r = http.post(s.url + "/v1/completions", json=body)
                    r.read()
                    with lock:
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        def wave(per_client: int) -> None:
            threads = [threading.Thread(target=client, args=(per_client, k)) for k in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)

        wave(9)  # ~100 requests: allocators and caches reach their working size
        rss_warm = _rss_kb(s.proc.pid)
        wave(42)  # ~500 more
        rss_end = _rss_kb(s.proc.pid)
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.get(200, 0) >= 300, statuses
        assert rss_end - rss_warm < 16 * 1024, (rss_warm, rss_end)
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
    finally:
        s.stop()


@pytest.mark.slow
def test_drain_timeout_cancels_and_exits_0(tiny: Path) -> None:
    s = Server(tiny, "--parallel", "2", "--ctx-size", "8192", "--drain-timeout", "0.5")
    try:
        mid = s.model_id()
        stream = s.client().completions.create(model=mid, prompt="long", max_tokens=8000, stream=True, **greedy())
        next(iter(stream))
        s.proc.send_signal(signal.SIGTERM)
        with pytest.raises(openai.APIError, match="shutting down"):
            for _ in stream:  # the drain timeout cancels it: the error arrives inside the stream
                pass
        assert s.proc.wait(30) == 0, s.output()
        assert "drain timeout: cancelling 1 requests" in s.output()
    finally:
        s.stop()


# ------------------------------------------------------------------------------ tools and JSON output
@pytest.fixture(scope="module")
def tool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on a tiny model that carries Mistral Nemo's chat template (tool calls start with one token)."""
    from test_chat_template import FAMILIES, TEMPLATES

    source, specials, _ = FAMILIES["mistral-nemo"]
    path = write_tiny_llama(tmp_path_factory.mktemp("tools") / "tiny-mistral-nemo.gguf", n_ctx_train=2048,
                            chat_template=(TEMPLATES / source).read_text(), special_tokens=specials,
                            add_space_prefix=False)
    s = Server(path, "--parallel", "2", "--ctx-size", "4096")
    yield s
    s.stop()


def test_tool_calls_through_the_openai_client(tool_server: Server) -> None:
    from test_chat_template import ASCII, ASK, TOOLS, WEATHER_SCHEMA

    (marker,) = httpx.post(tool_server.url + "/tokenize", json={"content": "[TOOL_CALLS]"}, timeout=10).json()["tokens"]
    # Random weights never decide to call: a bias on the call marker stands in for that; the name,
    # the JSON arguments and the end are the grammar's and the model's.
    bias = {str(k): v for k, v in {**ASCII, marker: 30.0}.items()}
    c, mid = tool_server.client(), tool_server.model_id()
    kw = dict(model=mid, messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=2,
              max_tokens=300, logit_bias=bias)
    out = c.chat.completions.create(**kw)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)

    args, names, finish = "", "", None
    for chunk in c.chat.completions.create(stream=True, **kw):
        if chunk.choices:
            finish = chunk.choices[0].finish_reason or finish
            for d in chunk.choices[0].delta.tool_calls or []:
                names += d.function.name or "" if d.function else ""
                args += d.function.arguments or "" if d.function else ""
    assert finish == "tool_calls" and names == "get_weather" and args == call.function.arguments

    # the history of a call and its result renders, and tool_choice "none" answers in text
    earlier = {"id": "a1b2c3d4e", "type": "function",  # Mistral's template wants 9 alphanumerics
               "function": {"name": "get_weather", "arguments": call.function.arguments}}
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [earlier]},
                     {"role": "tool", "tool_call_id": "a1b2c3d4e", "content": "sunny"}]
    text = c.chat.completions.create(model=mid, messages=history, tools=TOOLS, tool_choice="none", max_tokens=4,
                                     temperature=0)
    assert text.choices[0].message.tool_calls is None and text.choices[0].finish_reason in ("length", "stop")


def test_json_response_formats_and_their_errors(tool_server: Server) -> None:
    from test_chat_template import ASCII, ASK, SCHEMA

    jsonschema = pytest.importorskip("jsonschema")
    c, mid = tool_server.client(), tool_server.model_id()
    bias = {str(k): v for k, v in ASCII.items()}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
    out = c.chat.completions.create(model=mid, messages=ASK, response_format=fmt, temperature=1.0, seed=5,
                                    max_tokens=300, logit_bias=bias)
    assert out.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(out.choices[0].message.content), SCHEMA)
    comp = c.completions.create(model=mid, prompt="Data:", max_tokens=300, temperature=1.0, seed=6, logit_bias=bias,
                                extra_body={"response_format": fmt})
    jsonschema.validate(json.loads(comp.choices[0].text), SCHEMA)
    for bad in ({"type": "json_schema", "json_schema": {"schema": {"type": 5}}}, {"type": "yaml"}):
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model=mid, messages=ASK, response_format=bad, max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=mid, messages=ASK, response_format={"type": "json_object"}, max_tokens=4,
                                  extra_body={"grammar": 'root ::= "x"'})
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=mid, messages=ASK, tools=[{"type": "function", "function": {"name": "f"}}],
                                  tool_choice={"type": "function", "function": {"name": "g"}}, max_tokens=4)


# ------------------------------------------------------------------------------ the app without a server
def test_routes_through_the_asgi_app_without_uvicorn(tiny: Path) -> None:
    """``create_app`` builds the whole app (gate included); the official client reaches it through
    httpx's ASGI transport: no uvicorn, no socket. Errors carry their ``param`` as data."""
    import asyncio

    from sarai_llama.server.app import create_app
    from sarai_llama.server.settings import Settings

    app, state = create_app(Settings.create(str(tiny), ctx_size=512, parallel=2, threads=1, api_key=["k"]))
    state.load()  # what the lifespan does in a thread; the transport runs no lifespan
    assert state.phase == "ready", state.failure

    async def talk() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asgi") as http:
            assert (await http.get("/v1/models")).status_code == 401  # the gate is in front
            c = openai.AsyncOpenAI(base_url="http://asgi/v1", api_key="k", http_client=http, max_retries=0)
            msgs = [{"role": "user", "content": "hi"}]
            out = await c.chat.completions.create(model=tiny.name, messages=msgs, max_tokens=4, **greedy())
            assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 4
            chunks = [ch async for ch in await c.chat.completions.create(model=tiny.name, messages=msgs, max_tokens=4,
                                                                         stream=True, **greedy())]
            assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == out.choices[0].message.content
            for kw, param in ((dict(temperature=-1), "temperature"), (dict(tool_choice="sometimes"), "tool_choice"),
                              (dict(response_format={"type": "yaml"}), "response_format")):
                with pytest.raises(openai.BadRequestError) as err:
                    await c.chat.completions.create(model=tiny.name, messages=msgs, max_tokens=4, **kw)
                assert err.value.param == param, err.value.body
            # a model without FIM tokens refuses a suffix, naming it, never drops it silently
            with pytest.raises(openai.BadRequestError) as err:
                await c.completions.create(model=tiny.name, prompt="def f(", suffix="return x", max_tokens=4)
            assert err.value.param == "suffix" and "suffix" in err.value.message
            # a lone surrogate (valid JSON, no UTF-8) is a 400 naming the field, not a 500
            for path, body, param in (("/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 1}', "prompt"),
                                      ("/tokenize", b'{"content": "\\udfff"}', "content")):
                r = await http.post(path, content=body, headers={"authorization": "Bearer k"})
                assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text

    try:
        asyncio.run(talk())
    finally:
        state.close()


def test_quantized_kv_cache_and_flash_attention_flags(gemma_path: Path) -> None:
    """llama-server's -ctk/-ctv/-fa: the cache type reaches llama.cpp, the log says the memory it implies."""
    s = Server(gemma_path, "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on", "--ctx-size", "4096", "--parallel", "1")
    try:
        out = s.client().completions.create(model=s.model_id(), prompt="The Eiffel Tower is located in the city of",
                                            max_tokens=4, **greedy())
        assert out.choices[0].text.strip().startswith("Paris"), out.choices[0].text
        # Gemma 3 270M: 18 layers x 1 KV head x (256 + 256) x 34/32 bytes x 4096 cells = 38 MiB (f16: 72).
        assert "KV cache: at most 38 MiB (K q8_0, V q8_0, flash attention on)" in s.output()
    finally:
        s.stop()
    refused = subprocess.run([sys.executable, "-m", "sarai_llama", "serve", str(gemma_path), "-ctv", "q8_0", "-fa",
                              "off", "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "needs flash attention" in refused.stdout + refused.stderr
