"""``sarai-llama tune``: find the fastest settings for a model on this machine and remember them.

The search measures, through the package's own decode path, prompt processing
and generation for threads x n_batch x n_ubatch x weight repacking (llama.cpp's
extra buffer types), coarse first, then around the best, within a time budget.
Winners are saved per (model, build, CPU) and per job in
``$XDG_CONFIG_HOME/sarai-llama/tune.json``; ``Llama(n_threads="tuned")``, ``serve
--threads tuned`` and ``sarai-llama run`` use a saved result when it matches, else the
thread policy (``threads.choose_threads``).
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import cpu

#: How much prompt processing and generation count for each workload.
WORKLOADS = {"balanced": (0.5, 0.5), "prompt": (0.9, 0.1), "generate": (0.1, 0.9)}


@dataclass
class Trial:
    n_threads: int
    n_batch: int
    n_ubatch: int
    repack: bool
    pp_ts: float = 0.0
    tg_ts: float = 0.0

    def score(self, workload: str) -> float:
        w_pp, w_tg = WORKLOADS[workload]
        # Weighted harmonic mean: time per token is what adds up in a job.
        return 1.0 / (w_pp / self.pp_ts + w_tg / self.tg_ts)


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
    shape :func:`result_record` writes (thread count 1..512, repack a bool) is
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


def _measure(model_path: str, trial: Trial, n_prompt: int, n_gen: int, models: dict[bool, Any]) -> Trial:
    from . import _core
    from .context_config import ContextConfig
    from .loading import load_model

    model = models.get(trial.repack)
    if model is None:
        model = models[trial.repack] = load_model(model_path, use_extra_bufts=trial.repack)
    config = ContextConfig(n_ctx=n_prompt + n_gen + 16, n_batch=trial.n_batch, n_ubatch=trial.n_ubatch,
                           n_threads=trial.n_threads)
    ctx = _core.Context(model, config.to_core())
    rng = random.Random(0)
    prompt = [rng.randrange(model.n_vocab) for _ in range(n_prompt)]
    ctx.eval(prompt[:8], False)  # warm-up
    ctx.clear()
    start = time.perf_counter()
    ctx.eval(prompt, False)
    trial.pp_ts = n_prompt / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(n_gen):
        ctx.eval([rng.randrange(model.n_vocab)], False)
    trial.tg_ts = n_gen / (time.perf_counter() - start)
    return trial


def _thread_candidates(usable: int) -> list[int]:
    coarse = {1, usable, max(1, usable // 2), max(1, (usable * 3) // 4)}
    n = 2
    while n < usable:
        coarse.add(n)
        n *= 2
    return sorted(coarse)


def tune(
    model_path: str | os.PathLike[str],
    *,
    budget_s: float = 60.0,
    workload: str = "balanced",
    n_prompt: int = 256,
    n_gen: int = 32,
    log: Any = None,
) -> tuple[Trial, list[Trial]]:
    """Search the settings; returns (winner, every trial measured)."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}")
    model_path = str(model_path)
    usable, _why = cpu.usable_cpus()
    deadline = time.monotonic() + budget_s
    models: dict[bool, Any] = {}
    trials: list[Trial] = []

    def run(trial: Trial) -> None:
        if time.monotonic() > deadline and trials:
            return
        if any((t.n_threads, t.n_batch, t.n_ubatch, t.repack) == (trial.n_threads, trial.n_batch, trial.n_ubatch,
                                                                  trial.repack) for t in trials):
            return
        trials.append(_measure(model_path, trial, n_prompt, n_gen, models))
        if log:
            log(trials[-1])

    # Coarse: threads at the default batch, both repacking choices.
    for threads in _thread_candidates(usable):
        for repack in (True, False):
            run(Trial(threads, 2048, 512, repack))
    best = max(trials, key=lambda t: t.score(workload))
    # Fine: batch shapes around the best, then the thread counts next to it.
    for n_batch, n_ubatch in ((512, 512), (2048, 256), (2048, 1024), (1024, 512)):
        run(Trial(best.n_threads, n_batch, n_ubatch, best.repack))
    best = max(trials, key=lambda t: t.score(workload))
    for threads in (best.n_threads - 1, best.n_threads + 1):
        if 1 <= threads <= max(usable, 1):
            run(Trial(threads, best.n_batch, best.n_ubatch, best.repack))
    best = max(trials, key=lambda t: t.score(workload))
    return best, trials


def result_record(best: Trial, workload: str) -> dict[str, Any]:
    return {**asdict(best), "workload": workload, "score": best.score(workload),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
