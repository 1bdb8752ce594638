"""Fuzz ``Llama.load_state`` with foreign, truncated and patched state bytes, then generate.

A state that does not fit must raise ``ValueError``; one llama.cpp accepts must
leave a model that still generates.
"""

from __future__ import annotations

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama import Llama, _core
    from sarai_llama.llama import LlamaState

_core.set_log_level(5)
LLM = Llama(str(_common.tiny_model()), n_ctx=64, n_batch=16, n_threads=1, verbose=False)
LLM("the a b", max_tokens=3, temperature=0.0)
GOOD = LLM.save_state()


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:  # foreign bytes
        blob = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    elif mode == 1:  # truncated
        blob = GOOD.llama_state[:fdp.ConsumeIntInRange(0, len(GOOD.llama_state))]
    else:  # patched: a few bytes, mostly in the header and cell metadata
        buf = bytearray(GOOD.llama_state)
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            buf[fdp.ConsumeIntInRange(0, min(len(buf), 512) - 1)] = fdp.ConsumeInt(1) & 0xFF
        blob = bytes(buf)
    ids = list(GOOD.input_ids)
    if fdp.ConsumeBool() and ids:
        ids[fdp.ConsumeIntInRange(0, len(ids) - 1)] = fdp.ConsumeIntInRange(-5, 2**31 - 1)
    try:
        LLM.load_state(LlamaState(tuple(ids), blob, GOOD.n_ctx))
    except ValueError:
        LLM.reset()
        return
    try:
        LLM("the", max_tokens=2, temperature=0.0)
    finally:
        LLM.reset()


if __name__ == "__main__":
    _common.run(TestOneInput)
