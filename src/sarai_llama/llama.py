"""``Llama``: llama-cpp-python's names and shapes, a thin face on the engine.

keywords -> :class:`~sarai_llama.sampling.SamplingParams` and an
:class:`~sarai_llama.engine.Request` -> :class:`~sarai_llama.engine.Engine`
(driven in the caller's thread) -> :mod:`~sarai_llama.responses` builders.
Everything per token happens in C++ (``_core.Engine``); this module owns
only llama-cpp-python's call shapes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _core, chat, chat_completion, llama_cache, responses
from ._numpy import numpy as _numpy
from .context_config import DEFAULT_STEP_BUDGET_MS, FLASH_ATTN, POOLING, ContextConfig, kv_type
from .engine import Collected, Engine, Handle, Request, run_all
from .errors import ModelLoadError, utf8
from .chat_template import response_grammar
from .grammar import LlamaGrammar
from .hooks import LogitsProcessorList, StoppingCriteriaList
from .loading import load_model
from .logits import logits_to_logprobs, sample_after_eval
from .sampling import SamplingParams, next_call_seed
from .llama_speculative import LlamaDraftModel, SpeculativeDecoder
from .stops import normalize_stops
from .threads import get_optimal_threads

if TYPE_CHECKING:
    import numpy as np

    from .llama_cache import BaseLlamaCache
    from .llama_tokenizer import LlamaTokenizer

__all__ = ["LLAMA_DEFAULT_SEED", "Llama", "LlamaState"]

logger = logging.getLogger("sarai_llama")

LLAMA_DEFAULT_SEED = 0xFFFFFFFF
#: Keywords llama-cpp-python accepts for GPUs and NUMA; meaningless on this CPU build.
GPU_KEYWORDS = ("n_gpu_layers", "main_gpu", "tensor_split", "split_mode", "offload_kqv", "numa")


@dataclass(frozen=True)
class LlamaState:
    """A snapshot of sequence 0: its evaluated tokens, llama.cpp's serialized state and
    the seed the next completion draws from (llama-cpp-python restores it too)."""

    input_ids: tuple[int, ...]
    llama_state: bytes
    n_ctx: int
    seed: int = LLAMA_DEFAULT_SEED

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def llama_state_size(self) -> int:
        """Bytes of llama.cpp's state."""
        return len(self.llama_state)


class Llama:
    """A GGUF model and its engine, with llama-cpp-python's API.

    Args:
        model_path: path to a ``.gguf`` file.
        n_ctx: context length in tokens (default 512; 0 = the model's training context).
        n_batch: most tokens evaluated per decode call (default 512); longer prompts are split.
        n_ubatch: physical batch size in tokens (None: 512, or ``n_batch`` if smaller; more
            than ``n_batch`` is a ``ValueError``).
        n_threads: threads for generation; None = ``get_optimal_threads()`` (physical
            P-cores allowed by affinity and cgroup quota, or ``SARAI_THREAD_MODE``);
            "auto" = the saved ``sarai-llama tune`` result for this model, else None.
        n_threads_batch: threads for prompt processing; None = ``n_threads``.
        n_seq_max: requests decoded together in one batch (default 1): threads calling
            this object at once, or :meth:`create_completions`, share the batches;
            they share the ``n_ctx`` KV cells too.
        step_budget_ms: while some of those requests generate, a step takes only as many
            prompt tokens as fit in this many ms (default 200; 0: off), so one long prompt
            does not stall the others' streams; see ``ContextConfig``.
        seed: default sampling seed (``LLAMA_DEFAULT_SEED`` = random).
        f16_kv, type_k, type_v: KV-cache types ("f16", "q8_0", ...).
        use_mmap, use_mlock: how weights are loaded.
        vocab_only: load only the tokenizer.
        embedding: create the context for embeddings (pooled, one vector per input).
        pooling_type: "mean" (default for embeddings), "cls", "last", "none", "unspecified".
        flash_attn: True, False or None/"auto" (default: llama.cpp decides).
        use_extra_bufts: let llama.cpp repack weights for faster CPU kernels (default True).
        chat_format: a llama.cpp built-in template name overriding the GGUF's.
        job: the job whose ``<JOB>_THREADS`` / tuned result applies (e.g. "coding").
        last_n_tokens_size: tokens the repetition penalties look back on (default 64).
        draft_model: speculative decoding for completions, e.g. ``LlamaPromptLookupDecoding()``
            (default None): one more single-sequence context; see ``llama_speculative.SpeculativeDecoder``.
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
                 use_extra_bufts: bool = True, swa_full: bool = False, chat_format: str | None = None,
                 job: str | None = None, logits_all: bool = False, last_n_tokens_size: int = 64,
                 draft_model: LlamaDraftModel | None = None, verbose: bool = True, trusted: bool | None = None,
                 **ignored: Any) -> None:
        self._model: Any = None
        self._engine: Engine | None = None
        self._ctx: Any = None  # the embedding context (embedding=True)
        self._spec: SpeculativeDecoder | None = None  # draft_model's decoder
        self._mine: dict[Handle, int] = {}  # this object's running requests -> the thread reading each
        self._embed_lock = threading.Lock()
        self.eval_logits: collections.deque[list[float]] = collections.deque(maxlen=1)
        self._eval_at = -1  # n_tokens when eval_logits was computed (-1: never)
        self.cache: BaseLlamaCache | None = None
        self.verbose = verbose
        _core.set_log_level(2 if verbose else 4)
        for key in ignored:
            if key not in GPU_KEYWORDS:
                raise TypeError(f"Llama() got an unexpected keyword argument {key!r}")
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.model_path = str(path)
        self.tuned: dict[str, Any] | None = None
        if n_threads == "auto":
            from .tune import load_saved

            self.tuned = load_saved(path, job or "default")
            n_threads = int(self.tuned["n_threads"]) if self.tuned else None
            if self.tuned:
                use_extra_bufts = bool(self.tuned["repack"])
                logger.info("using tuned settings: %s", self.tuned)
        if n_threads is None:
            n_threads = get_optimal_threads(job, default_mode="max")
        if flash_attn not in FLASH_ATTN:
            raise ValueError(f"flash_attn must be True, False or None, not {flash_attn!r}")
        if isinstance(pooling_type, str) and pooling_type not in POOLING:
            raise ValueError(f"unknown pooling type {pooling_type!r}; expected one of {', '.join(POOLING)}")
        pooling = POOLING[pooling_type] if isinstance(pooling_type, str) else int(pooling_type)
        # Checked before the (slow) model load: every bad value fails fast, naming itself.
        self.context_config = ContextConfig(
            n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=n_threads, n_threads_batch=n_threads_batch,
            type_k=kv_type(type_k, f16_kv), type_v=kv_type(type_v, f16_kv), flash_attn=FLASH_ATTN[flash_attn],
            embeddings=embedding, pooling=POOLING["mean"] if embedding and pooling == -1 else pooling,
            swa_full=swa_full, n_seq_max=n_seq_max, step_budget_ms=step_budget_ms,
        )
        self._model = load_model(self.model_path, vocab_only=vocab_only, use_mmap=use_mmap, use_mlock=use_mlock,
                                 use_extra_bufts=use_extra_bufts, trusted=trusted)
        self.n_threads, self.n_threads_batch = n_threads, self.context_config.n_threads_batch
        self.seed, self.embedding, self.logits_all = seed, embedding, logits_all
        self._pooling_type = self.context_config.pooling
        # Private in llama-cpp-python too; its own tests read them.
        self._is_recurrent = bool(getattr(self._model, "is_recurrent", False))
        self._is_hybrid = bool(getattr(self._model, "is_hybrid", False))
        self.last_n_tokens_size, self.chat_format, self.vocab_only = last_n_tokens_size, chat_format, vocab_only
        self.metadata: dict[str, str] = dict(self._model.metadata())
        self._architecture = self.metadata.get("general.architecture", "")
        self._chat_format: chat.ChatFormat | None = None
        self._n_ctx = n_ctx or self._model.n_ctx_train
        if vocab_only:
            return
        try:
            if embedding:
                self._ctx = _core.Context(self._model, self.context_config.to_core())
                self._n_ctx = self._ctx.n_ctx
            else:
                self._engine = Engine(self._model, self.context_config, seed)
                self._n_ctx = self._engine.n_ctx
                if draft_model is not None:
                    self._spec = SpeculativeDecoder(self._model, self.context_config, draft_model)
        except RuntimeError as exc:
            raise ModelLoadError(str(exc)) from exc

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free the engine and the model now (also done by ``with`` and garbage collection)."""
        self._engine = self._ctx = self._model = self._spec = None

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _vocab(self) -> Any:
        if self._model is None:
            raise RuntimeError("this Llama is closed")
        return self._model

    def _eng(self) -> Engine:
        if self._engine is None:
            self._vocab()
            why = "embedding=True: it computes embeddings" if self.embedding else "vocab_only=True: it can only tokenize"
            raise RuntimeError(f"this Llama was loaded with {why}")
        return self._engine

    # ------------------------------------------------------------- model facts
    def n_ctx(self) -> int:
        return self._n_ctx

    def n_vocab(self) -> int:
        return self._vocab().n_vocab

    def n_embd(self) -> int:
        return self._vocab().n_embd

    def token_bos(self) -> int:
        return self._vocab().token_bos

    def token_eos(self) -> int:
        return self._vocab().token_eos

    def token_nl(self) -> int:
        return self._vocab().token_nl

    @property
    def input_ids(self) -> np.ndarray:
        """Tokens cached in sequence 0 (the prompt cache of single-user calls)."""
        np = _numpy()
        return np.array(self._eng().cached(), dtype=np.intc)

    @property
    def n_tokens(self) -> int:
        return len(self._eng().cached())

    @property
    def eval_tokens(self) -> collections.deque[int]:
        """The evaluated tokens of sequence 0."""
        return collections.deque(self._eng().cached(), maxlen=self._n_ctx)

    @property
    def scores(self) -> np.ndarray:
        """Logits kept from :meth:`eval`, one row per position: here only the last position's
        (shape ``(1, n_vocab)``; ``(0, n_vocab)`` before any eval). llama-cpp-python keeps
        rows only with ``logits_all``; every other row there is stale."""
        np = _numpy()
        return np.array(list(self.eval_logits), dtype=np.single).reshape(-1, self.n_vocab())

    def pooling_type(self) -> int:
        """llama.cpp's pooling type of the context (-1 unspecified, 0 none, 1 mean, 2 cls, 3 last)."""
        return self._pooling_type

    def tokenizer(self) -> LlamaTokenizer:
        """This model's tokenizer as an object."""
        from .llama_tokenizer import LlamaTokenizer

        return LlamaTokenizer(self)

    @staticmethod
    def logits_to_logprobs(logits: Any, axis: int = -1) -> np.ndarray:
        """Log-softmax of ``logits`` (float32); see :func:`sarai_llama.logits.logits_to_logprobs`."""
        return logits_to_logprobs(logits, axis)

    @staticmethod
    def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
        """How many leading tokens ``a`` and ``b`` share."""
        return llama_cache.longest_token_prefix(a, b)

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
        if isinstance(text, str):
            text = utf8(text, "text")
        return list(self._vocab().tokenize(text, add_bos, special))

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """UTF-8 bytes of ``tokens`` (may end mid-character). As llama-cpp-python, the space a
        SentencePiece vocabulary puts before the first word after BOS is dropped, so
        ``detokenize(tokenize(b"Hello"))`` is ``b"Hello"``."""
        tokens = [int(t) for t in tokens]
        out = bytes(self._vocab().detokenize(tokens, special))
        if tokens and tokens[0] == self.token_bos() and out.startswith(b" "):
            out = out[1:]
        return out

    # ------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the prompt cache (every sequence's cached tokens)."""
        self._eng().clear()

    def set_seed(self, seed: int) -> None:
        """The seed of calls that name none: ``generate``/``sample`` use it as is; each
        completion draws its own from it (llama-cpp-python's chain, see ``next_call_seed``)."""
        self.seed = self._eng().seed = int(seed)

    def set_cache(self, cache: BaseLlamaCache | None) -> None:
        """Keep prompt states in ``cache`` (``LlamaRAMCache``, ``LlamaDiskCache``) across completions."""
        self.cache = cache

    def cancel(self) -> None:
        """Stop this object's running requests at their next token (finish_reason "cancelled")."""
        for handle in list(self._mine):
            handle.cancel()
        if self._spec is not None:
            self._spec.cancel()

    def save_state(self) -> LlamaState:
        tokens, data = self._eng().state()
        return LlamaState(tuple(tokens), data, self._n_ctx, self.seed)

    def load_state(self, state: LlamaState) -> None:
        self._eng().set_state(state.llama_state, list(state.input_ids))
        self.set_seed(state.seed)

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after the ones cached in sequence 0; ``eval_logits[-1]`` then
        holds the logits after the last one (llama-cpp-python keeps only the last too
        unless ``logits_all``)."""
        self.eval_logits = collections.deque([self._eng().eval([int(t) for t in tokens])], maxlen=1)
        self._eval_at = self.n_tokens

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
               temp: float = 0.80, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0, tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_eta: float = 0.1,
               mirostat_tau: float = 5.0, penalize_nl: bool = True, logits_processor: LogitsProcessorList | None = None,
               grammar: LlamaGrammar | None = None, idx: int | None = None) -> int:
        """One token after the evaluated ones (:meth:`eval`), with this object's seed; it is
        not evaluated. ``idx``: None or the last evaluated position. See :mod:`sarai_llama.logits`."""
        params = SamplingParams.from_kwargs(
            temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            penalize_nl=penalize_nl, grammar=grammar, penalty_last_n=self.last_n_tokens_size)
        return sample_after_eval(self, params, logits_processor, idx)

    def perf(self) -> dict[str, float]:
        """llama.cpp's counters for this context: prompt/eval tokens and milliseconds."""
        return dict(self._ctx.perf() if self._ctx is not None else self._eng().perf())

    # ------------------------------------------------------------- requests
    def _prompt_tokens(self, prompt: str | bytes | Sequence[int]) -> list[int]:
        if isinstance(prompt, (str, bytes)):
            text = utf8(prompt, "prompt") if isinstance(prompt, str) else prompt
            bos = self._vocab().add_bos
            tokens = self.tokenize(text, add_bos=bos, special=True) if text else ([self.token_bos()] if bos else [])
        else:
            tokens = [int(t) for t in prompt]
        if not tokens:
            raise ValueError("the prompt is empty and the model adds no BOS token")
        if len(tokens) >= self._n_ctx:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self._n_ctx}: "
                             "shorten the prompt or create the Llama with a larger n_ctx")
        return tokens

    def _run(self, request: Request) -> Iterator[Any]:
        engine, me = self._eng(), threading.get_ident()
        # A thread whose own unfinished streams hold every sequence would wait for itself.
        if sum(1 for t in list(self._mine.values()) if t == me) >= self.context_config.n_seq_max:
            raise RuntimeError("this Llama is busy with an unfinished generation in this thread (finish or close "
                               "the stream first, or create the Llama with a larger n_seq_max)")
        handle = engine.submit(request)
        self._mine[handle] = me
        try:
            yield from handle
        finally:
            self._mine.pop(handle, None)

    def generate(self, tokens: Sequence[int], top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 typical_p: float = 1.0, temp: float = 0.80, repeat_penalty: float = 1.0, reset: bool = True,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0, tfs_z: float = 1.0,
                 mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                 penalize_nl: bool = True, logits_processor: LogitsProcessorList | None = None,
                 stopping_criteria: StoppingCriteriaList | None = None, grammar: LlamaGrammar | None = None,
                 seed: int | None = None) -> Iterator[int]:
        """Yield sampled tokens after ``tokens`` without end; end-of-generation tokens are yielded too.

        ``reset=False`` continues after the tokens cached in sequence 0. Closing
        the generator ends the request; no lock is held between tokens.
        """
        sampling = SamplingParams.from_kwargs(
            temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            penalize_nl=penalize_nl, grammar=grammar, seed=seed, penalty_last_n=self.last_n_tokens_size)
        prompt = [int(t) for t in tokens] if reset else self._eng().cached() + [int(t) for t in tokens]
        for piece in self._run(Request(prompt, sampling, None, [], None, True, logits_processor, stopping_criteria)):
            yield from piece.tokens

    def _completion_request(self, prompt: str | bytes | Sequence[int], max_tokens: int | None, stop: Any,
                            logprobs: int | None, logits_processor: Any, stopping_criteria: Any,
                            use_cache: bool = False, **sampling: Any) -> Request:
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
            raise ValueError(f"logprobs must be a non-negative integer, not {logprobs!r}")
        params = SamplingParams.from_kwargs(penalty_last_n=self.last_n_tokens_size, **sampling)
        if logits_processor or stopping_criteria:
            _numpy()  # array APIs: a clear error where numpy cannot run (logprobs are computed in C++)
        tokens = self._prompt_tokens(prompt)
        if use_cache and self.cache is not None:  # before the draw: a restored state brings its seed
            llama_cache.restore(self, tokens)
        # Checked first, drawn last: a refused request does not advance the seed.
        params = dataclasses.replace(params, seed=self._call_seed(params.seed))
        # logprobs' text_offset counts characters from the start of the prompt (llama-cpp-python).
        return Request(tokens, params, max_tokens, normalize_stops(stop), logprobs, False, logits_processor,
                       stopping_criteria, len(self._prompt_text(prompt, tokens)))

    def _prompt_text(self, prompt: str | bytes | Sequence[int], tokens: list[int]) -> str:
        """The prompt as text: as given (what ``echo`` returns, as llama-cpp-python), or its tokens' text."""
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, bytes):
            return prompt.decode("utf-8", errors="ignore")
        return self.detokenize(tokens).decode("utf-8", errors="ignore")

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
        stop string), "length", or "cancelled" (:meth:`cancel`).
        """
        if suffix is not None:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        json_grammar = response_grammar(response_format, grammar=sampling.get("grammar"))
        if json_grammar is not None:  # as the server's completions route: JSON through a grammar
            sampling["grammar"] = json_grammar
        request = self._completion_request(prompt, max_tokens, stop, logprobs, logits_processor,
                                           stopping_criteria, use_cache=True, **sampling)
        cid, created, name = responses.completion_id(), responses.now(), model or self.model_path
        head = self._prompt_text(prompt, request.prompt) if echo else ""
        drafted = self._spec.try_run(request, self.seed) if self._spec and self._spec.accepts(request) else None
        pieces = drafted if drafted is not None else self._run(request)
        if self.cache is not None:
            pieces = llama_cache.store_after(self, request.prompt, pieces)
        if stream:
            return self._chunks(pieces, head, cid, created, name)
        return self._collect(pieces, head, cid, created, name, logprobs is not None, len(request.prompt))

    @staticmethod
    def _collect(pieces: Iterable[Any], head: str, cid: str, created: int, name: str, with_logprobs: bool,
                 n_prompt: int) -> dict[str, Any]:
        """One non-streamed ``text_completion`` from a request's pieces."""
        got = Collected.of(pieces, with_logprobs)
        return responses.completion(cid, created, name, head + got.text, got.finish_reason, got.logprobs,  # type: ignore[arg-type]
                                    got.usage or responses.usage(n_prompt, 0))

    @staticmethod
    def _chunks(pieces: Iterator[Any], head: str, cid: str, created: int, name: str) -> Iterator[dict[str, Any]]:
        if head:
            yield responses.completion_chunk(cid, created, name, head, None, None)
        for p in pieces:
            if p.text or p.logprobs or p.finish_reason is not None:
                yield responses.completion_chunk(cid, created, name, p.text, p.finish_reason, p.logprobs)

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
        name, created = model or self.model_path, responses.now()
        return [self._collect(pieces, "", responses.completion_id(), created, name, logprobs is not None,
                              len(req.prompt)) for req, pieces in zip(requests, run_all(self._eng(), requests))]

    # ------------------------------------------------------------- chat
    def chat_handler(self) -> chat.ChatFormat:
        """How :meth:`create_chat_completion` renders chats for this model (``.why`` says why)."""
        if self._chat_format is None:
            self._chat_format = chat.resolve_chat_format(self._model, self._architecture, self.chat_format)
        return self._chat_format

    def chat_template(self) -> tuple[str, str]:
        """(template name or Jinja source, why) used by :meth:`create_chat_completion`."""
        fmt = self.chat_handler()
        return (fmt.name if isinstance(fmt, chat.BuiltinChat) else fmt.source), fmt.why

    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]],
                               functions: Sequence[Mapping[str, Any]] | None = None, function_call: Any = None,
                               tools: Sequence[Mapping[str, Any]] | None = None, tool_choice: Any = None,
                               temperature: float = 0.2, stream: bool = False, stop: str | list[str] | None = None,
                               response_format: Mapping[str, Any] | None = None, max_tokens: int | None = None,
                               model: str | None = None, logprobs: bool | None = None,
                               top_logprobs: int | None = None, logits_processor: LogitsProcessorList | None = None,
                               grammar: LlamaGrammar | str | None = None, parallel_tool_calls: bool | None = None,
                               **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Answer ``messages`` (OpenAI shape) through the model's chat template: a
        ``chat.completion`` dict, or ``chat.completion.chunk`` dicts when ``stream=True``.

        ``tools``/``tool_choice`` ("auto", "none", "required" or a named function)
        and ``parallel_tool_calls`` need a Jinja template; calls come back as
        ``message.tool_calls`` with ``finish_reason`` "tool_calls".
        ``response_format`` ``{"type": "json_object"}`` or ``{"type": "json_schema",
        "json_schema": {"schema": ...}}`` constrains the answer to that JSON.
        Sampling keywords as :meth:`create_completion` (``temperature`` defaults to 0.2).
        """
        known = set(SamplingParams.__dataclass_fields__) | {"temp", "tfs_z", "penalize_nl", "stopping_criteria"}
        for key in [k for k in kwargs if k not in known]:
            if kwargs.pop(key) not in (None, [], {}):  # OpenAI fields set to nothing are harmless
                raise ValueError(f"{key} is not supported by sarai_llama's chat completion")
        tools, tool_choice = chat_completion.legacy_functions(functions, function_call, tools, tool_choice)
        rendered = chat_completion.render(self.chat_handler(), messages, tools=tools, tool_choice=tool_choice,
                                          parallel_tool_calls=parallel_tool_calls, response_format=response_format,
                                          grammar=grammar)
        stopping = kwargs.pop("stopping_criteria", None)
        request = self._completion_request(rendered.prompt, max_tokens, stop,
                                           (top_logprobs or 0) if logprobs else None, logits_processor, stopping,
                                           temperature=temperature, grammar=grammar, **kwargs)
        chat_completion.apply(request, rendered)
        cid, created, name = responses.chat_id(), responses.now(), model or self.model_path
        pieces = self._run(request)
        if stream:
            return chat_completion.chunks(pieces, rendered.output(), cid, created, name)
        return chat_completion.collect(pieces, rendered.output(), cid, created, name, bool(logprobs),
                                       len(request.prompt))

    def create_chat_completion_openai_v1(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`create_chat_completion` as the ``openai`` package's types
        (``ChatCompletion``, or an iterator of ``ChatCompletionChunk`` when ``stream=True``)."""
        try:
            from openai.types.chat import ChatCompletion, ChatCompletionChunk
        except ImportError as exc:
            raise ImportError("create_chat_completion_openai_v1 needs the openai package: pip install openai") from exc
        result = self.create_chat_completion(*args, **kwargs)
        if kwargs.get("stream"):
            return (ChatCompletionChunk(**chunk) for chunk in result)  # type: ignore[union-attr]
        return ChatCompletion(**result)  # type: ignore[arg-type]

    # ------------------------------------------------------------- embeddings
    def embed(self, input: str | Sequence[str], normalize: bool = False, truncate: bool = True,
              return_count: bool = False) -> Any:
        """One pooled vector of ``n_embd`` floats per input (a list of lists for a list input).

        Needs ``Llama(..., embedding=True)``. ``truncate`` cuts inputs longer than
        ``n_batch`` tokens; otherwise they raise ``ValueError``.
        """
        if self._ctx is None:
            raise ValueError("create the Llama with embedding=True to compute embeddings")
        np = _numpy()  # the core hands vectors over as arrays
        texts = [input] if isinstance(input, str) else list(input)
        limit = min(self.context_config.n_batch, self._n_ctx)
        with self._embed_lock:  # one context: one input at a time
            vectors, total = self._embed_all(texts, limit, truncate, normalize, np)
        out: Any = vectors[0] if isinstance(input, str) else vectors
        return (out, total) if return_count else out

    def _embed_all(self, texts: list[str], limit: int, truncate: bool, normalize: bool,
                   np: Any) -> tuple[list[list[float]], int]:
        vectors, total = [], 0
        for text in texts:
            tokens = self.tokenize(utf8(text, "input"), add_bos=self._vocab().add_bos, special=True)
            if len(tokens) > limit:
                if not truncate:
                    raise ValueError(f"input of {len(tokens)} tokens exceeds the {limit}-token embedding window")
                tokens = tokens[:limit]
            self._ctx.clear()
            self._ctx.eval(tokens, False)
            vec = self._ctx.embeddings()
            norm = float(np.linalg.norm(vec)) if normalize else 0.0
            vectors.append((vec / norm if norm > 0 else vec).tolist())
            total += len(tokens)
        self._ctx.clear()
        return vectors, total

    def create_embedding(self, input: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        """OpenAI-shaped embeddings: ``{"object": "list", "data": [{"embedding": [...]}], ...}``."""
        vectors, total = self.embed(input, return_count=True)
        return responses.embeddings([vectors] if isinstance(input, str) else vectors, model or self.model_path, total)
