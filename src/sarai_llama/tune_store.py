"""Where ``sarai-llama tune`` keeps its results: one record per (model file, build, CPU) and job.

Below :mod:`~sarai_llama.threads` (``choose_threads(..., "tuned")`` reads a record)
and :mod:`~sarai_llama.tune` (which measures and writes one), so neither imports
upwards. The file is ``$XDG_CONFIG_HOME/sarai-llama/tune.json`` (default
``~/.config``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from . import cpu

__all__ = ["config_path", "load_saved", "save", "tune_key"]


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sarai-llama" / "tune.json"


def tune_key(model_path: str | os.PathLike[str]) -> str:
    """Identity of (model file, installed build, CPU): a saved result applies only to all three."""
    import sarai_llama

    st = os.stat(model_path)
    info = sarai_llama.build_info()
    return "|".join([
        os.path.abspath(model_path), str(st.st_size), str(int(st.st_mtime)),
        info["build_type"], info["date"], sarai_llama.system_info()["cpu_variant"], cpu.model_name(),
    ])


def load_saved(model_path: str | os.PathLike[str], job: str = "default") -> dict[str, Any] | None:
    """The saved winner for this model, build, CPU and job, or None.

    tune.json is a file anyone may edit: a record that is unreadable or not of the
    shape :func:`sarai_llama.tune.result_record` writes (thread count 1..512, repack a bool) is
    ignored with a warning, never passed on to llama.cpp.
    """
    from .context_config import MAX_THREADS

    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        warnings.warn(f"ignoring {path}: {exc}", RuntimeWarning, stacklevel=2)
        return None
    jobs = data.get(tune_key(model_path), {}) if isinstance(data, dict) else None
    record = jobs.get(job) if isinstance(jobs, dict) else "damaged"
    if record is None:
        return None
    threads, repack = (record.get("n_threads"), record.get("repack")) if isinstance(record, dict) else (None, None)
    if not (isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= MAX_THREADS
            and isinstance(repack, bool)):
        warnings.warn(f"ignoring the saved tune result in {path} for job {job!r}: not a valid record",
                      RuntimeWarning, stacklevel=2)
        return None
    return record


def save(model_path: str | os.PathLike[str], job: str, result: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):  # a damaged file is replaced, not crashed on
        data = {}
    key = tune_key(model_path)
    if not isinstance(data.get(key), dict):
        data[key] = {}
    data[key][job] = result
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # never a half-written file
    return path
