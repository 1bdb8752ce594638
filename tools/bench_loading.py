"""What the load probe costs: time to a usable model, trusted vs untrusted, per file.

    python tools/bench_loading.py MODEL.gguf [MODEL2.gguf ...] [-r 3]

For each file: ``probe`` alone (the child process; never cached here), a trusted
``load_model`` (in-process only) and an untrusted one (probe + load), medians of
``-r`` runs, the page cache warm (one load first). Numbers, never asserted.
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

    print(f"{'model':<36} {'MB':>7} {'probe s':>8} {'trusted s':>10} {'untrusted s':>12} {'overhead':>9}")
    for path in args.models:
        loading.load_model(path, trusted=True)  # warm the page cache
        probe = median(lambda: loading.probe(path))
        trusted = median(lambda: loading.load_model(path, trusted=True))
        untrusted = median(lambda: loading.load_model(path, trusted=False))
        print(f"{path.name[:36]:<36} {path.stat().st_size / 1e6:>7.0f} {probe:>8.2f} {trusted:>10.2f} "
              f"{untrusted:>12.2f} {untrusted / trusted - 1:>8.0%}")


if __name__ == "__main__":
    main()
