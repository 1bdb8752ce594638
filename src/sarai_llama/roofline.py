"""The physical limit of generation: memory bandwidth over the bytes a token reads.

Generating one token multiplies the current hidden state by every weight matrix once,
so each token reads all weights from memory (they are far larger than any cache), and
tokens/s can be at most ``bandwidth / weight_bytes_per_token``: the roofline. The
bandwidth is measured by ``_core.read_bandwidth`` (src/_core/membw.h): a multi-threaded
streaming read of a buffer much larger than the last-level cache, best of several passes,
on ordinary 4 KiB pages, as the weights are when llama.cpp maps the file or repacks it
into its own buffers (transparent huge pages would read about 30% faster on some
machines; the weights do not get them, so the roofline does not either).

Prompt processing is compute-bound and has no such measured peak here: its kernels
(int8 dot products on repacked blocks, or OpenBLAS's SGEMM) differ per build and per
type, and a synthetic loop's peak is not one any of them can reach, so bench reports
its achieved GFLOP/s (two per weight per token) and no fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Bytes read per measurement pass (1 GiB): 30 times a 32 MiB L3, so no cache holds it.
DEFAULT_BUFFER_BYTES = 1 << 30
#: Timed passes; the best is kept (interference only ever slows a pass down).
DEFAULT_PASSES = 5


@dataclass(frozen=True)
class Bandwidth:
    """Sustained read bandwidth in bytes/s at ``threads`` threads (best and median pass)."""

    bytes_per_s: float
    median_bytes_per_s: float
    threads: int
    buffer_bytes: int

    @property
    def gb_per_s(self) -> float:
        """Best pass in GB/s (10^9 bytes)."""
        return self.bytes_per_s / 1e9


def measure_bandwidth(threads: int, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                      passes: int = DEFAULT_PASSES) -> Bandwidth:
    """This machine's read bandwidth with ``threads`` threads (about 0.5 s with the defaults).

    ValueError for threads or passes < 1 or a buffer under 1 MiB."""
    from . import _core

    b = _core.read_bandwidth(buffer_bytes, threads, passes)
    return Bandwidth(float(b["bytes_per_s"]), float(b["median_bytes_per_s"]), int(b["threads"]), int(b["bytes"]))


def weight_bytes_per_token(model_path: str | Path) -> int:
    """Bytes of weights one generated token reads: every tensor but the token embedding,
    of which one row per token is read (it counts in full when it is also the output
    matrix, as in models with tied embeddings: no ``output.weight``)."""
    from . import _core

    tensors = _core.gguf_tensors(str(model_path))
    names = {name for name, _, _ in tensors}
    tied = "output.weight" not in names
    return sum(size for name, _, size in tensors if tied or name != "token_embd.weight")


def fraction(tokens_per_s: float, bytes_per_token: int, bandwidth: Bandwidth) -> float:
    """Generation's share of the roofline: bytes read per second over the bandwidth."""
    return tokens_per_s * bytes_per_token / bandwidth.bytes_per_s
