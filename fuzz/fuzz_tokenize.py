"""Fuzz tokenize/detokenize: arbitrary bytes with and without ``special``, and arbitrary token ids.

Runs on the tiny test model (byte-fallback SentencePiece) and, when installed,
Gemma 3's real 262k-token vocabulary. Token ids outside the vocabulary must
raise ``ValueError``; nothing else may fail.
"""

from __future__ import annotations

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama import Llama, _core

_core.set_log_level(5)
MODELS = [Llama(str(_common.tiny_model()), vocab_only=True, verbose=False)]
if (_gemma := _common.gemma_model()) is not None:
    MODELS.append(Llama(str(_gemma), vocab_only=True, verbose=False))


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    llm = MODELS[fdp.ConsumeIntInRange(0, len(MODELS) - 1)]
    add_bos, special, special_out = fdp.ConsumeBool(), fdp.ConsumeBool(), fdp.ConsumeBool()
    ids = [fdp.ConsumeIntInRange(-(2**31), 2**31 - 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    text = fdp.ConsumeBytes(fdp.remaining_bytes())
    tokens = llm.tokenize(text, add_bos=add_bos, special=special)
    n = llm.n_vocab()
    assert all(0 <= t < n for t in tokens), tokens
    llm.detokenize(tokens, special=special_out)
    try:
        llm.detokenize(ids, special=special_out)
        assert all(0 <= t < n for t in ids), f"out-of-range ids accepted: {ids}"
    except ValueError:
        assert not all(0 <= t < n for t in ids)


if __name__ == "__main__":
    _common.run(TestOneInput)
