"""``serve --mmproj``: images through the official openai and anthropic clients (and Ollama's and
the Responses shapes) against a real server, on the random tiny llama + gemma3 projector."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from helpers import Server
from random_mmproj import write_vision_pair

TEST_JPEG = Path(__file__).resolve().parent.parent / "vendor/llama.cpp/tools/mtmd/test-1.jpeg"
B64 = base64.b64encode(TEST_JPEG.read_bytes()).decode()
URI = "data:image/jpeg;base64," + B64


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("vision-server")
    return write_vision_pair(d / "tiny.gguf", d / "tiny-mmproj.gguf")


@pytest.fixture(scope="module")
def server(pair: tuple[Path, Path]):
    # F32, no flash attention, no step budget: answers are exact, so protocols can be compared.
    s = Server(pair[0], "--mmproj", str(pair[1]), "--parallel", "2", "--ctx-size", "2048", "--flash-attn", "off",
               "--step-budget-ms", "0", "--seed", "1")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def text_only(pair: tuple[Path, Path]):
    s = Server(pair[0], "--parallel", "1", "--ctx-size", "512")
    yield s
    s.stop()


def openai_ask(server: Server, url: str = URI, **kw) -> object:
    return server.client().chat.completions.create(
        model=server.model_id(), max_tokens=6, temperature=0, messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is in the picture?"}, {"type": "image_url", "image_url": {"url": url}}]}],
        **kw)


def anthropic_client(server: Server):
    import anthropic

    return anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0, timeout=120)


def test_models_and_props_say_images(server: Server, text_only: Server) -> None:
    (entry,) = httpx.get(server.url + "/v1/models").json()["data"]
    assert entry["modalities"]["vision"] is True
    assert httpx.get(server.url + "/props").json()["modalities"]["vision"] is True
    assert httpx.get(text_only.url + "/props").json()["modalities"]["vision"] is False
    assert "vision" in httpx.post(server.url + "/api/show", json={"model": server.model_id()}).json()["capabilities"]


def test_openai_chat_image(server: Server) -> None:
    first = openai_ask(server)
    again = openai_ask(server)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage.prompt_tokens > 16  # the image's 16 positions and the text


def test_openai_streams_the_same(server: Server) -> None:
    whole = openai_ask(server).choices[0].message.content
    parts = [c.choices[0].delta.content or "" for c in openai_ask(server, stream=True) if c.choices]
    assert "".join(parts) == whole


def test_anthropic_image_block_answers_as_openai_does(server: Server) -> None:
    got = anthropic_client(server).messages.create(
        model=server.model_id(), max_tokens=6, extra_body={"temperature": 0}, messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is in the picture?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": B64}}]}])
    assert got.content[0].text == openai_ask(server).choices[0].message.content
    assert got.usage.input_tokens == openai_ask(server).usage.prompt_tokens


def test_anthropic_screenshot_in_a_tool_result(server: Server) -> None:
    got = anthropic_client(server).messages.create(
        model=server.model_id(), max_tokens=4, messages=[
            {"role": "user", "content": "take a screenshot"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": B64}}]}]}],
        tools=[{"name": "shot", "description": "a screenshot", "input_schema": {"type": "object"}}])
    assert got.usage.input_tokens > 16


def test_responses_input_image_and_ollama_images(server: Server) -> None:
    expected = openai_ask(server).choices[0].message.content
    got = server.client().responses.create(model=server.model_id(), max_output_tokens=6, temperature=0, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "what is in the picture?"},
                                     {"type": "input_image", "image_url": URI}]}])
    assert got.output_text
    reply = httpx.post(server.url + "/api/chat", timeout=120, json={
        "model": server.model_id(), "stream": False, "options": {"num_predict": 4},
        "messages": [{"role": "user", "content": "what is in the picture?", "images": [B64]}]}).json()
    assert reply["done"] and reply["prompt_eval_count"] > 16, reply
    assert expected is not None


@pytest.mark.parametrize("url, words", [
    ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), "not an image"),
    ("https://example.com/cat.png", "not fetched"),
    ("file:///etc/passwd", "file:// image URLs are read by Llama only"),
])
def test_bad_images_are_400s(server: Server, url: str, words: str) -> None:
    import openai

    with pytest.raises(openai.BadRequestError, match=words):
        openai_ask(server, url)
    assert openai_ask(server).choices  # the server goes on


def test_a_model_without_projector_names_the_flag(text_only: Server) -> None:
    import anthropic
    import openai

    with pytest.raises(openai.BadRequestError, match="--mmproj"):
        openai_ask(text_only)
    with pytest.raises(anthropic.BadRequestError, match="--mmproj"):
        anthropic_client(text_only).messages.create(model=text_only.model_id(), max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "image", "source": {
                "type": "base64", "media_type": "image/jpeg", "data": B64}}]}])
    reply = httpx.post(text_only.url + "/api/generate", json={"model": text_only.model_id(), "prompt": "hi",
                                                             "images": [B64], "stream": False})
    assert reply.status_code == 400 and "--mmproj" in reply.text
