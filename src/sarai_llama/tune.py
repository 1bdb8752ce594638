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

import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import cpu
# The store's names, here too: tune's users save and read results through this module.
from .tune_store import config_path, load_saved, save, tune_key  # noqa: F401

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
