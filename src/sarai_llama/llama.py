"""``Llama``: llama-cpp-python's call shapes over sarai-llama's compiled core.

A llama-cpp-python user switches by changing the import. The per-token work
(sampling, end-of-generation checks, UTF-8 safe incremental detokenisation,
batched decoding with the GIL released) happens in ``_core``; this module owns
parameters, prompt caching, stop strings and the OpenAI-shaped dicts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _core, chat, responses
from .context_config import FLASH_ATTN, POOLING, ContextConfig, kv_type
from ._numpy import numpy as _numpy
from .sampling import SamplingParams
from .stops import StopMatcher, normalize_stops
from .threads import get_optimal_threads

if TYPE_CHECKING:  # numpy is imported only by the APIs that use arrays (see _numpy.py)
    import numpy as np

__all__ = [
    "LLAMA_DEFAULT_SEED",
    "Llama",
    "LlamaGrammar",
    "LlamaState",
    "LogitsProcessorList",
    "ModelLoadError",
    "StoppingCriteriaList",
]

logger = logging.getLogger("sarai_llama")

LLAMA_DEFAULT_SEED = 0xFFFFFFFF

LogitsProcessor = Callable[["np.ndarray", "np.ndarray"], "np.ndarray"]
StoppingCriteria = Callable[["np.ndarray", "np.ndarray"], bool]


class LogitsProcessorList(list):
    """A list of ``fn(input_ids, scores) -> scores`` applied in order (llama-cpp-python's shape)."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(list):
    """A list of ``fn(input_ids, logits) -> bool``; generation stops when any returns True."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        return any(criterion(input_ids, logits) for criterion in self)


class _OwnedLock:
    """One caller at a time: other threads wait; the same thread re-entering gets an error.

    A re-entrant lock would let a caller start a second generation inside the
    loop of an unfinished stream and silently corrupt its context; a plain lock
    would deadlock it. Both are bugs in the caller, so say so.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def __enter__(self) -> None:
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(
                "this Llama is busy with an unfinished generation in this thread "
                "(finish or close the stream first)"
            )
        self._lock.acquire()
        self._owner = me

    def __exit__(self, *exc: object) -> None:
        self._owner = None
        self._lock.release()


class ModelLoadError(ValueError):
    """The model file exists but cannot be loaded (corrupt, unsupported, hostile)."""


class LlamaGrammar:
    """A GBNF grammar for constrained sampling (llama-cpp-python's ``LlamaGrammar`` shape).

    The grammar is parsed by llama.cpp when a completion uses it; a grammar it
    rejects raises ``ValueError`` there.
    """

    def __init__(self, grammar: str, root: str = "root") -> None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise ValueError("grammar must be a non-empty GBNF string")
        self.grammar = grammar
        self.root = root

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> LlamaGrammar:
        return cls(grammar)

    @classmethod
    def from_file(cls, file: str | os.PathLike[str], verbose: bool = True) -> LlamaGrammar:
        return cls(Path(file).read_text())


@dataclass(frozen=True)
class LlamaState:
    """A snapshot of a context: the evaluated tokens and llama.cpp's serialized state."""

    input_ids: tuple[int, ...]
    llama_state: bytes
    n_ctx: int


class Llama:
    """A GGUF model and one context, with llama-cpp-python's API.

    Args:
        model_path: path to a ``.gguf`` file.
        n_ctx: context length in tokens (default 512; 0 = the model's training context).
        n_batch: most prompt tokens evaluated per decode call (default 512);
            longer prompts are split.
        n_ubatch: physical batch size in tokens (default 512).
        n_threads: threads for generation; None = ``get_optimal_threads()`` for
            this machine (all physical P-cores allowed by affinity and cgroup quota,
            unless ``SARAI_THREAD_MODE`` says otherwise); "auto" = the result of
            ``sarai-llama tune`` for this model, build and CPU (threads and weight
            repacking) when one is saved, else the same as None.
        n_threads_batch: threads for prompt processing; None = ``n_threads``.
        seed: sampling seed (default ``LLAMA_DEFAULT_SEED`` = random).
        f16_kv: F16 KV cache (default True); ``type_k``/``type_v`` ("f16", "q8_0",
            ...) override it.
        use_mmap, use_mlock: how weights are loaded (llama.cpp's ``load_mode``).
        vocab_only: load only the tokenizer (tokenize/detokenize work, nothing else).
        embedding: create the context for embeddings (pooled, one vector per input).
        pooling_type: "mean" (default for embeddings), "cls", "last", "none" or
            "unspecified" (the model's own).
        flash_attn: True, False or None/"auto" (default: llama.cpp decides).
        use_extra_bufts: let llama.cpp repack weights for faster CPU kernels (default True).
        chat_format: a llama.cpp built-in template name ("gemma", "chatml",
            "llama3", ...) overriding the GGUF's template.
        job: the job whose ``<JOB>_THREADS`` / tuned result applies (e.g. "coding").
        verbose: print llama.cpp's log (default True, as llama-cpp-python).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | str | None = None,
        n_threads_batch: int | None = None,
        seed: int = LLAMA_DEFAULT_SEED,
        f16_kv: bool = True,
        type_k: str | int | None = None,
        type_v: str | int | None = None,
        use_mmap: bool = True,
        use_mlock: bool = False,
        vocab_only: bool = False,
        embedding: bool = False,
        pooling_type: str | int = "unspecified",
        flash_attn: bool | str | None = None,
        use_extra_bufts: bool = True,
        swa_full: bool = False,
        chat_format: str | None = None,
        job: str | None = None,
        logits_all: bool = False,
        last_n_tokens_size: int = 64,
        verbose: bool = True,
        **ignored: Any,
    ) -> None:
        self._lock = _OwnedLock()
        self._model: Any = None
        self._ctx: Any = None
        self.verbose = verbose
        _core.set_log_level(2 if verbose else 4)
        for key in ignored:
            if key not in ("n_gpu_layers", "main_gpu", "tensor_split", "split_mode", "offload_kqv", "numa"):
                raise TypeError(f"Llama() got an unexpected keyword argument {key!r}")

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.model_path = str(path)
        meta = self._check_gguf(path, vocab_only)
        self._architecture = meta.get("general.architecture", b"").decode(errors="replace")

        n_ctx = int(n_ctx)
        if n_ctx < 0:
            raise ValueError(f"n_ctx must be >= 0, not {n_ctx}")
        self.tuned: dict[str, Any] | None = None
        if n_threads == "auto":
            from .tune import load_saved

            self.tuned = load_saved(path, job or "default")
            if self.tuned:
                n_threads = int(self.tuned["n_threads"])
                use_extra_bufts = bool(self.tuned["repack"])
                logger.info("using tuned settings: %s", self.tuned)
            else:
                n_threads = None
        if n_threads is None:
            n_threads = get_optimal_threads(job, default_mode="max")
        if isinstance(pooling_type, str) and pooling_type not in POOLING:
            raise ValueError(f"unknown pooling type {pooling_type!r}; expected one of {', '.join(POOLING)}")
        pooling = POOLING[pooling_type] if isinstance(pooling_type, str) else int(pooling_type)
        if embedding and pooling == -1:
            pooling = POOLING["mean"]
        if flash_attn not in FLASH_ATTN:
            raise ValueError(f"flash_attn must be True, False or None, not {flash_attn!r}")
        # Checked before the (slow) model load: every bad value fails fast, naming itself.
        self.context_config = ContextConfig(
            n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=n_threads, n_threads_batch=n_threads_batch,
            type_k=kv_type(type_k, f16_kv), type_v=kv_type(type_v, f16_kv), flash_attn=FLASH_ATTN[flash_attn],
            embeddings=embedding, pooling=pooling, swa_full=swa_full,
        )
        n_threads_batch = self.context_config.n_threads_batch

        try:
            self._model = _core.Model(
                self.model_path, vocab_only=vocab_only, use_mmap=use_mmap, use_mlock=use_mlock,
                use_extra_bufts=use_extra_bufts,
            )
        except (RuntimeError, ValueError) as exc:  # ValueError: a GGUF refused before loading
            raise ModelLoadError(str(exc)) from exc

        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch
        self.seed = seed
        self.embedding = embedding
        self.logits_all = logits_all
        self.last_n_tokens_size = last_n_tokens_size
        self.chat_format = chat_format
        self.vocab_only = vocab_only
        self.metadata: dict[str, str] = dict(self._model.metadata())
        self._chat_template: str | None = None
        self._params = {"n_ctx": n_ctx, "n_batch": n_batch, "n_ubatch": n_ubatch}
        if vocab_only:
            self._n_ctx = n_ctx or self._model.n_ctx_train
            return

        try:
            self._ctx = _core.Context(self._model, self.context_config.to_core())
        except RuntimeError as exc:
            raise ModelLoadError(str(exc)) from exc
        self._n_ctx = self._ctx.n_ctx

    # ------------------------------------------------------------- lifecycle
    @staticmethod
    def _check_gguf(path: Path, vocab_only: bool) -> dict[str, Any]:
        """The GGUF header; files llama.cpp would abort on are refused here (and again by ``_core.Model``)."""
        try:
            return _core.inspect_gguf(str(path))
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc

    def close(self) -> None:
        """Free the context and the model now (also done by ``with`` and garbage collection)."""
        with self._lock:
            self._ctx = None
            self._model = None

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _context(self) -> Any:
        if self._ctx is None:
            if self._model is None:
                raise RuntimeError("this Llama is closed")
            raise RuntimeError("this Llama was loaded with vocab_only=True: it can only tokenize")
        return self._ctx

    def _vocab(self) -> Any:
        if self._model is None:
            raise RuntimeError("this Llama is closed")
        return self._model

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
        """Tokens currently evaluated in the context (the prompt cache)."""
        np = _numpy()
        return np.array(self._context().tokens, dtype=np.intc)

    @property
    def n_tokens(self) -> int:
        return len(self._context().tokens)

    # ------------------------------------------------------------- tokens
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Tokens of ``text`` (UTF-8 bytes); ``add_bos`` adds the model's BOS if it uses one."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        return list(self._vocab().tokenize(text, add_bos, special))

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None, special: bool = False) -> bytes:
        """UTF-8 bytes of ``tokens`` (may end mid-character; decode with errors='ignore')."""
        model = self._vocab()
        return model.detokenize([int(t) for t in tokens], special)

    def reset(self) -> None:
        """Forget the evaluated tokens (the next call evaluates its whole prompt)."""
        with self._lock:
            self._context().clear()

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)

    def cancel(self) -> None:
        """Stop the running generation from another thread, within one decode.

        The interrupted call returns what it has with ``finish_reason`` "cancelled".
        """
        if self._ctx is not None:
            self._ctx.cancel()

    def save_state(self) -> LlamaState:
        with self._lock:
            ctx = self._context()
            return LlamaState(tuple(ctx.tokens), bytes(ctx.state()), self._n_ctx)

    def load_state(self, state: LlamaState) -> None:
        with self._lock:
            if state.n_ctx != self._n_ctx:
                raise ValueError(f"state is for n_ctx={state.n_ctx}, this context has {self._n_ctx}")
            self._context().set_state(state.llama_state, list(state.input_ids))

    # ------------------------------------------------------------- evaluation
    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after the ones already in the context."""
        with self._lock:
            self._context().eval([int(t) for t in tokens], self.logits_all)

    def _prefill(self, tokens: list[int]) -> int:
        """Evaluate ``tokens`` reusing the longest cached prefix; returns tokens reused."""
        ctx = self._context()
        cached = ctx.tokens
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        # The last prompt token is always evaluated: its logits choose the first new token.
        keep = min(common, len(tokens) - 1)
        if not ctx.truncate(keep):
            keep = 0
        ctx.eval(tokens[keep:], False)
        return keep

    def _sampler(self, params: SamplingParams) -> Any:
        return _core.Sampler(self._model, params.to_core(self.seed))

    def _sampling(self, **kw: Any) -> SamplingParams:
        """llama-cpp-python's keywords -> one checked :class:`SamplingParams`."""
        return SamplingParams.from_kwargs(penalty_last_n=self.last_n_tokens_size, **kw)

    def generate(
        self,
        tokens: Sequence[int],
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        temp: float = 0.80,
        repeat_penalty: float = 1.0,
        reset: bool = True,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        penalize_nl: bool = True,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        grammar: LlamaGrammar | None = None,
        seed: int | None = None,
    ) -> Iterator[int]:
        """Yield sampled tokens after evaluating ``tokens``, without end (stop when you like).

        End-of-generation tokens are yielded like any other; the caller decides.
        """
        sampler = self._sampler(self._sampling(
            temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, seed=seed, grammar=grammar, mirostat_mode=mirostat_mode,
            mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, tfs_z=tfs_z, penalize_nl=penalize_nl,
        ))
        if logits_processor or stopping_criteria:
            _numpy()  # they take arrays: a clear error where numpy cannot run
        with self._lock:
            ctx = self._context()
            ctx.reset_cancel()
            tokens = [int(t) for t in tokens]
            try:
                if reset:
                    self._prefill(tokens)
                else:
                    ctx.eval(tokens, False)
                while True:
                    logits = None
                    if logits_processor:
                        logits = logits_processor(self.input_ids, ctx.logits())
                    token, _ = ctx.sample(sampler, logits)
                    if stopping_criteria and stopping_criteria(self.input_ids, ctx.logits()):
                        return
                    yield token
                    ctx.eval([token], False)
            except _core.Cancelled:  # cancel() ends the iteration
                return

    # ------------------------------------------------------------- completion
    def _prompt_tokens(self, prompt: str | bytes | Sequence[int]) -> list[int]:
        if isinstance(prompt, (str, bytes)):
            text = prompt.encode("utf-8") if isinstance(prompt, str) else prompt
            bos = self._model.add_bos
            tokens = self.tokenize(text, add_bos=bos, special=True) if text else (
                [self.token_bos()] if bos else []
            )
        else:
            tokens = [int(t) for t in prompt]
        if not tokens:
            raise ValueError("the prompt is empty and the model adds no BOS token")
        n_vocab = self.n_vocab()
        for t in tokens:
            if not 0 <= t < n_vocab:
                raise ValueError(f"token id {t} is out of range [0, {n_vocab})")
        if len(tokens) >= self._n_ctx:
            raise ValueError(
                f"Requested tokens ({len(tokens)}) exceed context window of {self._n_ctx}: "
                "shorten the prompt or create the Llama with a larger n_ctx"
            )
        return tokens

    def _completion_stream(
        self,
        prompt: str | bytes | Sequence[int],
        *,
        max_tokens: int | None,
        stop: str | list[str] | None,
        echo: bool,
        logprobs: int | None,
        logits_processor: LogitsProcessorList | None,
        stopping_criteria: StoppingCriteriaList | None,
        sampling: SamplingParams,
    ) -> Iterator[tuple[str, str | None, dict[str, Any] | None, dict[str, int]]]:
        """The generation loop: yields (text, finish_reason, logprobs, usage) pieces."""
        if logits_processor or stopping_criteria or logprobs is not None:
            _numpy()  # these go through arrays: a clear error where numpy cannot run
        stops = StopMatcher(normalize_stops(stop))
        with self._lock:
            ctx = self._context()
            ctx.reset_cancel()
            tokens = self._prompt_tokens(prompt)
            sampler = self._sampler(sampling)
            room = self._n_ctx - len(tokens)
            limit = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
            usage = responses.usage(len(tokens), 0)
            try:
                self._prefill(tokens)
            except _core.Cancelled:  # cancel() while the prompt was evaluated
                yield "", "cancelled", None, usage
                return
            ctx.flush_text()
            if echo:
                yield self.detokenize(tokens).decode("utf-8", errors="ignore"), None, None, usage

            finish: str | None = None
            generated = 0
            try:
                while True:
                    if ctx.cancelled:
                        finish = "cancelled"
                        break
                    if generated >= limit:
                        finish = "length"
                        break
                    scores = ctx.logits() if (logits_processor or logprobs is not None) else None
                    if logits_processor:
                        scores = logits_processor(self.input_ids, scores)
                    token, end = ctx.sample(sampler, scores if logits_processor else None)
                    if stopping_criteria and stopping_criteria(self.input_ids, ctx.logits()):
                        finish = "stop"
                        break
                    if end:
                        finish = "stop"
                        break
                    generated += 1
                    usage = responses.usage(len(tokens), generated)
                    piece = ctx.push_text(token).decode("utf-8", errors="replace")
                    token_logprobs = (
                        _logprobs_entry(self, token, scores, logprobs, len(stops.text)) if logprobs is not None else None
                    )
                    # Stop strings: cut at the first one; hold back a tail that could start one.
                    ready, hit = stops.feed(piece)
                    if hit:
                        if ready:
                            yield ready, None, None, usage
                        finish = "stop"
                        break
                    if ready or token_logprobs:
                        yield ready, None, token_logprobs, usage
                    # Evaluate the token only now: a stop above costs no decode.
                    try:
                        ctx.eval([token], False)
                    except _core.Cancelled:
                        finish = "cancelled"
                        break
                    if len(ctx.tokens) >= self._n_ctx:
                        finish = "length"
                        break
            except _core.Cancelled:
                finish = "cancelled"
            tail = ctx.flush_text()  # bytes of a character the last token left unfinished
            if not stops.stopped:
                stops.text += tail.decode("utf-8", errors="replace")
            yield stops.release_all(), finish, None, usage

    def create_completion(
        self,
        prompt: str | bytes | Sequence[int],
        suffix: str | None = None,
        max_tokens: int | None = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: int | None = None,
        echo: bool = False,
        stop: str | list[str] | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: int | None = None,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: str | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        logits_processor: LogitsProcessorList | None = None,
        grammar: LlamaGrammar | str | None = None,
        logit_bias: Mapping[int, float] | None = None,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Complete ``prompt``; a ``text_completion`` dict, or its chunks when ``stream=True``.

        ``max_tokens`` None or <= 0 generates until the context is full;
        ``finish_reason`` is "stop" (end token, stop string), "length" or
        "cancelled" (``cancel()`` from another thread).
        """
        if suffix is not None:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        if logprobs is not None and (not isinstance(logprobs, int) or logprobs < 0):
            raise ValueError(f"logprobs must be a non-negative integer, not {logprobs!r}")
        sampling = self._sampling(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, seed=seed, grammar=grammar, logit_bias=logit_bias,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, tfs_z=tfs_z,
        )
        pieces = self._completion_stream(
            prompt, max_tokens=max_tokens, stop=stop, echo=echo, logprobs=logprobs,
            logits_processor=logits_processor, stopping_criteria=stopping_criteria, sampling=sampling,
        )
        completion_id = responses.completion_id()
        created = responses.now()
        model_name = model or self.model_path
        if stream:
            return self._stream_chunks(pieces, completion_id, created, model_name)
        text_parts: list[str] = []
        lp = responses.empty_logprobs() if logprobs is not None else None
        finish = None
        usage = responses.usage(0, 0)
        for piece, finish, piece_lp, usage in pieces:
            text_parts.append(piece)
            if lp is not None and piece_lp:
                responses.merge_logprobs(lp, piece_lp)
        return responses.completion(completion_id, created, model_name, "".join(text_parts), finish, lp, usage)

    @staticmethod
    def _stream_chunks(pieces: Iterator[Any], completion_id: str, created: int, model_name: str) -> Iterator[dict[str, Any]]:
        for piece, finish, piece_lp, _usage in pieces:
            if not piece and finish is None and not piece_lp:
                continue
            yield responses.completion_chunk(completion_id, created, model_name, piece, finish, piece_lp)

    def __call__(self, prompt: str | bytes | Sequence[int], **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Same as :meth:`create_completion`."""
        return self.create_completion(prompt, **kwargs)

    # ------------------------------------------------------------- chat
    def chat_template(self) -> tuple[str, str]:
        """(template, why) used by :meth:`create_chat_completion` for this model."""
        if self._chat_template is None:
            own = self._vocab().chat_template(None)
            self._chat_template, self._chat_template_reason = chat.resolve_template(
                own, self._architecture, self.chat_format
            )
        return self._chat_template, self._chat_template_reason

    def create_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        stream: bool = False,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        response_format: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: str | None = None,
        logits_processor: LogitsProcessorList | None = None,
        grammar: LlamaGrammar | str | None = None,
        logit_bias: Mapping[int, float] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        **unsupported: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Answer ``messages`` (OpenAI shape) through the model's chat template.

        Returns a ``chat.completion`` dict, or ``chat.completion.chunk`` dicts when
        ``stream=True``.
        """
        for key, value in unsupported.items():
            if value not in (None, [], {}):
                raise ValueError(f"{key} is not supported by sarai_llama's chat completion")
        if response_format and response_format.get("type") not in (None, "text"):
            raise ValueError("response_format other than text is not supported yet; pass a GBNF grammar=")
        template, _why = self.chat_template()
        prompt = chat.render(template, messages, add_generation_prompt=True)
        result = self.create_completion(
            prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
            typical_p=typical_p, stream=stream, stop=stop, seed=seed, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, repeat_penalty=repeat_penalty, mirostat_mode=mirostat_mode,
            mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, model=model, logits_processor=logits_processor,
            grammar=grammar, logit_bias=logit_bias, logprobs=top_logprobs if logprobs else None,
        )
        chat_id = responses.chat_id()
        if stream:
            return self._chat_chunks(result, chat_id)  # type: ignore[arg-type]
        assert isinstance(result, dict)
        choice = result["choices"][0]
        return responses.chat_completion(chat_id, result["created"], result["model"], choice["text"],
                                         choice["finish_reason"], choice["logprobs"], result["usage"])

    @staticmethod
    def _chat_chunks(chunks: Iterator[dict[str, Any]], chat_id: str) -> Iterator[dict[str, Any]]:
        first = True
        for chunk in chunks:
            choice = chunk["choices"][0]
            created, model = chunk["created"], chunk["model"]
            if first:
                yield responses.chat_chunk(chat_id, created, model, {"role": "assistant"}, None)
                first = False
            delta = {"content": choice["text"]} if choice["text"] else {}
            yield responses.chat_chunk(chat_id, created, model, delta, choice["finish_reason"], choice["logprobs"])

    # ------------------------------------------------------------- embeddings
    def embed(
        self,
        input: str | Sequence[str],
        normalize: bool = False,
        truncate: bool = True,
        return_count: bool = False,
    ) -> Any:
        """One pooled vector of ``n_embd`` floats per input (a list of lists for a list input).

        Needs ``Llama(..., embedding=True)``. ``truncate`` cuts inputs longer than
        ``n_batch`` tokens; otherwise they raise ``ValueError``.
        """
        if not self.embedding:
            raise ValueError("create the Llama with embedding=True to compute embeddings")
        _numpy()  # the core hands vectors over as arrays
        single = isinstance(input, str)
        texts = [input] if single else list(input)
        vectors: list[list[float]] = []
        total = 0
        n_batch = self._params["n_batch"]
        with self._lock:
            ctx = self._context()
            for text in texts:
                tokens = self.tokenize(text.encode("utf-8"), add_bos=self._model.add_bos, special=True)
                limit = min(n_batch, self._n_ctx)
                if len(tokens) > limit:
                    if not truncate:
                        raise ValueError(f"input of {len(tokens)} tokens exceeds the {limit}-token embedding window")
                    tokens = tokens[:limit]
                ctx.clear()
                ctx.eval(tokens, False)
                vec = ctx.embeddings()
                if normalize:
                    norm = float(_numpy().linalg.norm(vec))
                    vec = vec / norm if norm > 0 else vec
                vectors.append(vec.tolist())
                total += len(tokens)
            ctx.clear()
        out: Any = vectors[0] if single else vectors
        return (out, total) if return_count else out

    def create_embedding(self, input: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        """OpenAI-shaped embeddings: ``{"object": "list", "data": [{"embedding": [...]}], ...}``."""
        single = isinstance(input, str)
        vectors, total = self.embed(input, return_count=True)
        if single:
            vectors = [vectors]
        return responses.embeddings(vectors, model or self.model_path, total)

    # ------------------------------------------------------------- perf
    def perf(self) -> dict[str, float]:
        """llama.cpp's counters for this context: prompt/eval tokens and milliseconds."""
        return dict(self._context().perf())


def _logprobs_entry(llm: Llama, token: int, scores: np.ndarray | None, top_n: int, offset: int) -> dict[str, list[Any]]:
    """llama-cpp-python's per-token logprobs record for one sampled token."""
    assert scores is not None
    np = _numpy()
    shifted = scores - scores.max()
    log_probs = shifted - np.log(np.exp(shifted).sum())
    piece = llm.detokenize([token]).decode("utf-8", errors="replace")
    top: dict[str, float] = {}
    if top_n:
        for t in np.argsort(-log_probs)[:top_n]:
            top[llm.detokenize([int(t)]).decode("utf-8", errors="replace")] = float(log_probs[t])
    top[piece] = float(log_probs[token])
    return {"tokens": [piece], "text_offset": [offset], "token_logprobs": [float(log_probs[token])], "top_logprobs": [top]}
