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
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import chat, chat_completion, fim, hub, llama_cache, responses, text_completion, vision
from .chat_template import response_grammar
from .context_config import DEFAULT_STEP_BUDGET_MS
from .embedding import PooledCalls
from .engine import Engine, Request, run_all
from .inline import InlineRuns
from .grammar import LlamaGrammar
from .hooks import LogitsProcessorList, StoppingCriteriaList
from .llama_cache import BaseLlamaCache, LlamaState
from .llama_speculative import LlamaDraftModel, Speculation
from .llama_tokenizer import LlamaTokenizer
from .logits import ManualLoop, logits_to_logprobs
from .runtime import Runtime
from .sampling import RANDOM_SEED, next_call_seed
from .vocab import Vocab

__all__ = ["LLAMA_DEFAULT_SEED", "Llama", "LlamaState"]

logger = logging.getLogger("sarai_llama")

#: llama-cpp-python's name for "a random seed per call".
LLAMA_DEFAULT_SEED = RANDOM_SEED
#: Keywords llama-cpp-python accepts for GPUs and NUMA; meaningless on this CPU build.
GPU_KEYWORDS = ("n_gpu_layers", "main_gpu", "tensor_split", "split_mode", "offload_kqv", "numa")

_P, _R, _Part = ParamSpec("_P"), TypeVar("_R"), TypeVar("_Part")


def _shown(part: Callable[[Any], _Part],
           method: Callable[Concatenate[_Part, _P], _R]) -> Callable[Concatenate[Any, _P], _R]:
    """``method`` of the part that ``part(llama)`` returns, as a ``Llama`` method: its signature
    and docstring are the part's, so llama-cpp-python's call shapes are written once."""
    @functools.wraps(method)
    def call(self: Any, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return method(part(self), *args, **kwargs)
    return call


def _shown_properties(part: Callable[[Any], Any], cls: type, *names: str) -> tuple[property, ...]:
    """The properties ``names`` of ``cls``, the type of the part that ``part(llama)`` returns, as
    read-only ``Llama`` properties with their docstrings."""
    def shown(prop: property) -> property:
        fget = prop.fget
        assert fget is not None
        return property(lambda self: fget(part(self)), doc=prop.__doc__)
    return tuple(shown(getattr(cls, name)) for name in names)


class Llama:
    """A GGUF model and its engine, with llama-cpp-python's API. Parts it holds show as its members:
    ``vocab.Vocab`` (tokens), ``logits.ManualLoop`` (sequence 0), ``embedding.PooledCalls`` (``embed``, ``rerank``).

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
        chat_format: a built-in template name ("chatml", "llama3", ...), a Jinja file or Jinja text
            overriding the GGUF's template (see ``chat.resolve_chat_format``).
        job: the job whose ``<JOB>_THREADS`` / tuned result applies (e.g. "coding").
        last_n_tokens_size: tokens the repetition penalties look back on (default 64).
        draft_model: speculative decoding, ``LlamaPromptLookupDecoding(max_ngram_size, num_pred_tokens)``
            (default None: off): the engine's n-gram drafts; see ``llama_speculative``.
        verbose: print llama.cpp's log from the info level up (default True, as llama-cpp-python), else errors only.
        trusted: skip the probe process, which loads an untrusted file first so that a file that would
            abort llama.cpp raises ``ModelLoadError`` instead of killing Python (None = the
            ``SARAI_TRUSTED_MODELS`` variable, default untrusted; see ``loading.py``).
        mmproj: a projector GGUF beside the model, so that chats may hold images (``image_url``
            parts: ``data:`` URIs or ``file://`` paths; see ``vision``). ``chat_handler``: llama-cpp-python's
            multimodal handlers (``MTMDChatHandler(clip_model_path=...)``, ``Llava15ChatHandler``, ...) name it too.
    """

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int = 512, n_batch: int = 512,
                 n_ubatch: int | None = None, n_threads: int | str | None = None, n_threads_batch: int | None = None,
                 n_seq_max: int = 1, step_budget_ms: float = DEFAULT_STEP_BUDGET_MS, seed: int = LLAMA_DEFAULT_SEED,
                 f16_kv: bool = True, type_k: str | int | None = None, type_v: str | int | None = None,
                 use_mmap: bool = True, use_mlock: bool = False, vocab_only: bool = False, embedding: bool = False,
                 pooling_type: str | int = "unspecified", flash_attn: bool | str | None = None,
                 use_extra_bufts: bool | None = None, swa_full: bool = False, chat_format: str | None = None,
                 job: str | None = None, logits_all: bool = False, last_n_tokens_size: int = 64,
                 draft_model: LlamaDraftModel | None = None, verbose: bool = True, trusted: bool | None = None,
                 mmproj: str | os.PathLike[str] | None = None, chat_handler: Any = None, **ignored: Any) -> None:
        self._runs, self.cache, self.verbose = InlineRuns(n_seq_max), None, verbose
        if unknown := [key for key in ignored if key not in GPU_KEYWORDS]:
            raise TypeError(f"Llama() got an unexpected keyword argument {unknown[0]!r}")
        rt = Runtime(model_path, threads=n_threads, job=job, vocab_only=vocab_only, use_mmap=use_mmap,
                     use_mlock=use_mlock, use_extra_bufts=use_extra_bufts, trusted=trusted, seed=seed,
                     speculation=Speculation.of(draft_model), chat_format=chat_format, verbose=verbose,
                     n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads_batch=n_threads_batch,
                     f16_kv=f16_kv, type_k=type_k, type_v=type_v, flash_attn=flash_attn, embeddings=embedding,
                     pooling_type=pooling_type, swa_full=swa_full, n_seq_max=n_seq_max,
                     step_budget_ms=step_budget_ms, mmproj=vision.projector_path(mmproj, chat_handler))
        self._rt: Runtime | None = rt
        self.model_path, self.threads, self.context_config = rt.path, rt.threads, rt.config
        self.tuned = rt.threads.tuned
        self.n_threads, self.n_threads_batch = rt.threads.n_threads, rt.config.n_threads_batch
        self.seed, self.embedding, self.logits_all = seed, embedding, logits_all
        # Private in llama-cpp-python too; its own tests read them.
        self._is_recurrent, self._is_hybrid = bool(rt.model.is_recurrent), bool(rt.model.is_hybrid)
        self.last_n_tokens_size, self.chat_format, self.vocab_only = last_n_tokens_size, chat_format, vocab_only
        self.metadata, self._n_ctx = rt.metadata, rt.n_ctx
        self._loop = None if rt.engine is None else \
            ManualLoop(rt.engine, self._runs, self._n_ctx, rt.model.n_vocab, last_n_tokens_size)
        self._pooled_calls = PooledCalls(rt.pooled)

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free the engine, pooled context and model now (also ``with``, garbage collection); then calls fail."""
        if self._rt is not None:
            self._rt.close()
            self._rt, self._loop, self._pooled_calls = None, None, PooledCalls(None)

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _runtime(self) -> Runtime:
        if self._rt is None:
            raise RuntimeError("this Llama is closed")
        return self._rt

    def _vocab(self) -> Vocab:
        return Vocab(self._runtime().model)

    runtime = property(_runtime, doc="The loaded model and what runs it (``sarai_llama.runtime``): the unit a "
                                     "server serves.")
    _model = property(lambda self: self._runtime().model, doc="The compiled core's ``Model`` (private in "
                      "llama-cpp-python too, where it is its own wrapper).")

    @property
    def engine(self) -> Engine:
        """The engine this object drives (a ``RuntimeError`` for embedding and vocab-only objects)."""
        engine = self._runtime().engine
        if engine is None:
            why = "embedding=True: it computes embeddings" if self.embedding else "vocab_only=True: it can only tokenize"
            raise RuntimeError(f"this Llama was loaded with {why}")
        return engine

    def _manual(self) -> ManualLoop:
        self.engine  # noqa: B018 -- the RuntimeError saying why there is none
        return self._loop  # type: ignore[return-value]  # set whenever there is an engine

    def _pooled(self) -> PooledCalls:
        self._runtime()
        return self._pooled_calls

    input_ids, n_tokens, eval_tokens, scores, eval_logits = _shown_properties(
        _manual, ManualLoop, "input_ids", "n_tokens", "eval_tokens", "scores", "eval_logits")
    eval, sample = _shown(_manual, ManualLoop.eval), _shown(_manual, ManualLoop.sample)
    generate = _shown(_manual, ManualLoop.generate)
    embed, rerank = _shown(_pooled, PooledCalls.embed), _shown(_pooled, PooledCalls.rerank)

    # ------------------------------------------------------------- model facts
    def n_ctx(self) -> int:
        return self._n_ctx

    n_vocab, token_bos = _shown(_vocab, Vocab.n_vocab), _shown(_vocab, Vocab.token_bos)
    token_eos, token_nl = _shown(_vocab, Vocab.token_eos), _shown(_vocab, Vocab.token_nl)
    tokenize, detokenize = _shown(_vocab, Vocab.tokenize), _shown(_vocab, Vocab.detokenize)

    def n_embd(self) -> int:
        """The model's embedding width (floats per vector of :meth:`embed`)."""
        return int(self._runtime().model.n_embd)

    def pooling_type(self) -> int:
        """llama.cpp's pooling type of the context: a ``_core.Pooling`` id (-1 unspecified ... 4 rank)."""
        return self.context_config.pooling

    def tokenizer(self) -> LlamaTokenizer:
        """This model's tokenizer as an object."""
        return LlamaTokenizer(self)

    logits_to_logprobs = staticmethod(logits_to_logprobs)
    longest_token_prefix = staticmethod(llama_cache.longest_token_prefix)
    from_pretrained = classmethod(hub.from_pretrained)

    # ------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the prompt cache (every sequence's cached tokens); running requests end with an ``EngineError``."""
        self.engine.clear()

    def set_seed(self, seed: int) -> None:
        """The seed of calls that name none: ``generate``/``sample`` use it as is; each
        completion draws its own from it (llama-cpp-python's chain, see ``next_call_seed``)."""
        self.seed = self.engine.seed = int(seed)

    def set_cache(self, cache: BaseLlamaCache | None) -> None:
        """Keep prompt states in ``cache`` across calls: ``LlamaRAMCache``/``LlamaDiskCache`` are
        views on the engine's state cache (``llama_cache``); None: none kept."""
        self.cache = llama_cache.attach(cache, self.engine, self.model_path, self.context_config.kv_layout)

    def save_state(self) -> LlamaState:
        """Sequence 0's tokens and KV state, and this object's seed."""
        return self._manual().save_state(self.seed)

    def load_state(self, state: LlamaState) -> None:
        """Make ``state`` sequence 0's; its seed becomes this object's (a cache's state has none)."""
        self._manual().load_state(state)
        if state.seed is not None:
            self.set_seed(state.seed)

    def cancel(self) -> None:
        """Stop this object's running requests at their next token (finish_reason "cancelled")."""
        self._runs.cancel()

    def perf(self) -> dict[str, float]:
        """llama.cpp's counters for this context: prompt/eval tokens and milliseconds."""
        return (self.pooled or self.engine).perf()

    # ------------------------------------------------------------- requests
    def submit(self, request: Request) -> Iterator[Any]:
        """Run ``request`` on the engine in this thread; yields its :class:`~sarai_llama.engine.Piece` s."""
        return self._runs.run(self.engine, request)

    def _completion_request(self, prompt: str | bytes | Sequence[int], use_cache: bool = False,
                            **keywords: Any) -> Request:
        """``Request.from_keywords`` on ``prompt``'s tokens, after the prompt cache (``use_cache``)."""
        vocab = self._vocab()
        tokens = vocab.prompt_tokens(prompt, self._n_ctx)
        # logprobs' text_offset counts characters from the start of the prompt (llama-cpp-python).
        request = Request.from_keywords(tokens, text_offset=len(vocab.prompt_text(prompt, tokens)),
                                        penalty_last_n=self.last_n_tokens_size, **keywords)
        if use_cache and self.cache is not None:  # before the draw: a state saved by save_state brings its seed
            if (state := llama_cache.restore(self.cache, self.engine.sequence(0).cached(), tokens)) is not None:
                self.load_state(state)  # looked up on the object: llama-cpp-python's tests count the calls
        # Checked first, drawn last: the call's seed (else next_call_seed's draw) becomes the object's.
        self.set_seed(next_call_seed(self.seed) if request.sampling.seed is None else request.sampling.seed)
        request.sampling = dataclasses.replace(request.sampling, seed=self.seed)
        return request

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
        if (json_grammar := response_grammar(response_format, grammar=sampling.get("grammar"))) is not None:
            sampling["grammar"] = json_grammar  # as the server's completions route: JSON through a grammar
        request = self._completion_request(prompt, True, max_tokens=max_tokens, stop=stop, logprobs=logprobs,
                                           logits_processor=logits_processor, stopping_criteria=stopping_criteria,
                                           **sampling)
        head = self._vocab().prompt_text(prompt, request.prompt) if echo else ""
        pieces = llama_cache.store_after(self.cache, request.prompt, self.submit(request), self.save_state)
        return text_completion.answer(pieces, head, model or self.model_path, stream, logprobs is not None,
                                      len(request.prompt))

    __call__ = create_completion

    def create_completions(self, prompts: Sequence[str | bytes | Sequence[int]], max_tokens: int | None = 16,
                           stop: str | list[str] | None = None, logprobs: int | None = None,
                           model: str | None = None, **sampling: Any) -> list[dict[str, Any]]:
        """Complete many prompts at once: up to ``n_seq_max`` decode together in each batch.

        For batch jobs without a server. Same keywords and result shape as
        :meth:`create_completion` (non-streaming), one result per prompt, in order.
        """
        requests = [self._completion_request(p, max_tokens=max_tokens, stop=stop, logprobs=logprobs, **sampling)
                    for p in prompts]
        return text_completion.collect_all(requests, run_all(self.engine, requests), model or self.model_path,
                                           logprobs is not None)

    # ------------------------------------------------------------- chat
    chat_handler = _shown(_runtime, Runtime.chat_format)  # how create_chat_completion renders chats

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
        messages, pictures = vision.chat_images(self._runtime().vision, messages, files=True)
        rendered, kwargs = chat_completion.render_call(
            self.chat_handler(), messages, kwargs, functions=functions, function_call=function_call, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls, response_format=response_format,
            grammar=grammar, reasoning_format=reasoning_format)
        request = self._completion_request(rendered.prompt, True, max_tokens=max_tokens, stop=stop,
                                           logprobs=(top_logprobs or 0) if logprobs else None,
                                           logits_processor=logits_processor, temperature=temperature,
                                           grammar=grammar, **kwargs)
        if pictures:
            vision.attach(request, self._runtime().vision, self._runtime().model, rendered.prompt, pictures)
        chat_completion.apply(request, rendered)
        pieces = llama_cache.store_after(self.cache, request.prompt, self.submit(request), self.save_state)
        return chat_completion.reply(pieces, rendered.output(), model or self.model_path, stream, bool(logprobs),
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

    (pooled,) = _shown_properties(_runtime, Runtime, "pooled")  # embedding=True: its Embedder (or Reranker)
