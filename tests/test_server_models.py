"""Many models behind one server: named by ``--models-dir`` / ``models.toml`` / ``--model NAME=PATH``,
loaded on first request, kept within ``--models-memory``, unloaded when idle or asked to.

Real ``sarai-llama serve`` processes on 127.0.0.1 with random-weight GGUFs written here
(and Gemma 3 270M), reached with the official ``openai``, ``anthropic`` and ``ollama``
clients.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="pip install sarai-llama[server]")
httpx = pytest.importorskip("httpx", reason="pip install sarai-llama[test]")

from conftest import write_tiny_llama  # noqa: E402
from helpers import Server  # noqa: E402

NAMES = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five tiny models of different widths (so different sizes), and a models.toml naming one."""
    pytest.importorskip("gguf")
    root = tmp_path_factory.mktemp("models")
    for i, name in enumerate(NAMES):
        write_tiny_llama(root / f"{name}.gguf", seed=i, n_embd=64 + 32 * i, n_ctx_train=1024)
    return root


def statuses(s: Server) -> dict[str, str]:
    return {m["id"]: m["status"]["value"] for m in httpx.get(s.url + "/v1/models", timeout=10).json()["data"]}


def meta(s: Server) -> dict[str, dict[str, Any]]:
    return {m["id"]: m["meta"] for m in httpx.get(s.url + "/v1/models", timeout=10).json()["data"]}


def complete(s: Server, model: str, n: int = 4, **extra: Any) -> httpx.Response:
    return httpx.post(s.url + "/v1/completions", json={"model": model, "prompt": "hello", "max_tokens": n,
                                                       "temperature": 0, "ignore_eos": True, **extra}, timeout=60)


@pytest.fixture()
def started() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for s in servers:
        s.stop()


def serve(started: list[Server], *args: str, model: Path | None = None) -> Server:
    s = Server(model, "--ctx-size", "1024", "--parallel", "2", *args)
    started.append(s)
    return s


# ------------------------------------------------------------------------------ naming
def test_settings_name_models_by_flag_variable_and_directory(folder: Path, tmp_path: Path) -> None:
    from sarai_llama.server.catalog import catalog
    from sarai_llama.server.settings import parse

    s = parse(["--model", f"x={folder / 'a.gguf'}", "--model", f"y={folder / 'b.gguf'}"],
              environ={"SARAI_MODELS": f"w={folder / 'c.gguf'}"})
    assert s.model is None and s.many
    assert [n for n, _ in s.models] == ["w", "x", "y"]
    with pytest.raises(SystemExit):
        parse([], environ={})  # nothing to serve
    (tmp_path / "one.gguf").write_bytes((folder / "d.gguf").read_bytes())
    (tmp_path / "two.gguf").write_bytes((folder / "e.gguf").read_bytes())
    (tmp_path / "models.toml").write_text('[models.chat]\nfile = "two.gguf"\nctx_size = 512\nparallel = 1\n'
                                          'flash_attn = "off"\n')
    specs = catalog(parse(["--models-dir", str(tmp_path)], environ={}))
    assert list(specs) == ["chat", "one"]  # two.gguf only under its alias
    chat = specs["chat"]
    assert (chat.settings.ctx_size, chat.settings.parallel, chat.settings.flash_attn) == (512, 1, "off")
    assert chat.settings.model_id == "chat" and specs["one"].settings.ctx_size == 4096
    for bad, says in (('[models.x]\nfile = "one.gguf"\nctx = 5\n', "unknown key(s) ctx"),
                      ('[models.x]\nfile = "none.gguf"\n', "no such file"),
                      ('[models.x]\nfile = "one.gguf"\nparallel = "many"\n', "parallel"),
                      ('[models.x]\nfile = "one.gguf"\nrole = "judge"\n', "role must be"),
                      ('[models.x\n', "models.toml")):
        (tmp_path / "models.toml").write_text(bad)
        with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
            catalog(parse(["--models-dir", str(tmp_path)], environ={}))


def test_a_bad_catalog_stops_the_server_with_the_reason(tmp_path: Path, folder: Path) -> None:
    (tmp_path / "a.gguf").write_bytes((folder / "a.gguf").read_bytes())
    (tmp_path / "models.toml").write_text('[models.x]\nfile = "a.gguf"\nctx_sise = 5\n')
    run = subprocess.run([sys.executable, "-m", "sarai_llama", "serve", "--models-dir", str(tmp_path), "--port", "9"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "unknown key(s) ctx_sise" in run.stderr


def test_keep_alive_durations() -> None:
    from sarai_llama.server.pool import parse_keep_alive

    assert parse_keep_alive("5m") == 300 and parse_keep_alive("1h30m") == 5400
    assert parse_keep_alive("300ms") == pytest.approx(0.3) and parse_keep_alive(12) == 12
    assert parse_keep_alive(0) == 0 and parse_keep_alive("0") == 0
    assert parse_keep_alive(-1) is None and parse_keep_alive("-1m") is None
    for bad in ("soon", "5 parsecs", "", True, float("nan")):
        with pytest.raises(ValueError, match="keep_alive"):
            parse_keep_alive(bad)


# ------------------------------------------------------------------------------ routing and loading
def test_first_request_loads_and_clients_switch_by_name(started: list[Server], folder: Path,
                                                        gemma_path: Path) -> None:
    import anthropic

    s = serve(started, "--models-dir", str(folder), "--model", f"gemma={gemma_path}")
    assert statuses(s) == {**{n: "unloaded" for n in NAMES}, "gemma": "unloaded"}  # ready, nothing loaded
    c = s.client()
    outs = {}
    for name in ("a", "b", "gemma"):
        out = c.completions.create(model=name, prompt="The capital of France is", max_tokens=4, temperature=0,
                                   extra_body={"ignore_eos": True})
        assert out.model == name and out.usage.completion_tokens == 4
        outs[name] = out.choices[0].text
    assert len(set(outs.values())) == 3  # three models, three answers
    again = c.completions.create(model="a.gguf", prompt="The capital of France is", max_tokens=4, temperature=0,
                                 extra_body={"ignore_eos": True})  # the file's name answers too
    assert again.model == "a" and again.choices[0].text == outs["a"]
    chat = c.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Say hi"}],
                                     max_tokens=4, temperature=0)
    assert chat.model == "gemma" and chat.choices[0].message.content
    msg = anthropic.Anthropic(base_url=s.url, api_key="none", max_retries=0).messages.create(
        model="c", max_tokens=3, messages=[{"role": "user", "content": "hello"}])
    assert msg.model == "c" and msg.usage.output_tokens >= 1
    st = statuses(s)
    assert sorted(n for n, v in st.items() if v == "loaded") == ["a", "b", "c", "gemma"]
    m = meta(s)
    assert m["gemma"]["memory_bytes"] > gemma_path.stat().st_size and m["gemma"]["n_ctx"] == 1024
    assert m["d"]["estimated_bytes"] > 0 and "memory_bytes" not in m["d"]
    metrics = s.metrics()
    assert metrics["sarai:models_loaded"] == 4 and metrics["sarai:model_load_seconds_count"] == 4
    with pytest.raises(Exception) as err:
        c.completions.create(model="nope", prompt="x", max_tokens=1)
    assert err.value.status_code == 404 and "'a', 'b'" in str(err.value)  # type: ignore[attr-defined]
    r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_required"


def test_concurrent_first_requests_load_once(started: list[Server], folder: Path) -> None:
    s = serve(started, "--models-dir", str(folder), "--debug-load-delay", "1")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: complete(s, "b"), range(6)))
    assert [r.status_code for r in answers] == [200] * 6
    assert s.output().count("loading model b (") == 1
    assert s.metrics()["sarai:model_load_seconds_count"] == 1


def test_least_recently_used_model_unloads_to_fit_the_budget(started: list[Server], folder: Path) -> None:
    probe = serve(started, "--models-dir", str(folder))
    est = {n: v["estimated_bytes"] for n, v in meta(probe).items()}
    probe.stop()
    two = max(est[x] + est[y] for x in est for y in est if x != y)
    budget = (two + min(est.values()) // 2) >> 20  # any two fit, no three
    s = serve(started, "--models-dir", str(folder), "--models-memory", str(budget))
    for name in ("a", "b", "c"):
        assert complete(s, name).status_code == 200
    assert statuses(s) == {"a": "unloaded", "b": "loaded", "c": "loaded", "d": "unloaded", "e": "unloaded"}
    assert complete(s, "b").status_code == 200  # b is now more recent than c
    assert complete(s, "d").status_code == 200
    assert statuses(s) == {"a": "unloaded", "b": "loaded", "c": "unloaded", "d": "loaded", "e": "unloaded"}
    assert sum(v.get("memory_bytes", 0) for v in meta(s).values()) <= budget << 20
    log = s.output()
    assert "unloaded model a (least recently used, to make room for 'c'" in log
    assert "unloaded model c (least recently used, to make room for 'd'" in log


def test_every_model_busy_is_a_503_never_an_overload(started: list[Server], folder: Path) -> None:
    probe = serve(started, "--models-dir", str(folder))
    est = {n: v["estimated_bytes"] for n, v in meta(probe).items()}
    probe.stop()
    s = serve(started, "--models-dir", str(folder), "--models-memory",
              str((max(est.values()) + min(est.values()) // 2) >> 20), "--retry-after", "3")
    body = {"model": "a", "prompt": "go", "max_tokens": 800, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert any(next(lines).startswith("data: ") for _ in range(3))
        busy = complete(s, "b")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "3"
        assert busy.json()["error"]["code"] == "models_busy" and "'a'" in busy.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while complete(s, "b").status_code != 200:  # the stream's end releases a; b takes its place
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert statuses(s)["a"] == "unloaded"
    r = httpx.post(s.url + "/v1/completions", json={"model": "e", "prompt": "x", "max_tokens": 1}, timeout=10)
    assert r.status_code == 200  # e fits alone: the budget holds the largest model


def test_keep_alive_and_idle_unload(started: list[Server], folder: Path) -> None:
    import ollama

    s = serve(started, "--models-dir", str(folder), "--idle-unload", "1")
    client = ollama.Client(host=s.url)
    client.generate(model="a", prompt="hi", options={"num_predict": 2}, keep_alive=0)
    client.generate(model="b", prompt="hi", options={"num_predict": 2}, keep_alive=-1)
    client.generate(model="c", prompt="hi", options={"num_predict": 2})  # --idle-unload: 1 s
    ps = {m.model: m for m in client.ps().models}
    assert set(ps) == {"b:latest", "c:latest"}
    assert ps["b:latest"].expires_at.year > 2200  # kept as long as the server runs
    time.sleep(2.0)
    assert statuses(s) == {"a": "unloaded", "b": "loaded", "c": "unloaded", "d": "unloaded", "e": "unloaded"}
    assert "unloaded model a (keep_alive 0" in s.output() and "unloaded model c (idle for" in s.output()
    client.generate(model="b", keep_alive=0)  # Ollama's unload: nothing to say, keep_alive 0
    assert statuses(s)["b"] == "unloaded"
    assert {m.model for m in client.list().models} == {f"{n}:latest" for n in NAMES}
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="b", prompt="hi", keep_alive="soon")
    assert err.value.status_code == 400 and "keep_alive" in err.value.error


def test_a_corrupt_model_fails_alone(started: list[Server], folder: Path, tmp_path: Path) -> None:
    (tmp_path / "good.gguf").write_bytes((folder / "a.gguf").read_bytes())
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    s = serve(started, "--models-dir", str(tmp_path))
    for _ in range(2):  # the second answer is the same, without loading again
        r = complete(s, "broken")
        assert r.status_code == 500, r.text
        err = r.json()["error"]
        assert err["code"] == "model_load_failed" and err["message"].startswith("the model 'broken' could not be loaded: ")
    assert s.output().count("loading model broken (") == 1
    assert complete(s, "good").status_code == 200
    assert statuses(s) == {"broken": "failed", "good": "loaded"}
    assert httpx.get(s.url + "/health", timeout=5).status_code == 200


def test_load_and_unload_routes_behind_the_key(started: list[Server], folder: Path) -> None:
    s = serve(started, "--models-dir", str(folder), "--api-key", "k1")
    key = {"Authorization": "Bearer k1"}
    assert httpx.post(s.url + "/models/load", json={"model": "d"}, timeout=30).status_code == 401
    r = httpx.post(s.url + "/models/load", json={"model": "d"}, headers=key, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "loaded"
    assert httpx.post(s.url + "/models/load", json={"model": "zz"}, headers=key, timeout=30).status_code == 404
    r = httpx.post(s.url + "/models/unload", json={"model": "d"}, headers=key, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "unloaded"
    assert "unloaded model d (POST /models/unload)" in s.output()


def test_one_positional_model_serves_as_before_beside_named_ones(started: list[Server], folder: Path) -> None:
    s = serve(started, "--model", f"extra={folder / 'e.gguf'}", model=folder / "a.gguf")
    assert statuses(s) == {"a.gguf": "loaded", "extra": "unloaded"}  # the positional one loads at start-up
    r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200 and r.json()["model"] == "a.gguf"  # no name: the positional model
    assert complete(s, "extra").json()["model"] == "extra"


def test_embedding_and_rerank_roles(started: list[Server], folder: Path, tmp_path: Path) -> None:
    """``role = "embed"`` / ``"rank"`` in models.toml: a pooled context only, no engine."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from random_gguf import write_tiny_reranker

    write_tiny_reranker(tmp_path / "ranker.gguf")
    (tmp_path / "words.gguf").write_bytes((folder / "b.gguf").read_bytes())
    (tmp_path / "models.toml").write_text('[models.emb]\nfile = "words.gguf"\nrole = "embed"\n'
                                          '[models.rk]\nfile = "ranker.gguf"\nrole = "rank"\n')
    s = serve(started, "--models-dir", str(tmp_path))
    c = s.client()
    vectors = c.embeddings.create(model="emb", input=["one text", "another"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) == 64 + 32
    r = httpx.post(s.url + "/v1/rerank", json={"model": "rk", "query": "q", "documents": ["a", "b c"]}, timeout=60)
    assert r.status_code == 200 and len(r.json()["results"]) == 2 and r.json()["model"] == "rk"
    for model, path, body in (("emb", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                              ("rk", "/v1/embeddings", {"input": "x"})):
        r = httpx.post(s.url + path, json={"model": model, **body}, timeout=60)
        assert r.status_code == 400, r.text
        assert model in r.json()["error"]["message"]
    assert {m["id"]: m["meta"]["role"] for m in httpx.get(s.url + "/v1/models").json()["data"]} == \
        {"emb": "embed", "rk": "rank"}
