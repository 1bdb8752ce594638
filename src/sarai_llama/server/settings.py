"""Server settings: one definition per setting, read from the command line or a ``SARAI_*`` variable.

A Kubernetes ConfigMap drives a pod through environment variables, a person
through flags; both must mean the same thing, so each setting is written once
here (:data:`OPTIONS`) and both the argparse flag and the variable are derived
from it. Precedence: flag > ``SARAI_<NAME>`` > default.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..context_config import DEFAULT_STEP_BUDGET_MS
from ..llama_speculative import (DEFAULT_DRAFT_MAX, DEFAULT_NGRAM_SIZE, DEFAULT_SPEC_TYPE, MAX_DRAFT, MAX_NGRAM_SIZE,
                                 SPEC_TYPES, Speculation, parse_spec_type)
from ..sampling import RANDOM_SEED
from ..threads import ThreadChoice, choose_threads
from .values import (FLASH_ATTN_KEYWORD, int_in, keys, model_pairs, parse_bool, parse_cache_ram, parse_flash_attn,
                     parse_kv_type, parse_memory, parse_reasoning_format, parse_step_budget, parse_threads, positive)

__all__ = ["FLASH_ATTN_KEYWORD", "OPTIONS", "Settings", "add_arguments", "from_namespace", "resolve_threads"]


@dataclass(frozen=True)
class Option:
    name: str  # the Settings field; the flag is --name-with-dashes, the variable SARAI_NAME
    parse: Callable[[str], Any]
    default: Any
    help: str
    flags: tuple[str, ...] = ()  # extra short / llama-server spellings
    metavar: str | None = None
    hidden: bool = False
    repeat: bool = False  # the flag may be given again; each adds to the list

    @property
    def env(self) -> str:
        return "SARAI_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "127.0.0.1", "address to listen on (0.0.0.0 inside a container)"),
    Option("port", positive(int, 1), 8000, "TCP port"),
    Option("parallel", positive(int, 1), 4, "sequences decoded together in one batch (llama-server's -np)",
           ("-np",)),
    Option("ctx_size", positive(int, 0), 4096,
           "KV-cache cells shared by all sequences (unified cache: one request may use all of them; "
           "0 = the model's training length)", ("-c",)),
    Option("batch_size", positive(int, 1), 512, "most tokens per llama_decode call", ("-b",)),
    Option("ubatch_size", positive(int, 1), None, "physical batch size (default: 512, or the batch size if "
           "smaller; more than the batch size is an error)", ("-ub",)),
    Option("step_budget_ms", parse_step_budget, DEFAULT_STEP_BUDGET_MS,
           "while streams generate, a step takes only as many prompt tokens as the engine's measured "
           "costs fit in this many ms, so a long prompt does not stall them (a lone prompt always gets "
           "the whole batch); 'off' or 0: prompts take the whole batch", metavar="MS|off"),
    Option("spec_type", parse_spec_type, DEFAULT_SPEC_TYPE,
           "speculative decoding: 'ngram-simple' drafts what followed the last tokens' earlier occurrence in "
           "the request's own prompt and output, verified in the same batch (draft lengths follow measured "
           "acceptance and step costs); 'none': off", metavar="|".join(SPEC_TYPES)),
    Option("draft_max", int_in(0, MAX_DRAFT), DEFAULT_DRAFT_MAX, "most draft tokens per step for one sequence (0: off); "
           "a request's 'speculative.n_max' overrides it", ("--spec-draft-n-max",)),
    Option("draft_min", int_in(0, MAX_DRAFT), 0, "tokens drafted whenever the lookup proposes that many, whatever the "
           "measured costs (0: acceptance and costs decide; = --draft-max: every proposal whole, as "
           "llama-server); a request's 'speculative.n_min' overrides it", ("--spec-draft-n-min",)),
    Option("spec_ngram_size_n", int_in(1, MAX_NGRAM_SIZE), DEFAULT_NGRAM_SIZE, "n-gram size looked up for drafts",
           ("--spec-ngram-simple-size-n",)),
    Option("cache_type_k", parse_kv_type, "f16", "KV-cache type of the keys (f32, f16, bf16, q8_0, q5_1, q5_0, "
           "q4_1, q4_0): q8_0 halves the cache's memory", ("-ctk",)),
    Option("cache_type_v", parse_kv_type, "f16", "KV-cache type of the values (as --cache-type-k); a quantized "
           "one needs flash attention", ("-ctv",)),
    Option("flash_attn", parse_flash_attn, "auto", "flash attention: on, off or auto (llama.cpp decides)",
           ("-fa",), "on|off|auto"),
    Option("cache_ram", parse_cache_ram, "auto",
           "host RAM for KV states of conversations whose sequence another request took (restored instead of "
           "prefilled on their next turn), in MiB as llama-server's; 'auto': what the memory limit (cgroup) "
           "leaves after the model, the KV cache and a margin, or a share of the RAM; 0: off; -1: no limit",
           ("-cram",), "auto|MiB"),
    Option("cache_dir", str, None, "directory the state cache also writes its states to (they survive a "
           "restart; files of another model or format are ignored with a warning)"),
    Option("cache_disk", positive(int, 0), 10240, "MiB the state cache may keep in --cache-dir"),
    Option("threads", parse_threads, "auto",
           "generation threads: 'auto' = the thread policy (affinity, cgroup quota, E-cores, "
           "SARAI_THREAD_MODE, <JOB>_THREADS), 'tuned' = the saved 'sarai-llama tune' result for the model "
           "and job (else the policy), or a number", ("-t",), "auto|tuned|N"),
    Option("job", str, None, "job type for SARAI_THREAD_MODE=auto's <JOB>_THREADS (coding, marketing, ...)"),
    Option("api_key", keys, [], "required API key(s), comma-separated; clients send 'Authorization: Bearer K' "
           "or 'X-Api-Key: K' (empty: no authentication)", metavar="KEY[,KEY...]"),
    Option("metrics_public", parse_bool, False,
           "serve /metrics without an API key (for scrapers inside the cluster)", metavar="BOOL"),
    Option("max_queue", positive(int, 0), 64,
           "requests that may wait for a free sequence; past that: 503 with Retry-After"),
    Option("drain_timeout", positive(float, 0.0), 30.0,
           "seconds that SIGTERM waits for running generations before cancelling them"),
    Option("ping_interval", positive(float, 0.05), 5.0,
           "seconds a stream may stay silent (a long prompt, a wait for a sequence) before it gets an SSE "
           "comment ': ping', so that proxies with idle timeouts keep it open"),
    Option("max_body_bytes", positive(int, 1), 4 * 1024 * 1024, "largest request body accepted (413 past it)"),
    Option("max_tokens_limit", positive(int, 0), 0,
           "largest max_tokens a request may ask for (0: the context size)"),
    Option("retry_after", positive(int, 0), 1, "seconds announced in Retry-After on 503"),
    Option("alias", str, None, "model id served in /v1/models and accepted in 'model' (default: the file name)",
           ("-a",)),
    Option("chat_format", str, None, "chat template overriding the GGUF's: a llama.cpp built-in name, a Jinja "
           "file or Jinja text", ("--chat-template",)),
    Option("mmproj", str, None, "a projector GGUF (llama.cpp's mtmd) for the model, so that chats may hold images: "
           "OpenAI image_url data: URIs, Responses input_image, Anthropic base64 image blocks, Ollama images "
           "(llama-server's --mmproj)", ("-mm",), "PATH"),
    Option("reasoning_format", parse_reasoning_format, "auto", "what a thinking model's reasoning becomes in "
           "chat answers, as llama-server: none (left in content), auto = deepseek (in reasoning_content); "
           "a request's reasoning_format overrides it", metavar="none|auto|deepseek"),
    Option("seed", int, RANDOM_SEED, "default sampling seed (4294967295: random per request)"),
    Option("log_level", str, "info", "log level (debug, info, warning, error)"),
    Option("embeddings", parse_bool, True, "serve /v1/embeddings (a second, pooled context on the same "
           "weights, created on first use)", metavar="BOOL"),
    Option("spm_infill", parse_bool, False, "fill-in-the-middle prompts (/infill, suffix) in suffix/prefix/middle "
           "order instead of prefix/suffix/middle, for models trained so (llama-server's --spm-infill)",
           metavar="BOOL"),
    Option("access_log", parse_bool, True, "one JSON line per request on stderr", metavar="BOOL"),
    Option("models_dir", str, None, "serve every *.gguf in this directory, named by its file stem or by an alias "
           "in a models.toml beside them (README, \"Many models behind one server\"); each loads on its first request",
           metavar="DIR"),
    Option("models", model_pairs, [], "one more model to serve by name, NAME=PATH (repeat the flag; the "
           "variable takes NAME=PATH,NAME=PATH); loaded on its first request", ("--model",), "NAME=PATH",
           repeat=True),
    Option("models_memory", parse_memory, "auto", "memory the loaded models may take together, in MiB: weights, "
           "KV cache, compute buffers and state cache; 'auto': the process's memory limit (cgroup) less a "
           "margin, or a share of the RAM. To load one more, the least recently used idle model is unloaded",
           metavar="auto|MiB"),
    Option("models_max", positive(int, 0), 0, "most models loaded at once (0: as many as --models-memory "
           "holds; llama-server's --models-max)"),
    Option("idle_unload", positive(float, 0.0), 0.0, "seconds a model may stay idle before it is unloaded "
           "(0: never); a request's keep_alive (Ollama's) overrides it for its model", metavar="SECONDS"),
    # Slows the load on purpose so tests can watch /health say 503 while loading; never for production.
    Option("debug_load_delay", positive(float, 0.0), 0.0, argparse.SUPPRESS, hidden=True),
)


@dataclass(frozen=True)
class Settings:
    """The server's configuration. Defaults live in :data:`OPTIONS` only (see :meth:`create`)."""

    model: str | None  # the positional model: loaded at start-up, the default for requests without a name
    host: str
    port: int
    parallel: int
    ctx_size: int
    batch_size: int
    ubatch_size: int | None
    step_budget_ms: float
    spec_type: str
    draft_max: int
    draft_min: int
    spec_ngram_size_n: int
    cache_type_k: str
    cache_type_v: str
    flash_attn: str
    cache_ram: str | int
    cache_dir: str | None
    cache_disk: int
    threads: str | int
    job: str | None
    api_key: list[str]
    metrics_public: bool
    max_queue: int
    drain_timeout: float
    ping_interval: float
    max_body_bytes: int
    max_tokens_limit: int
    retry_after: int
    alias: str | None
    chat_format: str | None
    mmproj: str | None
    reasoning_format: str
    seed: int
    log_level: str
    embeddings: bool
    spm_infill: bool
    access_log: bool
    models_dir: str | None
    models: list[tuple[str, str]]
    models_memory: str | int
    models_max: int
    idle_unload: float
    debug_load_delay: float

    @classmethod
    def create(cls, model: str | None, **overrides: Any) -> Settings:
        values = {opt.name: opt.default for opt in OPTIONS}
        unknown = set(overrides) - set(values)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update(overrides)
        return cls(model=model, **values)

    @property
    def model_id(self) -> str:
        """The name the model is served under: ``--alias``, else the file name ("" without a model)."""
        return self.alias or (Path(self.model).name if self.model else "")

    @property
    def many(self) -> bool:
        """Models are served by name beside (or instead of) the positional one."""
        return bool(self.models_dir or self.models)

    def thread_choice(self) -> ThreadChoice:
        return resolve_threads(self.threads, self.job, self.model)

    def speculation(self) -> Speculation:
        """The engine's speculation defaults (off for ``--spec-type none``)."""
        return Speculation.of_type(self.spec_type, self.draft_max, self.draft_min, self.spec_ngram_size_n)


def resolve_threads(threads: str | int, job: str | None, model: str | None = None) -> ThreadChoice:
    """``threads.choose_threads`` (the meaning of ``auto`` and ``tuned`` that ``Llama``
    and the CLI share: every usable core unless ``SARAI_THREAD_MODE`` says otherwise, since a
    server pod's CPU quota is there for this process), logged with its reason and cuts."""
    log = logging.getLogger("sarai_llama.server")
    choice = choose_threads(threads, job, model)
    for cut in choice.cuts:  # a ConfigMap asking for more threads than the pod's CPU limit
        log.warning("threads: %s", cut)
    log.info("threads: %d (%s)", choice.n_threads, choice.why)
    return choice


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Add the model argument and every option to ``parser``; defaults come from ``environ``."""
    env = os.environ if environ is None else environ
    # Optional: --models-dir / --model serve models by name without one (checked in from_namespace).
    parser.add_argument("model", nargs="?", default=env.get("SARAI_MODEL"),
                        help="GGUF model file, loaded at start-up (env SARAI_MODEL); optional with "
                             "--models-dir or --model NAME=PATH")
    for opt in OPTIONS:
        default = opt.default
        if opt.env in env:
            try:
                default = opt.parse(env[opt.env])
            except ValueError as exc:
                parser.error(f"{opt.env}={env[opt.env]!r}: {exc}")

        def checked(text: str, opt: Option = opt) -> Any:
            try:
                return opt.parse(text)
            except ValueError as exc:  # argparse shows ArgumentTypeError's message as is
                raise argparse.ArgumentTypeError(str(exc)) from None

        help_text = opt.help if opt.hidden else f"{opt.help} (env {opt.env}; default {opt.default!r})"
        if opt.repeat:  # each flag adds its pairs; the variable's come first
            parser.add_argument(*opt.flags, opt.flag, dest=opt.name, type=checked, default=None, action="append",
                                metavar=opt.metavar, help=help_text)
            parser.set_defaults(**{f"{opt.name}_env": default})
        else:
            parser.add_argument(opt.flag, *opt.flags, dest=opt.name, type=checked, default=default,
                                metavar=opt.metavar, help=help_text)


def from_namespace(ns: argparse.Namespace) -> Settings:
    """The settings a parsed command line gives (``SystemExit`` without any model to serve)."""
    values = {opt.name: getattr(ns, opt.name) for opt in OPTIONS}
    for opt in OPTIONS:
        if opt.repeat:
            given = values[opt.name]
            values[opt.name] = list(getattr(ns, f"{opt.name}_env", None) or []) + \
                [pair for flag in (given or []) for pair in flag]
    settings = Settings(model=ns.model, **values)
    if not settings.model and not settings.many:
        raise SystemExit("sarai-llama serve: give a model (MODEL, SARAI_MODEL), --models-dir DIR or --model NAME=PATH")
    return settings


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="sarai-llama serve")
    add_arguments(parser, environ)
    return from_namespace(parser.parse_args(argv))
