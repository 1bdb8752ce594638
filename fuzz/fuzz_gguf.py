"""Fuzz the GGUF check/load path: ``Llama(file)`` (sarai_llama.loading.load_model, the
engine's context), then two generated tokens.

Inputs are raw files, or the tiny test model with fields patched in place: the
header's scalar values, array and string lengths, tensor dimensions, types and
offsets (found with the gguf package), set to edge values or fuzzed bytes.
Acceptable outcomes: it loads and generates, or ``ModelLoadError``; a generation may
also refuse with ``ValueError`` (a vocabulary without the prompt's tokens) or
``RuntimeError`` (a clean llama.cpp failure).
"""

from __future__ import annotations


import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama import Llama, _core
    from sarai_llama.errors import ModelLoadError

EDGE = [0, 1, 2, 3, 7, 8, 255, 256, 4095, 65535, 65536, 100000, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1]
WORK = _common.workdir()
SEED = _common.tiny_model(WORK).read_bytes()
_core.set_log_level(5)


def _targets() -> list[tuple[int, int]]:
    """(offset, size) of every patchable number in the seed file."""
    import gguf

    reader = gguf.GGUFReader(str(WORK / "tiny.gguf"))
    out = []
    fields = list(reader.fields.values()) + [t.field for t in reader.tensors]
    for field in fields:
        off = field.offset
        for i, part in enumerate(field.parts):
            size = int(part.nbytes)
            # numbers only (lengths, counts, types, values, dims, offsets); names and strings are left alone
            if size in (1, 2, 4, 8) and part.dtype.kind in "uif" and (i != 1 or field.types == []):
                out.append((off, size))
            off += size
    return out


TARGETS = _targets()
FILE = WORK / "input.gguf"


def make_file(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:  # a raw file
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    buf = bytearray(SEED)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        if mode == 1:  # a number in the header set to an edge value or fuzzed bytes
            off, size = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
            if fdp.ConsumeBool():
                value = EDGE[fdp.ConsumeIntInRange(0, len(EDGE) - 1)] & ((1 << (8 * size)) - 1)
                buf[off:off + size] = value.to_bytes(size, "little")
            else:
                buf[off:off + size] = fdp.ConsumeBytes(size).ljust(size, b"\0")
        else:  # a byte anywhere in the first 64 KiB (header, vocabulary, tensor infos)
            buf[fdp.ConsumeIntInRange(0, min(len(buf), 65536) - 1)] = fdp.ConsumeInt(1) & 0xFF
    return bytes(buf)


def TestOneInput(data: bytes) -> None:
    FILE.write_bytes(make_file(data))
    try:
        llm = Llama(str(FILE), n_ctx=128, n_batch=32, n_threads=1, verbose=False)
    except ModelLoadError:
        return
    try:
        llm("the a", max_tokens=2, temperature=0.0)
    except (ValueError, RuntimeError):
        pass
    llm.close()


if __name__ == "__main__":
    _common.run(TestOneInput)
