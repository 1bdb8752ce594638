"""Loading a GGUF model file so that no file can kill the process.

llama.cpp's loader stops the process (``GGML_ASSERT`` -> ``abort()``) on many
facts a file can state, e.g. ``llama.block_count = 100000``; there are dozens
of such asserts and each new architecture adds more, so checking them one by
one in front of llama.cpp would always lag behind it. Instead an untrusted file
is loaded first by a short-lived *probe* process, the same way this process
will load it; a probe that dies turns into :class:`ModelLoadError` carrying
llama.cpp's own message, and this process never sees the file's bad side.

Three layers, cheapest first (every caller -- ``Llama``, the server, ``bench``,
``tune`` -- goes through :func:`load_model`):

1. the GGUF header is read with ggml's parser (``_core.inspect_gguf``), which
   refuses a file that is not GGUF with an exception;
2. the compiled core's ``validate_gguf`` refuses, with a message of ours, the
   facts that were found to abort before (zero layers, duplicate tokens); it
   also protects trusted loads;
3. the probe (skipped for trusted files): a child interpreter loads the model
   (memory-mapped, not repacked) and, unless ``vocab_only``, creates a small
   context (which builds llama.cpp's compute graph and so runs the shape asserts
   of every operation) and decodes a 2-token batch and one more token (which
   runs the kernels and their asserts on the file's values); with a projector
   (``mmproj``), it loads that too and builds its encoder's graph for the largest
   image (mtmd's warm-up: clip's shape asserts; no image is encoded, which on a
   real projector takes seconds to minutes); then it exits.

Why a new interpreter (``subprocess``: fork+exec) and not ``os.fork``: a fork
copies a process that may hold other threads (the server's scheduler, ggml's
thread pool, uvicorn), and a lock one of them held stays locked forever in
the child (malloc, llama.cpp's log mutex), so the probe could hang; an exec'd
process starts clean. qemu-user does not follow exec, so under emulation the
probe runs on the host CPU -- harmless, because what the probe decides
(whether the loader accepts the file) does not depend on the instruction set.

Cost (docs/robustness.md has the measurements): one interpreter start and import
(about 0.2 s), one memory-mapped load and two small decodes; a file that passed is remembered
for the life of the process (by path, device, inode, size and modification
time), so loading it again costs nothing extra. ``trusted=True`` or
``SARAI_TRUSTED_MODELS=1`` skips the probe for files you made yourself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

__all__ = ["TRUSTED_ENV", "is_trusted", "load_model", "probe"]

#: Set to 1 to skip the probe for every file (files you produced or checked).
TRUSTED_ENV = "SARAI_TRUSTED_MODELS"
#: Exit status of a probe whose load failed cleanly (an exception, not a crash).
_REFUSED = 3
#: Marks the probe's own message on its stderr, so it is told from llama.cpp's log.
_MARK = "sarai-probe-refused: "

#: How much lower the probe process's CPU priority is than this process's (``os.nice``).
PROBE_NICE = 10
_passed: set[tuple[Any, ...]] = set()
_passed_lock = threading.Lock()


def is_trusted(trusted: bool | None) -> bool:
    """``trusted`` if given, else whether ``SARAI_TRUSTED_MODELS`` is set to 1/true/yes."""
    if trusted is not None:
        return bool(trusted)
    return os.environ.get(TRUSTED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _identity(path: Path) -> tuple[Any, ...]:
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _key(path: Path, vocab_only: bool, mmproj: Path | None = None) -> tuple[Any, ...]:
    """What a probe's verdict holds for: the files as they are now, and how the model was loaded."""
    return (*_identity(path), vocab_only, () if mmproj is None else _identity(mmproj))


def _reason(stderr: str) -> str:
    """llama.cpp's own words from a dead probe's stderr: the assert line, else the last error line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "GGML_ASSERT" in ln or "GGML_ABORT" in ln or "fatal error" in ln:
            return ln
    for ln in reversed(lines):
        if "error" in ln.lower() or "terminate" in ln.lower():
            return ln
    return lines[-1] if lines else "no message"


def probe(path: str | os.PathLike[str], vocab_only: bool = False,
          mmproj: str | os.PathLike[str] | None = None) -> None:
    """Load ``path`` (and the projector ``mmproj`` beside it, if given) in a short-lived child
    interpreter; raise :class:`ModelLoadError` if the load kills the child (llama.cpp's
    message included) or fails cleanly there.

    Returns quietly when the files load, and also when the child could not run at
    all (e.g. ``sys.executable`` is not a Python that can import this package):
    then it warns, and the load goes ahead unprobed.
    """
    path = Path(path)
    key = _key(path, vocab_only, None if mmproj is None else Path(mmproj))
    with _passed_lock:
        if key in _passed or (vocab_only and _key(path, False) in _passed):
            return
    package_root = str(Path(__file__).resolve().parent.parent)
    # os.nice: the probe yields the cores to whatever this process serves meanwhile (a server
    # loading one more model keeps streaming the others'); on an idle machine it costs nothing.
    code = (f"import os, sys; os.nice({PROBE_NICE}); sys.path.insert(0, sys.argv[1]); "
            "from sarai_llama.loading import _probe_main; "
            "_probe_main(sys.argv[2], sys.argv[3] == '1', sys.argv[4] or None)")
    # GGML_NO_BACKTRACE: a dying probe must not attach gdb to itself (slow, and its output is noise here).
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    try:
        run = subprocess.run([sys.executable, "-c", code, package_root, str(path), "1" if vocab_only else "0",
                              "" if mmproj is None else os.fspath(mmproj)],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, check=False)
    except OSError as exc:
        warnings.warn(f"could not start the model probe ({exc}); loading {path} unprobed", RuntimeWarning,
                      stacklevel=3)
        return
    err = run.stderr.decode("utf-8", errors="replace")
    if run.returncode == 0:
        with _passed_lock:
            _passed.add(key)
        return
    if run.returncode < 0 or run.returncode == 128 + signal.SIGABRT:
        signum = -run.returncode if run.returncode < 0 else signal.SIGABRT
        name = signal.Signals(signum).name
        hint = " (probably out of memory: the file asks for more than this machine has)" \
            if signum == signal.SIGKILL else ""
        raise ModelLoadError(f"{path}: llama.cpp cannot load this file; loading it killed a probe process with "
                             f"{name}{hint}: {_reason(err)}")
    if run.returncode == _REFUSED and _MARK in err:
        raise ModelLoadError(err.split(_MARK, 1)[1].strip())
    warnings.warn(f"the model probe could not run (exit status {run.returncode}: {_reason(err)}); "
                  f"loading {path} unprobed", RuntimeWarning, stacklevel=3)


def _probe_main(path: str, vocab_only: bool, mmproj: str | None = None) -> None:
    """The probe process: load as :func:`load_model` will, then exit (never returns)."""
    try:  # if memory runs out, the kernel should end the probe, not its parent
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    from . import _core
    from .context_config import ContextConfig

    _core.set_log_level(4)  # errors only: the parent reads them as the reason
    try:
        # Weights stay memory-mapped and unread (no repacking): the loader's checks run, the cost stays small.
        model = _core.Model(path, vocab_only=vocab_only, use_mmap=True, use_extra_bufts=False)
    except (RuntimeError, ValueError) as exc:
        sys.stderr.write(f"{_MARK}{exc}\n")
        sys.stderr.flush()
        os._exit(_REFUSED)
    if not vocab_only and model.n_vocab > 0:
        try:
            # Creating a context builds the compute graph (every op's shape asserts run on the
            # file's shapes); a 2-token batch and a 1-token step run the kernels, whose asserts
            # check values (a negative or NaN norm epsilon aborts only there). One thread: on a
            # busy machine more would mostly wait for each other.
            ctx = _core.Context(model, ContextConfig(n_ctx=64, n_batch=8, n_threads=1).to_core())
            token = model.token_bos if 0 <= model.token_bos < model.n_vocab else 0
            ctx.eval([token, token], False)
            ctx.eval([token], False)
        except (RuntimeError, ValueError):
            pass  # a clean failure here depends on the context asked for; the real one reports its own
        if mmproj is not None:
            try:  # warmup: clip builds its graph for the largest image (a bad shape aborts here)
                _core.Vision(model, mmproj, 1, warmup=True)
            except (RuntimeError, ValueError):
                pass  # a clean refusal: the real load gives the same reason
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: nothing here needs it


def load_model(path: str | os.PathLike[str], *, vocab_only: bool = False, use_mmap: bool = True,
               use_mlock: bool = False, use_extra_bufts: bool = True, trusted: bool | None = None,
               mmproj: str | os.PathLike[str] | None = None) -> Any:
    """A ``_core.Model`` for the GGUF at ``path``, or an exception; never a dead process.

    ``FileNotFoundError`` when there is no such file; :class:`ModelLoadError`
    (a ``ValueError``) with llama.cpp's reason when the file is not a model it
    can load. ``mmproj``: a projector GGUF that will be loaded beside the model
    (:func:`sarai_llama.vision.load`); the probe checks it with the model. ``trusted``
    (default: ``SARAI_TRUSTED_MODELS``) skips the probe process; a trusted hostile
    file may still abort the process.
    """
    from . import _core

    path = Path(path)
    files = [(path, "model")] + ([] if mmproj is None else [(Path(mmproj), "projector")])
    for file, what in files:
        if not file.is_file():
            raise FileNotFoundError(f"{what} file not found: {file}")
        try:  # the GGUF header: a file that is not GGUF at all is refused here
            _core.inspect_gguf(str(file))
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
    if not is_trusted(trusted):
        probe(path, vocab_only, mmproj)
    try:
        return _core.Model(str(path), vocab_only=vocab_only, use_mmap=use_mmap, use_mlock=use_mlock,
                           use_extra_bufts=use_extra_bufts)
    except (RuntimeError, ValueError) as exc:  # ValueError: a GGUF refused before llama.cpp saw it
        raise ModelLoadError(str(exc)) from exc
