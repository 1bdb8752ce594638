"""Images in through llama.cpp's mtmd, via ``Llama``: a random tiny llama and a random gemma3
projector (tools/random_mmproj.py), test-1.jpeg and images made here (Pillow, tests only)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest

from sarai_llama import Llama, _core
from sarai_llama.vision import Llava15ChatHandler, MTMDChatHandler

from random_mmproj import write_vision_pair

PIL = pytest.importorskip("PIL.Image")

TEST_JPEG = Path(__file__).resolve().parent.parent / "vendor/llama.cpp/tools/mtmd/test-1.jpeg"
N_IMAGE_TOKENS = (64 // 4 // 4) ** 2  # the tiny projector: 64 px, 4 px patches, pools of 4


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("vision")
    return write_vision_pair(d / "tiny.gguf", d / "tiny-mmproj.gguf")


@pytest.fixture(scope="module")
def llm(pair: tuple[Path, Path]) -> Llama:
    # F32 weights, flash attention and the step budget off: outputs are exact (architecture.md).
    return Llama(str(pair[0]), mmproj=str(pair[1]), n_ctx=1024, flash_attn=False, step_budget_ms=0,
                 verbose=False, seed=1)


def image(kind: str, size: tuple[int, int], seed: int, mode: str = "RGB") -> bytes:
    import random

    rnd = random.Random(seed)
    img = PIL.new(mode, size)
    n = len(mode)
    img.putdata([tuple(rnd.randrange(256) for _ in range(n)) if n > 1 else rnd.randrange(256)
                 for _ in range(size[0] * size[1])])
    out = io.BytesIO()
    img.save(out, format=kind)
    return out.getvalue()


def uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def ask(llm: Llama, url: str, **kw: object) -> dict:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "look:"},
                                         {"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "what is it?"}]}]
    return llm.create_chat_completion(msgs, max_tokens=kw.pop("max_tokens", 6), temperature=0, **kw)  # type: ignore[arg-type]


def first_logprobs(answer: dict) -> dict[str, float]:
    top = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {t["token"]: t["logprob"] for t in top}


IMAGES = {
    "test-1.jpeg": lambda: TEST_JPEG.read_bytes(),
    "png 64x64": lambda: image("PNG", (64, 64), 1),
    "png 300x17": lambda: image("PNG", (300, 17), 2),
    "jpeg 129x250": lambda: image("JPEG", (129, 250), 3),
    "grey png": lambda: image("PNG", (40, 40), 4, "L"),
    "one pixel": lambda: image("PNG", (1, 1), 5),
    "rgba png": lambda: image("PNG", (33, 31), 6, "RGBA"),
    "bmp": lambda: image("BMP", (20, 30), 7),
}


def test_projector_loads(llm: Llama) -> None:
    vision = llm.runtime.vision
    assert vision is not None and vision.takes_images and not vision.takes_audio
    assert vision.marker == "<__media__>"


@pytest.mark.parametrize("name", list(IMAGES))
def test_image_tokens_match_mtmd(llm: Llama, name: str) -> None:
    """The prompt's token count is the text's plus what mtmd reports for the image; an image
    holds its placeholders and the same image is the same every time."""
    vision = llm.runtime.vision
    data = IMAGES[name]()
    got = vision.tokenize("a " + vision.marker + " b", [data])
    (span,) = got.media
    assert span.n_tokens == N_IMAGE_TOKENS and span.non_causal  # gemma3 reads an image whole
    assert all(t < 0 for t in got.tokens[span.start:span.start + span.n_tokens])
    assert all(t >= 0 for i, t in enumerate(got.tokens) if not span.start <= i < span.start + span.n_tokens)
    text = len(vision.tokenize("a  b", []).tokens)
    assert len(got.tokens) >= text + N_IMAGE_TOKENS  # mtmd adds the family's image begin/end text
    answer = ask(llm, uri(data))
    assert answer["usage"]["prompt_tokens"] == len(
        llm.runtime.vision.tokenize(_rendered(llm, data), [data], True, True).tokens)


def _rendered(llm: Llama, data: bytes) -> str:
    from sarai_llama import chat_completion, vision

    msgs = [{"role": "user", "content": [{"type": "text", "text": "look:"},
                                         {"type": "image_url", "image_url": {"url": uri(data)}},
                                         {"type": "text", "text": "what is it?"}]}]
    msgs, _ = vision.chat_images(llm.runtime.vision, msgs)
    return chat_completion.render(llm.chat_handler(), msgs).prompt


def test_same_image_same_answer_and_cached_equals_uncached(llm: Llama, pair: tuple[Path, Path]) -> None:
    """Greedy answers about one image repeat exactly: the second from the reused prefix and the
    cache of encodings, a fresh Llama from nothing (F32, no flash attention)."""
    url = uri(TEST_JPEG.read_bytes(), "image/jpeg")
    first = ask(llm, url, logprobs=True, top_logprobs=4)
    again = ask(llm, url, logprobs=True, top_logprobs=4)
    assert again["choices"][0]["message"] == first["choices"][0]["message"]
    assert llm.runtime.vision.stats()["n_reused"] >= 1
    with Llama(str(pair[0]), mmproj=str(pair[1]), n_ctx=1024, flash_attn=False, step_budget_ms=0,
               verbose=False) as fresh:
        cold = ask(fresh, url, logprobs=True, top_logprobs=4)
    assert cold["choices"][0]["message"] == first["choices"][0]["message"]
    for a, b in zip(first_logprobs(first).values(), first_logprobs(cold).values()):
        assert a == pytest.approx(b, abs=1e-4)


def test_different_images_change_the_logits(llm: Llama) -> None:
    seen = []
    for name in ("test-1.jpeg", "png 64x64", "grey png", "one pixel"):
        seen.append(first_logprobs(ask(llm, uri(IMAGES[name]()), max_tokens=1, logprobs=True, top_logprobs=5)))
    for i in range(len(seen)):
        for j in range(i + 1, len(seen)):
            assert seen[i] != seen[j], (i, j)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) claims another size: its pixels never come."""
    data = bytearray(image("JPEG", (16, 16), 8))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


BAD = {
    "not an image": (b"hello, world" * 10, "not an image"),
    "truncated png": (image("PNG", (64, 64), 9)[:80], "could not be decoded"),
    "png header only": (_png_header(64, 64), "not an image"),
    "png claiming 60000 x 60000": (_png_header(60000, 60000), "not an image"),
    "jpeg claiming 60000 x 60000": (_jpeg_claiming(60000, 60000), "60000x60000 pixels; at most 64 megapixels"),

    "wav audio": (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40, "not an image"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_bytes_are_value_errors(llm: Llama, name: str) -> None:
    data, words = BAD[name]
    with pytest.raises(ValueError, match=words):
        ask(llm, uri(data))
    assert ask(llm, uri(IMAGES["one pixel"]()))["choices"]  # the model is still fine


@pytest.mark.parametrize("cut", [0.9, 0.5, 0.1, 0.01])
def test_truncated_jpegs_answer_or_refuse(llm: Llama, cut: float) -> None:
    """stb_image decodes a JPEG cut short as far as its data goes (the rest grey), or refuses it:
    an answer or a ValueError, never a crash; a 4000 x 4000 claim with no pixels behind it too."""
    data = TEST_JPEG.read_bytes()
    for sample in (data[:int(len(data) * cut)], _jpeg_claiming(4000, 4000)):
        try:
            assert ask(llm, uri(sample, "image/jpeg"), max_tokens=1)["choices"]
        except ValueError as exc:
            assert "image 1" in str(exc)


@pytest.mark.parametrize("url, words", [
    ("https://example.com/cat.png", "not fetched"),
    ("data:image/png;base64,@@@", "does not decode"),
    ("data:image/png;base64,", "empty"),
    ("file:///nonexistent/cat.png", "cannot read"),
])
def test_bad_urls_are_value_errors(llm: Llama, url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ask(llm, url)


def test_file_urls_are_read(llm: Llama) -> None:
    a = ask(llm, TEST_JPEG.as_uri())
    b = ask(llm, uri(TEST_JPEG.read_bytes(), "image/jpeg"))
    assert a["choices"][0]["message"] == b["choices"][0]["message"]


def test_marker_count_and_audio_parts(llm: Llama) -> None:
    vision = llm.runtime.vision
    with pytest.raises(ValueError, match="2 media markers .* for 1 images"):
        vision.tokenize(vision.marker * 2, [TEST_JPEG.read_bytes()])
    with pytest.raises(ValueError, match="audio input is not supported"):
        llm.create_chat_completion([{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}], max_tokens=1)


def test_no_projector_is_a_clear_error(pair: tuple[Path, Path]) -> None:
    with Llama(str(pair[0]), n_ctx=256, verbose=False) as text_only:
        assert not text_only.runtime.takes_images
        with pytest.raises(ValueError, match="without a projector"):
            ask(text_only, uri(TEST_JPEG.read_bytes()))


def test_chat_handlers_name_the_projector(pair: tuple[Path, Path]) -> None:
    for handler in (MTMDChatHandler(clip_model_path=str(pair[1])), Llava15ChatHandler(clip_model_path=str(pair[1]))):
        with Llama(str(pair[0]), chat_handler=handler, n_ctx=512, verbose=False) as llm:
            assert llm.runtime.takes_images
    with pytest.raises(ValueError, match="multimodal handlers"):
        Llama(str(pair[0]), chat_handler=object(), verbose=False)


def test_a_projector_of_another_width_or_not_a_projector(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    from random_mmproj import write_tiny_mmproj

    wide = write_tiny_mmproj(tmp_path / "wide.gguf", text_n_embd=128)
    with pytest.raises(ValueError, match="cannot load the projector"):
        Llama(str(pair[0]), mmproj=str(wide), verbose=False)
    with pytest.raises(ValueError, match="cannot load the projector"):
        Llama(str(pair[0]), mmproj=str(pair[0]), verbose=False)  # a text model is no projector
    with pytest.raises(FileNotFoundError):
        Llama(str(pair[0]), mmproj=str(tmp_path / "missing.gguf"), verbose=False)


def test_image_requests_batched_equal_alone(pair: tuple[Path, Path]) -> None:
    """Image requests beside text requests, in one engine, give what each gives alone (F32)."""
    from sarai_llama import vision as vision_mod
    from sarai_llama.engine_io import Request
    from sarai_llama.sampling import SamplingParams

    with Llama(str(pair[0]), mmproj=str(pair[1]), n_ctx=2048, n_seq_max=4, flash_attn=False, step_budget_ms=0,
               verbose=False) as llm:
        rt = llm.runtime
        greedy = SamplingParams(temperature=0.0)

        def request(data: bytes | None, text: str) -> Request:
            if data is None:
                return Request(prompt=list(rt.model.tokenize(text.encode(), True, True)), sampling=greedy,
                               max_tokens=8)
            got = vision_mod.media_prompt(rt.vision, rt.model, text + rt.vision.marker + " ok", [data])
            return Request(prompt=list(got.tokens), media=list(got.media), sampling=greedy, max_tokens=8)

        made = [request(IMAGES["png 64x64"](), "a "), request(None, "the cat is"),
                request(TEST_JPEG.read_bytes(), "b "), request(IMAGES["grey png"](), "c ")]
        from sarai_llama.engine import run_all

        together = ["".join(p.text for p in pieces) for pieces in run_all(rt.engine, made)]
        alone = ["".join(p.text for p in pieces) for r in made for pieces in run_all(rt.engine, [r])]
        assert together == alone


def test_a_stream_gets_a_token_in_every_step_of_an_image_prompt(pair: tuple[Path, Path]) -> None:
    """A long prompt with an image, read in pieces under the step budget beside a generating
    stream: the stream gets its token in every step until the image prompt's first token."""
    from sarai_llama import vision as vision_mod
    from sarai_llama.engine_io import Request
    from sarai_llama.sampling import SamplingParams

    with Llama(str(pair[0]), mmproj=str(pair[1]), n_ctx=2048, n_seq_max=2, step_budget_ms=1, verbose=False) as llm:
        rt, greedy = llm.runtime, SamplingParams(temperature=0.0)
        stream = rt.engine.submit(Request(prompt=list(rt.model.tokenize(b"the cat is", True, True)), sampling=greedy,
                                          max_tokens=400, ignore_eos=True))
        while len(stream.tokens) < 3:  # generating, and the step costs measured
            rt.engine.step()
        text = "the river and the stone " * 30
        got = vision_mod.media_prompt(rt.vision, rt.model, text + rt.vision.marker + text, [TEST_JPEG.read_bytes()])
        image_prompt = rt.engine.submit(Request(prompt=list(got.tokens), media=list(got.media), sampling=greedy,
                                                max_tokens=2))
        read, steps = [], 0
        while not image_prompt.tokens:
            before, prompt_before = len(stream.tokens), rt.engine.stats()["n_prompt_tokens"]
            assert rt.engine.step()
            steps += 1
            assert len(stream.tokens) == before + 1, f"the stream got no token in step {steps}"
            read.append(rt.engine.stats()["n_prompt_tokens"] - prompt_before)
        assert sum(read) + image_prompt.n_reused == len(got.tokens), read  # the image among them
        assert steps >= 4, read  # the prompt went in pieces under the budget
        stream.cancel()


def test_a_projector_that_aborts_clip_is_refused_by_the_probe(tmp_path: Path) -> None:
    """A projector whose heads do not divide its width loads in mtmd and aborts the process on
    its first image (GGML_ASSERT in a reshape); the probe builds its graph first and refuses it."""
    import os
    import subprocess
    import sys

    from sarai_llama.errors import ModelLoadError

    text, bad = write_vision_pair(tmp_path / "t.gguf", tmp_path / "bad-mmproj.gguf", n_head=5)
    with pytest.raises(ModelLoadError, match="GGML_ASSERT|killed a probe"):
        Llama(str(text), mmproj=str(bad), verbose=False)
    # The file is as bad as claimed: trusted (no probe), its first image kills the process.
    code = ("import base64, sys; from sarai_llama import Llama; "
            "llm = Llama(sys.argv[1], mmproj=sys.argv[2], verbose=False, n_ctx=256, trusted=True); "
            "url = 'data:image/jpeg;base64,' + base64.b64encode(open(sys.argv[3], 'rb').read()).decode(); "
            "llm.create_chat_completion([{'role': 'user', 'content': [{'type': 'image_url', "
            "'image_url': {'url': url}}]}], max_tokens=1)")
    run = subprocess.run([sys.executable, "-c", code, str(text), str(bad), str(TEST_JPEG)], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, GGML_NO_BACKTRACE="1"))
    assert run.returncode == -6 and "GGML_ASSERT" in run.stderr, (run.returncode, run.stderr[-800:])
