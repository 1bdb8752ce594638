"""Ollama's API and llama-server's native routes on the same port, through real ``sarai-llama serve``
processes: the official ``ollama`` client (its own types parse every answer), request bodies shaped
as Open WebUI, Continue, Zed and Claude Code send them, and the errors each gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_tiny_llama
from helpers import CITY, FAMILIES, SPECIALS, TEMPLATES, TOOLS, Server

httpx = pytest.importorskip("httpx")
ollama = pytest.importorskip("ollama")
jsonschema = pytest.importorskip("jsonschema")

KEY = "sekrit"
GEMMA = "gemma-3-270m-q4_k_m.gguf"
TINY = "tiny-nemo-fim.gguf:latest"
FAST = {"num_predict": 6, "temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> Iterator[Server]:
    s = Server(gemma_path, "--parallel", "2", "--ctx-size", "2048", "--api-key", KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A tiny model with Mistral Nemo's template (tool calls) and FIM tokens."""
    path = write_tiny_llama(tmp_path_factory.mktemp("ollama") / "tiny-nemo-fim.gguf", n_ctx_train=2048, fim=True,
                            chat_template=(TEMPLATES / FAMILIES["mistral-nemo"]).read_text(),
                            special_tokens=SPECIALS["mistral-nemo"], add_space_prefix=False)
    s = Server(path, "--parallel", "2", "--ctx-size", "4096")
    yield s
    s.stop()


def client(server: Server, key: str | None = KEY) -> Any:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"} if key else None, timeout=60)


def post(server: Server, path: str, body: dict[str, Any], key: str = KEY) -> Any:
    return httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def ndjson(response: Any) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_models_version_and_show(gemma: Server) -> None:
    c = client(gemma)
    (m,) = c.list().models
    assert m.model.endswith(":latest") and m.size == Path(gemma.proc.args[4]).stat().st_size
    assert len(m.digest) == 64 and m.details.format == "gguf" and m.details.family == "gemma3"
    assert m.details.quantization_level == "Q4_K_M" and m.details.parameter_size == "268M"
    (p,) = c.ps().models
    assert p.size_vram == 0 and p.expires_at is not None and p.digest == m.digest and p.context_length == 2048
    show = c.show(m.model)
    assert show.modelinfo["general.architecture"] == "gemma3" and show.modelinfo["gemma3.context_length"] == 2048
    assert show.modelinfo["gemma3.block_count"] == 18 and isinstance(show.template, str)
    assert show.capabilities == ["completion"]  # no tool syntax, no FIM tokens, no thinking, no vision
    assert "num_ctx 2048" in show.parameters
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(gemma.url + "/", headers=headers).text == "Ollama is running"
    assert httpx.get(gemma.url + "/api/version", headers=headers).json()["version"].startswith("0.")
    assert httpx.get(gemma.url + "/api/tags").status_code == 401  # behind the same gate


def test_chat_streamed_and_not(gemma: Server) -> None:
    c = client(gemma)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    out = c.chat(model=GEMMA, messages=msgs, options=FAST, keep_alive="5m")
    assert out.done and out.done_reason == "length" and out.message.role == "assistant" and out.message.content
    assert out.eval_count == 6 and out.prompt_eval_count > 5 and out.total_duration >= out.eval_duration > 0
    parts = list(c.chat(model=out.model, messages=msgs, options=FAST, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].eval_count == 6
    assert "".join(p.message.content or "" for p in parts) == out.message.content


def test_format_json_schema_gives_valid_json(gemma: Server) -> None:
    out = client(gemma).chat(model=GEMMA, messages=[{"role": "user", "content": "A city in France, as JSON."}],
                             format=CITY, options={"num_predict": 200, "temperature": 0})
    assert out.done_reason == "stop", out.message.content
    jsonschema.validate(json.loads(out.message.content), CITY)
    r = post(gemma, "/api/generate", {"prompt": "A JSON object with a city", "format": CITY, "stream": False,
                                      "options": {"num_predict": 200, "temperature": 0}})
    assert r.status_code == 200 and r.json()["done_reason"] == "stop", r.text
    jsonschema.validate(json.loads(r.json()["response"]), CITY)
    r = post(gemma, "/api/generate", {"prompt": "{", "raw": True, "format": "json", "stream": False,
                                      "options": {"num_predict": 2}})
    assert r.status_code == 200 and r.json()["done_reason"] == "length"  # the grammar applies to a raw prompt too


def test_generate_and_embed(gemma: Server) -> None:
    c = client(gemma)
    one = c.generate(model=GEMMA, prompt="The sky is", options=FAST)
    assert one.done and one.response and one.eval_count == 6
    parts = list(c.generate(model=GEMMA, prompt="The sky is", options=FAST, stream=True))
    assert "".join(p.response for p in parts) == one.response and parts[-1].done
    raw = c.generate(model=GEMMA, prompt="<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", raw=True,
                     options=FAST, system="ignored when raw")
    assert raw.done and raw.response
    loaded = c.generate(model=GEMMA, prompt="")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    emb = c.embed(model=GEMMA, input=["a cat", "a dog"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 640 and emb.prompt_eval_count > 0
    assert abs(sum(x * x for x in emb.embeddings[0]) - 1) < 1e-3
    assert len(c.embeddings(model=GEMMA, prompt="a cat").embedding) == 640
    assert len(c.embed(model=GEMMA, input="a cat", dimensions=640).embeddings) == 1


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/chat", {"model": "nope:latest", "messages": [{"role": "user", "content": "x"}]}, 404, "model 'nope:latest' not found"),
    ("/api/show", {"model": "nope"}, 404, "model 'nope' not found"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": ["iVBORw0KGgo="]}]}, 400, "no images"),
    ("/api/generate", {"prompt": "x", "images": ["iVBORw0KGgo="]}, 400, "no images"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}], "format": "yaml"}, 400, "format"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}], "format": {"type": "nonsense"}}, 400, ""),
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}], "options": {"num_ctx": 100000}}, 400, "num_ctx"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}], "think": True}, 400, "thinking"),
    ("/api/chat", {"messages": "not a list"}, 400, "messages"),
    ("/api/generate", {"prompt": "x", "suffix": "y"}, 400, "fim"),
    ("/api/embed", {"input": "x", "dimensions": 3}, 400, "640"),
    ("/api/pull", {"model": "llama3.2"}, 501, "GGUF"),
    ("/api/create", {"model": "m"}, 501, "not supported"),
    ("/api/copy", {"source": "a", "destination": "b"}, 501, "alias"),
])
def test_errors_are_ollama_shaped(gemma: Server, path: str, body: dict[str, Any], status: int, words: str) -> None:
    r = post(gemma, path, {**body, "stream": False})
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and words.lower() in r.json()["error"].lower()


def test_the_client_raises_its_own_error(gemma: Server) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client(gemma).chat(model="missing", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    r = httpx.delete(gemma.url + "/api/delete", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 501 and "error" in r.json()


def test_open_webui_continue_and_zed_bodies(gemma: Server) -> None:
    name = client(gemma).list().models[0].model
    # Open WebUI: /api/version, then /api/tags (name, model), then /api/chat with options and keep_alive
    tags = httpx.get(gemma.url + "/api/tags", headers={"Authorization": f"Bearer {KEY}"}).json()["models"]
    assert tags[0]["name"] == tags[0]["model"] == name and tags[0]["modified_at"]
    r = post(gemma, "/api/chat", {"model": name, "messages": [{"role": "user", "content": "Hi"}], "stream": True,
                                  "keep_alive": -1, "options": {"temperature": 0.8, "num_predict": 4, "top_k": 40,
                                                                "repeat_penalty": 1.1, "num_ctx": 1024}})
    lines = ndjson(r)
    assert lines[-1]["done"] is True and all("created_at" in x and "message" in x for x in lines)
    # Continue's Ollama provider: /api/show (model_info context length, parameters), /api/generate raw for
    # autocomplete with options.stop and num_ctx; Zed: capabilities, then think/tools-free chat with num_ctx
    show = post(gemma, "/api/show", {"name": name}).json()
    ctx = next(v for k, v in show["model_info"].items() if k.endswith(".context_length"))
    r = post(gemma, "/api/generate", {"model": name, "prompt": "def f():", "raw": True, "stream": False,
                                      "options": {"num_predict": 4, "stop": ["\n\n"], "num_ctx": ctx,
                                                  "num_thread": 2, "use_mmap": True}, "keep_alive": 1800})
    assert r.status_code == 200 and r.json()["done"]
    r = post(gemma, "/api/chat", {"model": name, "stream": False, "keep_alive": -1, "tools": [], "think": None,
                                  "messages": [{"role": "user", "content": "Hi", "images": None}],
                                  "options": {"num_ctx": ctx, "num_predict": 3, "stop": [], "temperature": 1.0}})
    assert r.status_code == 200 and r.json()["message"]["role"] == "assistant"
    assert "tools" not in show["capabilities"] and "vision" not in show["capabilities"]


def test_claude_code_query_string_and_beta_headers(gemma: Server) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01",
               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"}
    body = {"model": "gemma-3-270m-q4_k_m.gguf", "max_tokens": 3, "stream": False,
            "messages": [{"role": "user", "content": "Hi"}]}
    r = httpx.post(gemma.url + "/v1/messages?beta=true", json=body, headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["type"] == "message"
    r = httpx.post(gemma.url + "/v1/messages/count_tokens?beta=true", json=body, headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["input_tokens"] > 0


def test_llama_server_completion_props_slots(gemma: Server) -> None:
    r = post(gemma, "/completion", {"prompt": "Once upon a time", "n_predict": 5, "temperature": 0})
    out = r.json()
    assert out["stop"] is True and out["tokens_predicted"] == 5 and out["tokens_evaluated"] > 3
    assert out["stop_type"] == "limit" and out["truncated"] is False and out["content"]
    assert out["timings"]["predicted_n"] == 5
    r = post(gemma, "/completion", {"prompt": "Once upon a time", "n_predict": 5, "temperature": 0, "stream": True,
                                    "cache_prompt": True})
    frames = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert all(f["stop"] is False for f in frames[:-1]) and frames[-1]["stop"] is True
    assert "".join(f["content"] for f in frames) == out["content"] and frames[-1]["stop_type"] == "limit"
    assert "[DONE]" not in r.text
    props = httpx.get(gemma.url + "/props", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert props["default_generation_settings"]["n_ctx"] == 2048 and props["total_slots"] == 2
    assert props["modalities"] == {"vision": False, "audio": False} and props["model_path"].endswith(".gguf")
    assert isinstance(props["chat_template"], str) and props["build_info"]
    slots = httpx.get(gemma.url + "/slots", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert [s["id"] for s in slots] == [0, 1] and all(s["n_ctx"] == 2048 and "is_processing" in s for s in slots)
    applied = post(gemma, "/apply-template", {"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert applied["prompt"].endswith("<start_of_turn>model\n")
    r = post(gemma, "/responses", {"input": "Hi", "max_output_tokens": 3})
    assert r.status_code == 200 and r.json()["object"] == "response"


def test_tool_calls_in_ollamas_shape(tiny: Server) -> None:
    """Ollama has no tool_choice: with tools and a format, the answer is a call or the format's JSON
    from its first token (one grammar); a call made under some seed comes back with its arguments
    as an object, and the call and its result render back into the next turn."""
    c = client(tiny, None)
    show = c.show(TINY)
    assert "tools" in show.capabilities and "insert" in show.capabilities
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = None
    for seed in range(12):
        out = c.chat(model=TINY, messages=ask, tools=TOOLS, format={"type": "object"},
                     options={"temperature": 1.0, "seed": seed, "num_predict": 120})
        if out.message.tool_calls:
            call = out.message.tool_calls[0]
            break
    assert call is not None, "no seed made a call"
    assert call.function.name in ("get_weather", "forecast") and isinstance(call.function.arguments, dict)
    if call.function.name == "get_weather":
        jsonschema.validate(dict(call.function.arguments), CITY)
    streamed = list(c.chat(model=TINY, messages=ask, tools=TOOLS, format={"type": "object"}, stream=True,
                           options={"temperature": 1.0, "seed": seed, "num_predict": 120}))
    calls = [tc for p in streamed for tc in p.message.tool_calls or ()]
    assert [tc.function.name for tc in calls] == [call.function.name] and streamed[-1].done
    history = ask + [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": call.function.name, "arguments": dict(call.function.arguments)}}]},
        {"role": "tool", "tool_name": call.function.name, "content": "sunny"}]
    after = c.chat(model=TINY, messages=history, tools=TOOLS, options={"num_predict": 3, "temperature": 0})
    assert after.done


def test_generate_with_suffix_fills_in_the_middle(tiny: Server) -> None:
    c = client(tiny, None)
    out = c.generate(model=TINY, prompt="def add(a, b):\n", suffix="\n    return c\n", options=FAST)
    assert out.done and out.eval_count >= 1 and out.prompt_eval_count > 3
    parts = list(c.generate(model=TINY, prompt="def add(a, b):\n", suffix="\n", options=FAST, stream=True))
    assert parts[-1].done
