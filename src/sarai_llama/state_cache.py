"""The state cache both drivers share: KV states of sequences kept after other requests took them.

``_core.StateCache`` (``src/_core/state_cache.{h,cpp}``) holds the states, LRU up
to a byte budget, optionally written through to a directory; the engine stashes
a sequence's state when another request is about to take its sequence and
restores the longest cached prefix of a new prompt (``engine_state.cpp``). This
module names what the C++ side cannot know: which model file and KV layout a
state belongs to (:func:`identity`, written into every disk file so that a file
of another model is refused), and the defaults of the disk tier.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from . import _core

__all__ = ["DISK_DEFAULT_BYTES", "create", "identity"]

#: the disk tier's default size (``--cache-disk``): states of a few hundred long
#: conversations of a small model, a few dozen of a large one
DISK_DEFAULT_BYTES = 10 << 30
#: bytes hashed at each end of the model file: its header (metadata, tensor table)
#: and its last tensors' data, so a fine-tune of the same shape differs too
_SAMPLE = 1 << 20


def identity(model_path: str | os.PathLike[str], kv_layout: str) -> str:
    """The model file and KV layout a state belongs to, as one string.

    The file's name, size and a SHA-256 of its first and last MiB (reading the
    whole file would take seconds per GB at start-up), plus ``kv_layout`` (the
    K/V types and flash attention, which change the state's bytes).
    """
    path = Path(model_path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            f.seek(size - _SAMPLE)
        h.update(f.read(_SAMPLE))
    return f"{path.name}|{size}|{h.hexdigest()[:32]}|{kv_layout}"


def create(model_path: str | os.PathLike[str], kv_layout: str, ram_bytes: int, disk_dir: str | None = None,
           disk_bytes: int = DISK_DEFAULT_BYTES) -> Any:
    """A ``_core.StateCache`` for this model holding up to ``ram_bytes`` in RAM (0: nothing),
    written through to ``disk_dir`` (up to ``disk_bytes``) when given."""
    if ram_bytes < 0 or disk_bytes < 0:
        raise ValueError("state cache sizes must be >= 0 bytes")
    cache = _core.StateCache(int(ram_bytes), identity(model_path, kv_layout))
    if disk_dir:
        cache.set_disk(str(disk_dir), int(disk_bytes))
    return cache
