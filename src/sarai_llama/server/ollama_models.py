"""The served models as Ollama describes models: ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/version``.

Everything comes from the GGUF itself (its metadata, the file's size, time and
SHA-256, computed once, in a thread, on first use) and from what this server
found about the model (its chat template's tool-call syntax, its FIM tokens).
``/api/tags`` lists every model the server may load, ``/api/ps`` the loaded ones
with when their ``keep_alive`` ends. Ollama's names carry a tag (``name:latest``);
a model answers to its name with or without ``:latest`` (:func:`find`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import time
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from .. import fim
from .errors import APIError, bad
from .lifecycle import ServerState
from .pool import parse_keep_alive
from .served import Served
from .ollama_schemas import VERSION, ModelBody, metadata_value, parameter_size, quantization

__all__ = ["Description", "Descriptions", "find", "router"]

#: Where a template shows that the model thinks before it answers.
THINKING_MARKS = ("<think>", "enable_thinking", "reasoning_content", "<|channel|>")
#: ``/api/ps``'s ``expires_at`` for a model kept loaded as long as the server runs.
NEVER = "2318-01-01T00:00:00Z"


async def find(state: ServerState, name: str | None, http: HTTPRequest | None = None,
               keep_alive: Any = None) -> Served:
    """The model a request names (empty: the default one), loaded and pinned for the request, as
    :meth:`ServerState.acquire`; Ollama's ``model 'x' not found`` for an unknown name, a 400 for a
    ``keep_alive`` that is not a duration."""
    try:
        ka = "default" if keep_alive is None else parse_keep_alive(keep_alive)
    except ValueError as exc:
        raise bad(str(exc), "keep_alive") from None
    try:
        served = state.pool.find(name)
    except APIError as exc:
        if exc.status != 404:
            raise
        raise APIError(404, f"model '{name}' not found", "not_found_error", param="model",
                       code="model_not_found") from None
    return await state.acquire(served.name, http, ka)


class Description:
    """A served model's Ollama description (its file's digest is read once per process)."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self._digest: str | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        model_id = self.served.name
        return model_id if ":" in model_id else model_id + ":latest"

    def digest(self) -> str:
        """The file's SHA-256 (hex), read once (call it in a worker thread)."""
        with self._lock:
            if self._digest is None:
                h = hashlib.sha256()
                with open(self.served.spec.path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                self._digest = h.hexdigest()
            return self._digest

    def metadata(self) -> dict[str, str]:
        """The GGUF's metadata as text: llama.cpp's once loaded, else the header's (arrays left out)."""
        if self.served.model is not None:
            return dict(self.served.model.metadata())
        out: dict[str, str] = {}
        for key, value in self.served.file_facts().items():
            if value is None or key.startswith("__"):
                continue
            out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else \
                str(value).lower() if isinstance(value, bool) else str(value)
        return out

    def details(self) -> dict[str, Any]:
        meta = self.metadata()
        arch = meta.get("general.architecture", "")
        model = self.served.model
        size = parameter_size(int(model.n_params)) if model is not None else meta.get("general.size_label", "")
        return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch] if arch else None,
                "parameter_size": size, "quantization_level": quantization(meta.get("general.file_type"))}

    def file_facts(self) -> dict[str, Any]:
        path = self.served.spec.path
        stat = os.stat(path)
        modified = dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).isoformat()
        return {"size": stat.st_size, "modified_at": modified}

    async def entry(self) -> dict[str, Any]:
        """One model of ``/api/tags``."""
        digest = await run_in_threadpool(self.digest)
        return {"name": self.name, "model": self.name, **self.file_facts(), "digest": digest,
                "details": self.details()}

    def model_info(self) -> dict[str, Any]:
        """The GGUF's metadata, typed as Ollama shows it; ``<arch>.context_length`` is the context a
        request gets here (``--ctx-size`` / ``--parallel``), which clients (Zed, Continue) send back
        as ``num_ctx``: the file's training context may be more than this server holds."""
        info = {k: metadata_value(v) for k, v in self.metadata().items() if not k.startswith("tokenizer.chat_template")}
        arch = info.get("general.architecture") or "llama"
        info[f"{arch}.context_length"] = self.served.n_ctx_seq
        info.setdefault("general.parameter_count", int(self.served.model.n_params))
        return info

    def template_source(self) -> str:
        return str(getattr(self.served.template, "source", "") or "")

    def capabilities(self) -> list[str]:
        """What the model can do here, each only where it holds: tools where the chat template has a
        tool-call syntax, insert where the vocabulary has FIM tokens, thinking where the template
        thinks, embedding for an embedding model (a pooling type in its metadata) served with
        ``--embeddings``, vision where a projector is loaded beside it (``--mmproj``)."""
        caps = ["completion"]
        template = self.served.template
        source = self.template_source()
        if template is not None and hasattr(template, "capabilities") and template.capabilities.get(
                "supports_tool_calls"):
            caps.append("tools")
        if not fim.missing_fim_tokens(self.served.model):
            caps.append("insert")
        if any(mark in source for mark in THINKING_MARKS):
            caps.append("thinking")
        arch = self.metadata().get("general.architecture", "")
        if self.served.role == "embed" or (self.served.settings.embeddings and f"{arch}.pooling_type" in self.metadata()):
            caps.append("embedding")
        if self.served.runtime is not None and self.served.runtime.takes_images:
            caps.append("vision")
        return caps

    def parameters(self) -> str:
        """Ollama's ``parameters`` text (one ``key value`` per line): the context a request gets."""
        return f"num_ctx {self.served.n_ctx_seq}"

    async def show(self) -> dict[str, Any]:
        source = self.template_source()
        meta = self.metadata()
        return {"license": meta.get("general.license", ""), "modelfile": f"FROM {self.served.spec.path}\n",
                "parameters": self.parameters(), "template": source, "details": self.details(),
                "model_info": self.model_info(), "capabilities": self.capabilities(),
                "modified_at": self.file_facts()["modified_at"]}


class Descriptions:
    """Every served model's :class:`Description`, made on first use."""

    def __init__(self) -> None:
        self._made: dict[str, Description] = {}

    def of(self, served: Served) -> Description:
        if served.name not in self._made:
            self._made[served.name] = Description(served)
        return self._made[served.name]


def router(state: ServerState, about: Descriptions) -> APIRouter:
    """The routes, bound to ``state``."""
    api = APIRouter()

    @api.api_route("/", methods=["GET", "HEAD"])
    async def running() -> PlainTextResponse:
        return PlainTextResponse("Ollama is running")

    @api.api_route("/api/version", methods=["GET", "HEAD"])
    async def version() -> JSONResponse:
        return JSONResponse({"version": VERSION})

    @api.get("/api/tags")
    async def tags() -> JSONResponse:
        """Every model this server may load (loaded or not)."""
        if state.default is not None:
            state.require_ready()
        return JSONResponse({"models": [await about.of(s).entry() for s in state.pool.models.values()]})

    @api.get("/api/ps")
    async def ps() -> JSONResponse:
        """The loaded models, with when their keep_alive ends (never: Ollama's far-future date)."""
        if state.default is not None:
            state.require_ready()
        out = []
        for served in state.pool.loaded():
            entry = await about.of(served).entry()
            entry.pop("modified_at")
            ka = served.keep_alive
            expires = NEVER if ka is None else dt.datetime.fromtimestamp(
                time.time() + max(0.0, ka - (time.monotonic() - served.last_used)), dt.timezone.utc).isoformat()
            out.append({**entry, "size": served.cost, "expires_at": expires, "size_vram": 0,
                        "context_length": served.n_ctx_seq})
        return JSONResponse({"models": out})

    @api.post("/api/show")
    async def show(body: ModelBody, http: HTTPRequest) -> JSONResponse:
        served = await find(state, body.model_name, http)
        return JSONResponse(await about.of(served).show())

    return api
