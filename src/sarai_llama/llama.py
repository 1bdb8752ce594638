"""``Llama``: llama-cpp-python's names and shapes, a thin face on the engine.

The model and its engine come from one :class:`~sarai_llama.runtime.Runtime`;
a call's keywords -> :class:`~sarai_llama.sampling.SamplingParams` and an
:class:`~sarai_llama.engine.Request` -> the engine (driven in the caller's
thread) -> :mod:`~sarai_llama.responses` builders. Per token, decoding,
sampling, stop strings and speculation run in C++ (``_core.Engine``); Python
runs per token only for a caller's logits processors and stopping criteria
(:mod:`~sarai_llama.logits`) and to build each streamed chunk. This module owns
llama-cpp-python's call shapes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from . import chat, chat_completion, fim, llama_cache, responses, text_completion
from ._numpy import numpy as _numpy
from .chat_template import response_grammar
from .context_config import DEFAULT_STEP_BUDGET_MS
from .embedding import Embedder, PooledCalls
from .engine import Engine, Request, run_all
from .inline import InlineRuns
from .grammar import LlamaGrammar
from .hooks import LogitsProcessorList, StoppingCriteriaList
from .llama_cache import BaseLlamaCache, LlamaState
from .llama_speculative import LlamaDraftModel, Speculation
from .llama_tokenizer import LlamaTokenizer
from .logits import ManualLoop, logits_to_logprobs
from .rerank import Reranker
from .runtime import Runtime
from .sampling import RANDOM_SEED, SamplingParams, next_call_seed
from .stops import normalize_stops
from .vocab import Vocab

__all__ = ["LLAMA_DEFAULT_SEED", "Llama", "LlamaState"]

logger = logging.getLogger("sarai_llama")

#: llama-cpp-python's name for "a random seed per call".
LLAMA_DEFAULT_SEED = RANDOM_SEED
#: Keywords llama-cpp-python accepts for GPUs and NUMA; meaningless on this CPU build.
GPU_KEYWORDS = ("n_gpu_layers", "main_gpu", "tensor_split", "split_mode", "offload_kqv", "numa")


class Llama(ManualLoop, PooledCalls):
    """A GGUF model and its engine, with llama-cpp-python's API.

    Args:
        model_path: path to a ``.gguf`` file.
        n_ctx: context length in tokens (default 512; 0 = the model's training context).
        n_batch: most tokens evaluated per decode call (default 512); longer prompts are split.
        n_ubatch: physical batch in tokens (None: 512 or ``n_batch`` if smaller; > ``n_batch``: ValueError).
        n_threads: threads for generation: None or "auto" = the thread policy (usable physical
            P-cores, ``SARAI_THREAD_MODE``), "tuned" = the saved ``sarai-llama tune`` result for
            this model and ``job`` else the policy; ``self.threads.why`` says why (``choose_threads``).
        n_threads_batch: threads for prompt processing; None = ``n_threads``.
        n_seq_max: requests decoded together in one batch (default 1): threads calling this object
            at once, or :meth:`create_completions`, share the batches and the ``n_ctx`` KV cells.
        step_budget_ms: while some of those requests generate, a step takes only as many prompt
            tokens as fit in this many ms (default 120; 0: off); see ``ContextConfig``.
        seed: default sampling seed (``LLAMA_DEFAULT_SEED`` = random).
        f16_kv, type_k, type_v: KV-cache types ("f16", "q8_0", ...).
        use_mmap, use_mlock: how weights are loaded.
        vocab_only: load only the tokenizer.
        embedding: create the context for embeddings (pooled, one vector per input).
        pooling_type: "mean" (default for embeddings), "cls", "last", "none", "unspecified", "rank" (:meth:`rerank`).
        flash_attn: True, False or None/"auto" (default: llama.cpp decides).
        use_extra_bufts: let llama.cpp repack weights for faster CPU kernels (None, the default:
            the tuned record's choice under ``n_threads="tuned"``, else True; an explicit value wins).
        chat_format: a llama.cpp built-in template name overriding the GGUF's.
        job: the job whose ``<JOB>_THREADS`` / tuned result applies (e.g. "coding").
        last_n_tokens_size: tokens the repetition penalties look back on (default 64).
        draft_model: speculative decoding, ``LlamaPromptLookupDecoding(max_ngram_size, num_pred_tokens)``
            (default None: off): the engine's n-gram drafts; see ``llama_speculative``.
        verbose: print llama.cpp's log (default True, as llama-cpp-python).
        trusted: skip the probe process that loads an untrusted file first, so that a
            file which would abort llama.cpp raises ``ModelLoadError`` instead (None =
            the ``SARAI_TRUSTED_MODELS`` variable, default untrusted; see ``loading.py``).
    """

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int = 512, n_batch: int = 512,
                 n_ubatch: int | None = None, n_threads: int | str | None = None, n_threads_batch: int | None = None,
                 n_seq_max: int = 1, step_budget_ms: float = DEFAULT_STEP_BUDGET_MS, seed: int = LLAMA_DEFAULT_SEED,
                 f16_kv: bool = True,
                 type_k: str | int | None = None, type_v: str | int | None = None, use_mmap: bool = True,
                 use_mlock: bool = False, vocab_only: bool = False, embedding: bool = False,
                 pooling_type: str | int = "unspecified", flash_attn: bool | str | None = None,
                 use_extra_bufts: bool | None = None, swa_full: bool = False, chat_format: str | None = None,
                 job: str | None = None, logits_all: bool = False, last_n_tokens_size: int = 64,
                 draft_model: LlamaDraftModel | None = None, verbose: bool = True, trusted: bool | None = None,
                 **ignored: Any) -> None:
        super().__init__()
        self._rt: Runtime | None = None
        self._runs = InlineRuns(n_seq_max)
        self.cache: BaseLlamaCache | None = None
        self.verbose = verbose
        for key in ignored:
            if key not in GPU_KEYWORDS:
                raise TypeError(f"Llama() got an unexpected keyword argument {key!r}")
        rt = Runtime(model_path, threads=n_threads, job=job, vocab_only=vocab_only, use_mmap=use_mmap,
                     use_mlock=use_mlock, use_extra_bufts=use_extra_bufts, trusted=trusted, seed=seed,
                     speculation=Speculation.of(draft_model), chat_format=chat_format, verbose=verbose,
                     n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads_batch=n_threads_batch,
                     f16_kv=f16_kv, type_k=type_k, type_v=type_v, flash_attn=flash_attn, embeddings=embedding,
                     pooling_type=pooling_type, swa_full=swa_full, n_seq_max=n_seq_max,
                     step_budget_ms=step_budget_ms)
        self._rt, self.model_path, self.threads, self.context_config = rt, rt.path, rt.threads, rt.config
        self.tuned = rt.threads.tuned
        self._tok = Vocab(rt.model)
        self.n_threads, self.n_threads_batch = rt.threads.n_threads, rt.config.n_threads_batch
        self.seed, self.embedding, self.logits_all = seed, embedding, logits_all
        # Private in llama-cpp-python too; its own tests read them.
        self._is_recurrent, self._is_hybrid = bool(rt.model.is_recurrent), bool(rt.model.is_hybrid)
        self.last_n_tokens_size, self.chat_format, self.vocab_only = last_n_tokens_size, chat_format, vocab_only
        self.metadata: dict[str, str] = rt.metadata
        self._n_ctx = rt.n_ctx

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free the engine and the model now (also done by ``with`` and garbage collection)."""
        if self._rt is not None:
            self._rt.close()
            self._rt = None

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _runtime(self) -> Runtime:
        if self._rt is None:
            raise RuntimeError("this Llama is closed")
        return self._rt

    def _vocab(self) -> Vocab:
        self._runtime()
        return self._tok

    @property
    def _model(self) -> Any:
        """The compiled core's ``Model`` (private in llama-cpp-python too, where it is its own wrapper)."""
        return self._runtime().model

    @property
    def runtime(self) -> Runtime:
        """The loaded model and what runs it (``sarai_llama.runtime``): the unit a server serves."""
        return self._runtime()

    @property
    def engine(self) -> Engine:
        """The engine this object drives (a ``RuntimeError`` for embedding and vocab-only objects)."""
        engine = self._runtime().engine
        if engine is None:
            why = "embedding=True: it computes embeddings" if self.embedding else "vocab_only=True: it can only tokenize"
            raise RuntimeError(f"this Llama was loaded with {why}")
        return engine

    # ------------------------------------------------------------- model facts
    def n_ctx(self) -> int:
        return self._n_ctx

    def n_vocab(self) -> int:
        return self._vocab().model.n_vocab

    def n_embd(self) -> int:
        return self._vocab().model.n_embd

    def token_bos(self) -> int:
        return self._vocab().model.token_bos

    def token_eos(self) -> int:
        return self._vocab().model.token_eos

    def token_nl(self) -> int:
        return self._vocab().model.token_nl

    def pooling_type(self) -> int:
        """llama.cpp's pooling type of the context (-1 unspecified, 0 none, 1 mean, 2 cls, 3 last)."""
        return self.context_config.pooling

    def tokenizer(self) -> LlamaTokenizer:
        """This model's tokenizer as an object."""
        return LlamaTokenizer(self)

    logits_to_logprobs = staticmethod(logits_to_logprobs)
    longest_token_prefix = staticmethod(llama_cache.longest_token_prefix)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, additional_files: list[str] | None = None,
                        local_dir: str | os.PathLike[str] | None = None, local_dir_use_symlinks: Any = "auto",
                        cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Llama:
        """A ``Llama`` on ``filename`` (a name or glob pattern) of a Hugging Face Hub repository,
        downloaded with ``huggingface_hub`` (or taken from its cache); ``kwargs`` go to ``Llama``.
        ``local_dir_use_symlinks`` is accepted and ignored (the Hub client decides)."""
        from .hub import download

        return cls(download(repo_id, filename, additional_files, local_dir, cache_dir), **kwargs)

    # ------------------------------------------------------------- tokens
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Tokens of ``text`` (UTF-8 bytes); ``add_bos`` adds the model's BOS if it uses one."""
        return self._vocab().tokenize(text, add_bos, special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """UTF-8 bytes of ``tokens`` (see :meth:`sarai_llama.vocab.Vocab.detokenize`)."""
        return self._vocab().detokenize(tokens, special=special)

    # ------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the prompt cache (every sequence's cached tokens)."""
        self.engine.clear()

    def set_seed(self, seed: int) -> None:
        """The seed of calls that name none: ``generate``/``sample`` use it as is; each
        completion draws its own from it (llama-cpp-python's chain, see ``next_call_seed``)."""
        self.seed = self.engine.seed = int(seed)

    def set_cache(self, cache: BaseLlamaCache | None) -> None:
        """Keep prompt states in ``cache`` across calls: ``LlamaRAMCache``/``LlamaDiskCache`` are
        views on the engine's state cache (``llama_cache``); None: none kept."""
        self.cache = llama_cache.attach(cache, self.engine, self.model_path, self.context_config.kv_layout)

    def cancel(self) -> None:
        """Stop this object's running requests at their next token (finish_reason "cancelled")."""
        self._runs.cancel()

    def perf(self) -> dict[str, float]:
        """llama.cpp's counters for this context: prompt/eval tokens and milliseconds."""
        pooled = self.pooled
        return pooled.perf() if pooled is not None else dict(self.engine.perf())

    # ------------------------------------------------------------- requests
    def submit(self, request: Request) -> Iterator[Any]:
        """Run ``request`` on the engine in this thread; yields its :class:`~sarai_llama.engine.Piece` s."""
        return self._runs.run(self.engine, request)

    def _completion_request(self, prompt: str | bytes | Sequence[int], max_tokens: int | None, stop: Any,
                            logprobs: int | None, logits_processor: Any, stopping_criteria: Any,
                            use_cache: bool = False, **sampling: Any) -> Request:
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
            raise ValueError(f"logprobs must be a non-negative integer, not {logprobs!r}")
        params = SamplingParams.from_kwargs(penalty_last_n=self.last_n_tokens_size, **sampling)
        if logits_processor or stopping_criteria:
            _numpy()  # array APIs: a clear error where numpy cannot run (logprobs are computed in C++)
        tokens = self._vocab().prompt_tokens(prompt, self._n_ctx)
        if use_cache and self.cache is not None:  # before the draw: a state saved by save_state brings its seed
            if (state := llama_cache.restore(self.cache, self.engine.cached(), tokens)) is not None:
                self.load_state(state)  # looked up on the object: llama-cpp-python's tests count the calls
        # Checked first, drawn last: a refused request does not advance the seed.
        params = dataclasses.replace(params, seed=self._call_seed(params.seed))
        # logprobs' text_offset counts characters from the start of the prompt (llama-cpp-python).
        return Request(prompt=tokens, sampling=params, max_tokens=max_tokens, stop=normalize_stops(stop),
                       logprobs=logprobs, logits_processor=logits_processor, stopping_criteria=stopping_criteria,
                       text_offset=len(self._vocab().prompt_text(prompt, tokens)))

    def _call_seed(self, seed: int | None) -> int:
        """This call's seed: ``seed``, else the next draw from the current one (see
        :func:`~sarai_llama.sampling.next_call_seed`); it becomes the object's seed."""
        self.set_seed(next_call_seed(self.seed) if seed is None else seed)
        return self.seed

    def create_completion(self, prompt: str | bytes | Sequence[int], suffix: str | None = None,
                          max_tokens: int | None = 16, echo: bool = False, logprobs: int | None = None,
                          stop: str | list[str] | None = None, stream: bool = False, model: str | None = None,
                          stopping_criteria: StoppingCriteriaList | None = None,
                          logits_processor: LogitsProcessorList | None = None,
                          response_format: Mapping[str, Any] | None = None,
                          **sampling: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Complete ``prompt``: a ``text_completion`` dict, or its chunks when ``stream=True``.

        Sampling keywords are llama-cpp-python's (``temperature`` 0.8, ``top_k`` 40,
        ``top_p`` 0.95, ``min_p`` 0.05, ``typical_p``, ``repeat_penalty``,
        ``frequency_penalty``, ``presence_penalty``, ``seed``, ``mirostat_*``,
        ``grammar``, ``logit_bias``; see :class:`SamplingParams`). ``max_tokens`` None
        or <= 0: until the context is full. ``response_format`` (OpenAI's
        ``json_object``/``json_schema``) constrains the text to that JSON. ``finish_reason``: "stop" (end token or
        stop string), "length", or "cancelled" (:meth:`cancel`). ``suffix``: fill in the middle (``fim.fills``).
        """
        if fim.fills(self._vocab().model, suffix, echo):
            prompt = fim.fim_prompt(self._vocab().model, prompt, suffix)  # type: ignore[arg-type]
        json_grammar = response_grammar(response_format, grammar=sampling.get("grammar"))
        if json_grammar is not None:  # as the server's completions route: JSON through a grammar
            sampling["grammar"] = json_grammar
        request = self._completion_request(prompt, max_tokens, stop, logprobs, logits_processor,
                                           stopping_criteria, use_cache=True, **sampling)
        cid, created, name = responses.completion_id(), responses.now(), model or self.model_path
        head = self._vocab().prompt_text(prompt, request.prompt) if echo else ""
        pieces = llama_cache.store_after(self.cache, request.prompt, self.submit(request), self.save_state)
        if stream:
            return text_completion.chunks(pieces, head, cid, created, name)
        return text_completion.collect(pieces, head, cid, created, name, logprobs is not None, len(request.prompt))

    def __call__(self, prompt: str | bytes | Sequence[int], **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Same as :meth:`create_completion`."""
        return self.create_completion(prompt, **kwargs)

    def create_completions(self, prompts: Sequence[str | bytes | Sequence[int]], max_tokens: int | None = 16,
                           stop: str | list[str] | None = None, logprobs: int | None = None,
                           model: str | None = None, **sampling: Any) -> list[dict[str, Any]]:
        """Complete many prompts at once: up to ``n_seq_max`` decode together in each batch.

        For batch jobs without a server. Same keywords and result shape as
        :meth:`create_completion` (non-streaming), one result per prompt, in order.
        """
        requests = [self._completion_request(p, max_tokens, stop, logprobs, None, None, **sampling) for p in prompts]
        name, created, done = model or self.model_path, responses.now(), run_all(self.engine, requests)
        return [text_completion.collect(pieces, "", responses.completion_id(), created, name, logprobs is not None,
                                        len(req.prompt)) for req, pieces in zip(requests, done)]

    # ------------------------------------------------------------- chat
    def chat_handler(self) -> chat.ChatFormat:
        """How :meth:`create_chat_completion` renders chats for this model (``.why`` says why)."""
        return self._runtime().chat_format()

    def chat_template(self) -> tuple[str, str]:
        """(template name or Jinja source, why) used by :meth:`create_chat_completion`."""
        return (fmt.name if isinstance(fmt := self.chat_handler(), chat.BuiltinChat) else fmt.source), fmt.why

    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]],
                               functions: Sequence[Mapping[str, Any]] | None = None, function_call: Any = None,
                               tools: Sequence[Mapping[str, Any]] | None = None, tool_choice: Any = None,
                               temperature: float = 0.2, stream: bool = False, stop: str | list[str] | None = None,
                               response_format: Mapping[str, Any] | None = None, max_tokens: int | None = None,
                               model: str | None = None, logprobs: bool | None = None,
                               top_logprobs: int | None = None, logits_processor: LogitsProcessorList | None = None,
                               grammar: LlamaGrammar | str | None = None, parallel_tool_calls: bool | None = None,
                               reasoning_format: str = "none", **kwargs: Any) -> dict[str, Any] | Iterator[Any]:
        """Answer ``messages`` (OpenAI shape) through the model's chat template: a
        ``chat.completion`` dict, or ``chat.completion.chunk`` dicts when ``stream=True``.

        ``tools``/``tool_choice`` ("auto", "none", "required" or a named function)
        and ``parallel_tool_calls`` need a Jinja template; calls come back as
        ``message.tool_calls`` with ``finish_reason`` "tool_calls".
        ``response_format`` ``{"type": "json_object"}`` or ``{"type": "json_schema",
        "json_schema": {"schema": ...}}`` constrains the answer to that JSON.
        ``reasoning_format``: "none" (default, as llama-cpp-python) or "deepseek" (``reasoning_content``).
        Sampling keywords as :meth:`create_completion` (``temperature`` defaults to 0.2).
        """
        kwargs = chat_completion.sampling_kwargs(kwargs, [*SamplingParams.__dataclass_fields__, "temp", "tfs_z",
                                                          "penalize_nl", "stopping_criteria"])
        tools, tool_choice = chat_completion.legacy_functions(functions, function_call, tools, tool_choice)
        rendered = chat_completion.render(self.chat_handler(), messages, tools=tools, tool_choice=tool_choice,
                                          parallel_tool_calls=parallel_tool_calls, response_format=response_format,
                                          grammar=grammar, reasoning_format=reasoning_format)
        stopping = kwargs.pop("stopping_criteria", None)
        request = self._completion_request(rendered.prompt, max_tokens, stop,
                                           (top_logprobs or 0) if logprobs else None, logits_processor, stopping,
                                           use_cache=True, temperature=temperature, grammar=grammar, **kwargs)
        chat_completion.apply(request, rendered)
        cid, created, name = responses.chat_id(), responses.now(), model or self.model_path
        pieces = llama_cache.store_after(self.cache, request.prompt, self.submit(request), self.save_state)
        if stream:
            return chat_completion.chunks(pieces, rendered.output(), cid, created, name)
        return chat_completion.collect(pieces, rendered.output(), cid, created, name, bool(logprobs),
                                       len(request.prompt))

    def create_chat_completion_openai_v1(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`create_chat_completion` as the ``openai`` package's types
        (``ChatCompletion``, or an iterator of ``ChatCompletionChunk`` when ``stream=True``)."""
        return chat_completion.as_openai_types(self.create_chat_completion(*args, **kwargs), bool(kwargs.get("stream")))

    # ------------------------------------------------------------- embeddings
    def create_embedding(self, input: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        """OpenAI-shaped embeddings: ``{"object": "list", "data": [{"embedding": [...]}], ...}``."""
        vectors, total = self.embed(input, return_count=True)
        return responses.embeddings([vectors] if isinstance(input, str) else vectors, model or self.model_path, total)

    @property
    def pooled(self) -> Embedder | Reranker | None:
        """The pooled context (``embedding=True``; a ``Reranker`` under rank pooling), else None."""
        return self._runtime().pooled
