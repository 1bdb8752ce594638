"""What the load probe costs: time to a usable model, trusted vs untrusted, per file.

    python tools/bench_loading.py MODEL.gguf [MODEL2.gguf ...] [-r 3]

For each file: ``probe`` alone (the child process; never cached here), a trusted
``load_model`` (in-process only), an untrusted one (probe + load), and the same two
up to a first decoded 2-token prompt (one thread; a memory-mapped load reads the
weights only then). Medians of ``-r`` runs, the page cache warm. Numbers, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    args = ap.parse_args()
    from sarai_llama import _core, loading

    _core.set_log_level(5)

    def median(fn) -> float:
        samples = []
        for _ in range(args.repetitions):
            loading._passed.clear()  # every run pays the probe
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    from sarai_llama.context_config import ContextConfig

    def first_token(trusted: bool) -> None:
        """Load, make a context, decode a 2-token prompt: the weights are paged in."""
        model = loading.load_model(path, trusted=trusted)
        ctx = _core.Context(model, ContextConfig(n_ctx=64, n_batch=8, n_threads=1).to_core())
        ctx.eval([0, 0], False)

    print(f"{'model':<28} {'MB':>6} {'probe':>6} {'load':>6} {'load+probe':>10} "
          f"{'1st token':>9} {'1st token+probe':>15}   (seconds)")
    for path in args.models:
        loading.load_model(path, trusted=True)  # warm the page cache
        probe = median(lambda: loading.probe(path))
        trusted = median(lambda: loading.load_model(path, trusted=True))
        untrusted = median(lambda: loading.load_model(path, trusted=False))
        first, first_probed = median(lambda: first_token(True)), median(lambda: first_token(False))
        print(f"{path.name[:28]:<28} {path.stat().st_size / 1e6:>6.0f} {probe:>6.2f} {trusted:>6.2f} "
              f"{untrusted:>10.2f} {first:>9.2f} {first_probed:>15.2f}")


if __name__ == "__main__":
    main()
