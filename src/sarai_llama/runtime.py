"""``Runtime``: one loaded model, ready to serve; the one place a model is assembled.

``Llama`` holds one, and so does the server's state (one model served is one
``Runtime``). From a model path and keywords it resolves, once, each choice with
its reason:

- the threads (:func:`~sarai_llama.threads.choose_threads`: ``auto``, a count, or
  ``tuned``, whose record also says whether weights are repacked);
- the context (:class:`~sarai_llama.context_config.ContextConfig`: sizes, KV types,
  flash attention, sequences, step budget), checked before the slow load;
- the model (:func:`~sarai_llama.loading.load_model`: the probe process for
  untrusted files) and its engine, or for ``embeddings=True`` its pooled context
  instead (:attr:`Runtime.role` "embed", or "rank" under rank pooling);
- the chat format (:func:`~sarai_llama.chat.resolve_chat_format`), on first use;
- the pooled embedder and reranker beside an engine, on first use, on the same weights;
- the state cache's budget (:func:`~sarai_llama.memory.explain_cache_budget`: the
  process's memory limit, minus weights and KV).

It speaks no protocol: routes and ``Llama``'s call shapes sit on top.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Literal

from . import _core, chat, vision
from .context_config import KV_TYPES, POOLING, ContextConfig, kv_cache_bytes, pooling_id
from .embedding import Embedder
from .engine import Engine
from .errors import ModelLoadError
from .llama_speculative import Speculation
from .loading import load_model
from .pooled import server_window
from .rerank import Reranker
from .sampling import RANDOM_SEED
from .threads import ThreadChoice, choose_threads

__all__ = ["Role", "Runtime"]

logger = logging.getLogger("sarai_llama")

#: What the loaded context does: generate (an :class:`Engine`), embed (mean/cls/last
#: pooling, an :class:`Embedder`) or rank (a :class:`Reranker`).
Role = Literal["generate", "embed", "rank"]


class Runtime:
    """A GGUF model and what runs it, assembled once with the reason for each choice.

    Args:
        model_path: the ``.gguf`` file (``FileNotFoundError`` when it is not one).
        threads: a :class:`ThreadChoice` already made, or what :func:`choose_threads` takes
            (None / "auto": the policy; a count; "tuned": ``sarai-llama tune``'s record).
        job: the job whose ``<JOB>_THREADS`` or tuned record applies.
        vocab_only: load the tokenizer only (no context at all).
        use_mmap, use_mlock: how the weights are loaded (default mmap, no mlock).
        use_extra_bufts: let llama.cpp repack weights for its faster CPU kernels; None (default):
            the tuned record's choice when threads are "tuned", else True. An explicit value wins.
        trusted: skip the probe process (None: ``SARAI_TRUSTED_MODELS``; see ``loading``).
        seed: the engine's default seed (``RANDOM_SEED``: random).
        speculation: the engine's n-gram speculation defaults (None: off).
        chat_format: a built-in template name, a Jinja file or text overriding the GGUF's
            (None: the GGUF's own; see ``chat.resolve_chat_format``).
        verbose: print llama.cpp's log from the info level up (default True), else its errors only.
        mmproj: a projector GGUF (llama.cpp's mtmd) loaded beside the model, so that prompts may
            hold images (:attr:`vision`; ``ValueError`` when it does not fit the model). The loading
            probe checks it with the model unless ``trusted``. None: text only.
        **context: :meth:`ContextConfig.from_keywords` (``n_ctx``, ``n_batch``, ``n_ubatch``,
            ``n_threads_batch``, ``type_k``, ``type_v``, ``f16_kv``, ``flash_attn``,
            ``embeddings``, ``pooling_type``, ``swa_full``, ``n_seq_max``, ``step_budget_ms``).
            ``embeddings=True`` makes the runtime's :attr:`role` "embed" ("rank" under rank
            pooling): a pooled context instead of an engine.

    ``ModelLoadError`` for a file llama.cpp refuses, ``ValueError`` for a bad keyword
    (before the load).
    """

    def __init__(self, model_path: str | os.PathLike[str], *, threads: ThreadChoice | int | str | None = None,
                 job: str | None = None, vocab_only: bool = False, use_mmap: bool = True,
                 use_mlock: bool = False, use_extra_bufts: bool | None = None, trusted: bool | None = None,
                 seed: int = RANDOM_SEED, speculation: Speculation | None = None, chat_format: str | None = None,
                 verbose: bool = True, mmproj: str | os.PathLike[str] | None = None, **context: Any) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.path, self.chat_format_name = str(path), chat_format
        _core.set_log_level(2 if verbose else 4)
        self.threads = threads if isinstance(threads, ThreadChoice) else choose_threads(threads, job, path)
        tuned = self.threads.tuned
        if use_extra_bufts is None:
            use_extra_bufts = bool(tuned["repack"]) if tuned else True
            self.repack_why = "the tuned record" if tuned else "the default"
        else:
            self.repack_why = "asked for"
        if tuned:
            logger.info("using tuned settings: %s", tuned)
        # Checked before the (slow) model load: every bad value fails fast, naming itself.
        self.config = ContextConfig.from_keywords(n_threads=self.threads.n_threads, **context)
        self.role: Role = ("rank" if self.config.pooling == POOLING["rank"] else "embed") \
            if self.config.embeddings else "generate"
        self.model: Any = load_model(self.path, vocab_only=vocab_only, use_mmap=use_mmap, use_mlock=use_mlock,
                                     use_extra_bufts=use_extra_bufts, trusted=trusted,
                                     mmproj=None if vocab_only else mmproj)
        self.metadata: dict[str, str] = dict(self.model.metadata())
        self.architecture = self.metadata.get("general.architecture", "")
        self.engine: Engine | None = None
        self._pooled: dict[str, Embedder | Reranker | ValueError] = {}
        self._pooled_lock = threading.Lock()
        self._chat: chat.ChatFormat | ValueError | None = None
        self.vision: _core.Vision | None = None
        if vocab_only:
            return
        try:
            if self.role == "generate":
                self.engine = Engine(self.model, self.config, seed, speculation)
            else:
                self._pooled[self.role] = (Reranker if self.role == "rank" else Embedder)(self.model, self.config)
        except RuntimeError as exc:
            raise ModelLoadError(str(exc)) from exc
        if mmproj is not None:
            self.vision = vision.load(self.model, mmproj, self.threads.n_threads)

    # ------------------------------------------------------------- what it holds
    @property
    def takes_images(self) -> bool:
        """Whether prompts may hold images: a projector was loaded beside the model (``mmproj``)."""
        return self.vision is not None

    @property
    def n_ctx(self) -> int:
        """The context the caller gets: the engine's (all sequences), the pooled context's, or for
        a vocabulary-only load ``n_ctx`` as asked (0: the training context)."""
        if self.engine is not None:
            return self.engine.n_ctx
        if self.role in self._pooled and not isinstance(pooled := self._pooled[self.role], ValueError):
            return pooled.n_ctx
        return int(self.config.n_ctx or self.model.n_ctx_train)

    @property
    def pooled(self) -> Embedder | Reranker | None:
        """The pooled context of an "embed" or "rank" runtime (None for "generate")."""
        got = self._pooled.get(self.role)
        return None if isinstance(got, ValueError) else got

    def chat_format(self) -> chat.ChatFormat:
        """How chats are rendered for this model (``.why`` says why), resolved on first use;
        ``ValueError`` saying why where there is no usable one (raised again on each call)."""
        if self._chat is None:
            try:
                self._chat = chat.resolve_chat_format(self.model, self.architecture, self.chat_format_name)
            except ValueError as exc:
                self._chat = exc
        if isinstance(self._chat, ValueError):
            raise self._chat
        return self._chat

    def embedder(self, pooling: str = "mean") -> Embedder:
        """A pooled embedding context beside the engine, on the same weights (created once):
        the runtime's threads and flash attention, a window of ``pooled.server_window`` tokens."""
        got = self._beside("embed", pooling)
        assert isinstance(got, Embedder)
        return got

    def reranker(self) -> Reranker:
        """The rank-pooled context beside the engine (created once); ``ValueError`` saying why
        for a model without a classifier head (said once, then answered from memory)."""
        got = self._beside("rank", "rank")
        assert isinstance(got, Reranker)
        return got

    def _beside(self, role: str, pooling: str) -> Embedder | Reranker:
        with self._pooled_lock:
            if role not in self._pooled:
                window = server_window(self.engine.n_ctx_seq if self.engine is not None else self.n_ctx)
                config = ContextConfig(n_ctx=window, n_batch=window, n_threads=self.threads.n_threads,
                                       embeddings=True, pooling=pooling_id(pooling),
                                       flash_attn=self.config.flash_attn)
                try:
                    self._pooled[role] = (Reranker if role == "rank" else Embedder)(self.model, config)
                except ValueError as exc:
                    self._pooled[role] = exc
            got = self._pooled[role]
        if isinstance(got, ValueError):
            raise ValueError(str(got))
        return got

    # ------------------------------------------------------------- the state cache
    def kv_bytes(self) -> int:
        """The engine's KV cache at most, in bytes (0: unknown for this architecture)."""
        if self.engine is None:
            return 0
        names = {v: k for k, v in KV_TYPES.items()}
        return kv_cache_bytes(self.metadata, self.engine.n_ctx, names[self.config.type_k], names[self.config.type_v])

    def start_state_cache(self, ram_mib: int | Literal["auto"] = "auto", disk_dir: str | None = None,
                          disk_mib: int = 0) -> tuple[int, str]:
        """Give the engine a state cache: ``ram_mib`` MiB of RAM ("auto": what the process's memory
        limit leaves beside the weights and KV; -1: no limit; 0: none), and ``disk_mib`` MiB in
        ``disk_dir``. Returns (RAM budget in bytes, why that budget); warnings are logged."""
        from . import state_cache
        from .memory import explain_cache_budget

        if self.engine is None:
            raise RuntimeError("only a generating runtime has a state cache")
        if ram_mib == "auto":
            budget, why = explain_cache_budget(Path(self.path).stat().st_size, self.kv_bytes())
        elif ram_mib == -1:
            budget, why = 1 << 62, "-1: no limit (the process's memory limit is not respected)"
        else:
            budget, why = int(ram_mib) << 20, f"{ram_mib} MiB, as asked"
        if budget == 0:
            return 0, why
        cache = state_cache.create(self.path, self.config.kv_layout, budget, disk_dir, disk_mib << 20)
        for warning in cache.take_warnings():
            logger.warning("%s", warning)
        self.engine.state_cache = cache
        return budget, why

    def close(self) -> None:
        """Free the engine, the pooled contexts and the model now (garbage collection does it too)."""
        self.engine = None
        self.vision = None
        self._pooled.clear()
        self.model = None
