"""Fuzz image bytes into the projector: mtmd's decoder (stb_image), preprocessing and encoder.

Runs ``_core.Vision.tokenize`` (decode, check, preprocess, encode) on a random tiny llama
with a random gemma3 projector (tools/random_mmproj.py), with one or two images. A bad
image must raise ``ValueError``; nothing else may fail, and the process must not crash.
"""

from __future__ import annotations

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama import _core, vision
    from sarai_llama.loading import load_model

from random_mmproj import write_vision_pair

_core.set_log_level(5)
_work = _common.workdir()
_text, _proj = write_vision_pair(_work / "tiny.gguf", _work / "tiny-mmproj.gguf")
MODEL = load_model(_text, trusted=True)
VISION = vision.load(MODEL, _proj, 1)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    two = fdp.ConsumeBool()
    split = fdp.ConsumeIntInRange(0, len(data))
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    images = [payload[:split], payload[split:]] if two else [payload]
    try:
        got = VISION.tokenize(" ".join([VISION.marker] * len(images)) + " ok", images)
    except ValueError:
        return
    assert len(got.media) == len(images)
    for span in got.media:
        assert span.n_tokens > 0 and len(span.id) == 64


if __name__ == "__main__":
    _common.run(TestOneInput)
