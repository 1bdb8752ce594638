"""``sarai-llama bench``: prompt processing and generation speed, measured llama-bench's way.

Method (as llama-bench): one warm-up run, then ``repetitions`` runs; each run
clears the KV cache and decodes random tokens through the package's own decode
path (``_core.Context.eval``): ``n_prompt`` tokens in batches of ``n_batch``
for pp, then ``n_gen`` single-token decodes for tg. Results carry llama-bench's
field names (``n_prompt``, ``n_gen``, ``n_threads``, ``avg_ts``, ``stddev_ts``,
``samples_ts`` ...) plus what was measured where (build, CPU variant, model).
"""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import cpu


@dataclass
class BenchResult:
    model_filename: str
    model_type: str
    model_size: int
    model_n_params: int
    n_threads: int
    n_batch: int
    n_ubatch: int
    type_k: str
    n_prompt: int
    n_gen: int
    avg_ts: float
    stddev_ts: float
    samples_ts: list[float]
    samples_ns: list[int]
    build_type: str
    cpu_variant: str
    cpu_info: str
    build_commit: str
    test_time: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def test(self) -> str:
        parts = []
        if self.n_prompt:
            parts.append(f"pp{self.n_prompt}")
        if self.n_gen:
            parts.append(f"tg{self.n_gen}")
        return "+".join(parts)


def parse_count_list(text: str) -> list[int]:
    """Like :func:`parse_int_list` but 0 is allowed (``-p 0``: no prompt test, as llama-bench)."""
    return parse_int_list(text, minimum=0)


def parse_int_list(text: str, minimum: int = 1) -> list[int]:
    """``"1,2,4"`` or ``"1-4"`` (llama-bench's list syntax) -> integers >= ``minimum``."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    if not out or any(v < minimum for v in out):
        raise ValueError(f"expected integers >= {minimum}, got {text!r}")
    return out


def _one_run(ctx: Any, n_vocab: int, n_prompt: int, n_gen: int, rng: random.Random) -> int:
    """One repetition; returns nanoseconds."""
    ctx.clear()
    start = time.perf_counter_ns()
    if n_prompt:
        ctx.eval([rng.randrange(n_vocab) for _ in range(n_prompt)], False)
    for _ in range(n_gen):
        ctx.eval([rng.randrange(n_vocab)], False)
    return time.perf_counter_ns() - start


def run_bench(
    model_path: str | Path,
    *,
    n_prompt: Iterable[int] = (512,),
    n_gen: Iterable[int] = (128,),
    threads: Iterable[int] = (2,),
    n_batch: Iterable[int] = (2048,),
    n_ubatch: Iterable[int | None] = (None,),
    type_k: str = "f16",
    repetitions: int = 5,
    progress: Any = None,
) -> list[BenchResult]:
    """Measure every combination; pp tests (n_gen=0) and tg tests (n_prompt=0) separately, as llama-bench."""
    import sarai_llama
    from sarai_llama import _core
    from sarai_llama.context_config import ContextConfig, kv_type
    from sarai_llama.loading import load_model

    info = sarai_llama.build_info()
    sysinfo = sarai_llama.system_info()
    model = load_model(model_path)
    tests = [(p, 0) for p in n_prompt if p] + [(0, g) for g in n_gen if g]
    results: list[BenchResult] = []
    rng = random.Random(42)
    for nb in n_batch:
        for nub in n_ubatch:
            for nt in threads:
                config = ContextConfig(n_ctx=max(p + g for p, g in tests) + 16, n_batch=nb, n_ubatch=nub,
                                       n_threads=nt, type_k=kv_type(type_k), type_v=kv_type(type_k))
                ctx = _core.Context(model, config.to_core())
                for p, g in tests:
                    _one_run(ctx, model.n_vocab, p, g, rng)  # warm-up
                    samples = []
                    for _ in range(repetitions):
                        samples.append(_one_run(ctx, model.n_vocab, p, g, rng))
                        if progress:
                            progress()
                    ts = [(p + g) / (ns / 1e9) for ns in samples]
                    results.append(BenchResult(
                        model_filename=str(model_path), model_type=model.desc, model_size=model.size,
                        model_n_params=model.n_params, n_threads=nt, n_batch=nb, n_ubatch=config.n_ubatch,
                        type_k=type_k, n_prompt=p, n_gen=g, avg_ts=statistics.mean(ts),
                        stddev_ts=statistics.stdev(ts) if len(ts) > 1 else 0.0, samples_ts=ts, samples_ns=samples,
                        build_type=info["build_type"], cpu_variant=sysinfo["cpu_variant"],
                        cpu_info=cpu.model_name(), build_commit=info["llama_version"]["commit"][:7],
                        test_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        extra={"build_info": {k: info[k] for k in ("build_type", "date", "isa_flags", "lto", "blas", "compiler")}},
                    ))
                del ctx
    return results


def format_results(results: list[BenchResult], fmt: str) -> str:
    """llama-bench's ``-o md|csv|json``."""
    if fmt == "json":
        return json.dumps([{**asdict(r), "test": r.test} for r in results], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        rows = [{k: v for k, v in asdict(r).items() if k != "extra"} for r in results]
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
        return buf.getvalue()
    if fmt != "md":
        raise ValueError(f"unknown output format {fmt!r} (md, csv, json)")
    header = "| model | size | build | variant | threads | n_batch | n_ubatch | test | t/s |"
    lines = [header, "|" + "---|" * 9]
    for r in results:
        lines.append(
            f"| {r.model_type} | {r.model_size / 2**20:.2f} MiB | {r.build_type} | {r.cpu_variant} | {r.n_threads} | "
            f"{r.n_batch} | {r.n_ubatch} | {r.test} | {r.avg_ts:.2f} ± {r.stddev_ts:.2f} |"
        )
    return "\n".join(lines)


def compare(a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]], a_name: str = "A", b_name: str = "B") -> str:
    """The ratio table of two ``-o json`` result files (B / A), matched by test and settings."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["n_prompt"], row["n_gen"], row["n_threads"], row["n_batch"], row["n_ubatch"], row["type_k"])

    def label(rows: list[dict[str, Any]]) -> str:
        r = rows[0]
        blas = (r.get("extra", {}).get("build_info", {}) or {}).get("blas")
        return f"{r['build_type']}/{r['cpu_variant']}" + (f"+{blas['vendor']}" if blas else "")

    b_by_key = {key(r): r for r in b_rows}
    lines = [f"A = {a_name} ({label(a_rows)}), B = {b_name} ({label(b_rows)})"]
    if {r["model_filename"] for r in a_rows} != {r["model_filename"] for r in b_rows}:
        lines.append("note: the two files measured different models")
    if {r["cpu_info"] for r in a_rows} != {r["cpu_info"] for r in b_rows}:
        lines.append("note: the two files were measured on different CPUs")
    lines += ["| test | threads | n_batch | A t/s | B t/s | B/A |", "|---|---|---|---|---|---|"]
    unmatched = 0
    for row in a_rows:
        other = b_by_key.get(key(row))
        if other is None:
            unmatched += 1
            continue
        test = "+".join(x for x in (f"pp{row['n_prompt']}" if row["n_prompt"] else "",
                                    f"tg{row['n_gen']}" if row["n_gen"] else "") if x)
        lines.append(f"| {test} | {row['n_threads']} | {row['n_batch']} | {row['avg_ts']:.2f} ± {row['stddev_ts']:.2f} | "
                     f"{other['avg_ts']:.2f} ± {other['stddev_ts']:.2f} | {other['avg_ts'] / row['avg_ts']:.3f} |")
    if unmatched:
        lines.append(f"note: {unmatched} result(s) of A have no counterpart with the same settings in B")
    return "\n".join(lines)


def plot(results: list[BenchResult], path: str | Path) -> Path:
    """Draw throughput against threads, one line per test (needs ``pip install sarai-llama[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'sarai-llama[plot]'") from exc
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for test in dict.fromkeys(r.test for r in results):
        rows = sorted((r for r in results if r.test == test), key=lambda r: r.n_threads)
        ax.errorbar([r.n_threads for r in rows], [r.avg_ts for r in rows], yerr=[r.stddev_ts for r in rows],
                    marker="o", capsize=3, label=test)
    first = results[0]
    ax.set_xlabel("threads")
    ax.set_ylabel("tokens / s")
    ax.set_title(f"{first.model_type} - {first.build_type} ({first.cpu_variant}) - {first.cpu_info}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
