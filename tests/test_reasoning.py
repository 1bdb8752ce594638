"""``reasoning_format``: a thinking model's reasoning in ``reasoning_content``, not in ``content``.

Through the real templates of two thinking families (Qwen3, which thinks when the model
opens ``<think>``, and DeepSeek-R1, whose generation prompt opens it) and llama.cpp's own
parser; then through ``Llama`` and ``sarai-llama serve`` on a tiny random model carrying
the DeepSeek-R1 template: whatever it writes stays inside the open thinking block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import write_tiny_llama
from sarai_llama import Llama
from sarai_llama.chat_template import REASONING_FORMATS, ChatTemplate
from sarai_llama.errors import ParameterError

TEMPLATES = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models" / "templates"
THINKERS = {"qwen3": "Qwen-Qwen3-0.6B.jinja", "deepseek-r1": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"}
ASK = [{"role": "user", "content": "What is 2 + 2?"}]
#: (reasoning, answer) pairs: plain, multi-line, non-ASCII, and markup-like text in both.
SAYINGS = [("Two plus two.", "4"), ("First 2.\nThen 2 more:\n4.", "It is 4."),
           ("Ça fait quatre — 四.", "Réponse : 4 ✓"), ("a <b> tag, not </thinking>", "`<think>` is a tag")]


def render(family: str, fmt: str) -> Any:
    return ChatTemplate((TEMPLATES / THINKERS[family]).read_text(), "<s>", "</s>", why="test").render(
        ASK, reasoning_format=fmt)


def feed(rendered: Any, reasoning: str, answer: str, step: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Stream the model's text into the parser ``step`` characters at a time; (message, joined deltas)."""
    text = f"<think>\n{reasoning}\n</think>\n\n{answer}"
    opened = "<think>\n"
    if rendered.grammar_prefill.endswith(opened):  # the template opened the block itself
        text = text[len(opened):]
    out, joined = rendered.output(), {"content": "", "reasoning_content": ""}
    for end in [*range(step, len(text), step), len(text)]:
        for delta in out.update(text[:end], partial=end < len(text)):
            for key in joined:
                joined[key] += delta.get(key) or ""
    return out.message(), joined


@pytest.mark.parametrize("family", sorted(THINKERS))
@pytest.mark.parametrize("fmt", ["deepseek", "auto"])
@pytest.mark.parametrize("reasoning, answer", SAYINGS)
@pytest.mark.parametrize("step", [1, 5, 1000])
def test_deepseek_puts_the_thinking_in_reasoning_content(family: str, fmt: str, reasoning: str, answer: str,
                                                         step: int) -> None:
    message, joined = feed(render(family, fmt), reasoning, answer, step)
    assert message["reasoning_content"].strip() == reasoning
    assert message["content"].strip() == answer
    assert "<think>" not in message["content"].replace("`<think>`", "")
    # the streamed deltas add up to the final message, whatever the chunking
    assert joined["reasoning_content"].strip() == reasoning and joined["content"].strip() == answer


@pytest.mark.parametrize("family", sorted(THINKERS))
@pytest.mark.parametrize("reasoning, answer", SAYINGS)
def test_none_leaves_the_thinking_in_content(family: str, reasoning: str, answer: str) -> None:
    message, _ = feed(render(family, "none"), reasoning, answer, 7)
    assert "reasoning_content" not in message
    assert message["content"].startswith("<think>")
    assert reasoning in message["content"] and message["content"].endswith(answer)


def test_an_unknown_reasoning_format_names_itself() -> None:
    assert REASONING_FORMATS == ("none", "auto", "deepseek")
    for bad in ("deepseek-legacy", "DeepSeek", "", None):
        with pytest.raises(ParameterError, match="reasoning_format") as info:
            render("qwen3", bad)  # type: ignore[arg-type]
        assert info.value.param == "reasoning_format"


@pytest.fixture(scope="module")
def r1_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_llama(tmp_path_factory.mktemp("r1") / "tiny-r1.gguf", n_ctx_train=2048, seed=3,
                            chat_template=(TEMPLATES / THINKERS["deepseek-r1"]).read_text())


def test_llama_keeps_content_by_default_and_splits_on_request(r1_model: Path) -> None:
    with Llama(str(r1_model), n_ctx=1024, verbose=False) as llm:
        kw: dict[str, Any] = dict(max_tokens=12, temperature=0, seed=1)
        plain = llm.create_chat_completion(ASK, **kw)["choices"][0]["message"]
        split = llm.create_chat_completion(ASK, reasoning_format="deepseek", **kw)["choices"][0]["message"]
        assert "reasoning_content" not in plain and plain["content"].startswith("<think>")
        # the same tokens: the block never closes, so all of it is reasoning
        assert split["reasoning_content"] and not split["content"]
        assert plain["content"].split("<think>", 1)[1].strip() == split["reasoning_content"].strip()
        chunks = list(llm.create_chat_completion(ASK, reasoning_format="deepseek", stream=True, **kw))
        streamed = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
        assert streamed.strip() == split["reasoning_content"].strip()
        with pytest.raises(ValueError, match="reasoning_format"):
            llm.create_chat_completion(ASK, reasoning_format="thoughts", **kw)


def test_server_splits_by_default_and_per_request(r1_model: Path) -> None:
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from helpers import Server

    server = Server(r1_model, "--parallel", "2", "--ctx-size", "2048")
    try:
        client, mid = server.client(), server.model_id()
        kw: dict[str, Any] = dict(model=mid, messages=ASK, max_tokens=12, temperature=0, seed=1)
        split = client.chat.completions.create(**kw).choices[0].message
        assert getattr(split, "reasoning_content", None) and not split.content  # llama-server's default: auto
        plain = client.chat.completions.create(**kw, extra_body={"reasoning_format": "none"}).choices[0].message
        assert plain.content.startswith("<think>") and not getattr(plain, "reasoning_content", None)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**kw, extra_body={"reasoning_format": "thoughts"})
        assert info.value.body["param"] == "reasoning_format"
    finally:
        server.stop()
    server = Server(r1_model, "--parallel", "1", "--ctx-size", "1024", "--reasoning-format", "none")
    try:
        message = server.client().chat.completions.create(**{**kw, "model": server.model_id()}).choices[0].message
        assert message.content.startswith("<think>")
    finally:
        server.stop()


def test_anthropic_and_responses_get_the_thinking_as_their_own_blocks(r1_model: Path) -> None:
    """The other protocols read the same split: Anthropic's ``thinking`` blocks (and
    ``thinking_delta`` events), Responses' ``reasoning`` items; none of it in the text."""
    anthropic = pytest.importorskip("anthropic")
    pytest.importorskip("fastapi")
    from helpers import Server

    server = Server(r1_model, "--parallel", "2", "--ctx-size", "2048")
    try:
        mid = server.model_id()
        claude = anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0)
        ask: dict[str, Any] = dict(model=mid, max_tokens=12, messages=ASK, extra_body={"temperature": 0, "seed": 1})
        message = claude.messages.create(**ask)
        # the random model never closes the block the template opened: all of it is thinking
        assert [block.type for block in message.content] == ["thinking"] and message.content[0].thinking
        with claude.messages.stream(**ask) as stream:
            events = list(stream)
            final = stream.get_final_message()
        thought = "".join(e.delta.thinking for e in events
                          if e.type == "content_block_delta" and e.delta.type == "thinking_delta")
        assert thought and thought == final.content[0].thinking == message.content[0].thinking
        response = server.client().responses.create(model=mid, input="What is 2 + 2?", max_output_tokens=12,
                                                    temperature=0, extra_body={"seed": 1})
        assert [item.type for item in response.output] == ["reasoning"]
        assert response.output[0].content[0].text.strip() == message.content[0].thinking.strip()
        assert not response.output_text
    finally:
        server.stop()
