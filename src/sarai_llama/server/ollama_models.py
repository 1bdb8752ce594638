"""The served model as Ollama describes models: ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/version``.

Everything comes from the GGUF itself (its metadata, the file's size, time and
SHA-256, computed once, in a thread, on first use) and from what this server
found about the model (its chat template's tool-call syntax, its FIM tokens).
Ollama's names carry a tag (``name:latest``); the served model answers to its
id with or without ``:latest`` (:func:`check_name`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from .. import fim
from .errors import APIError
from .lifecycle import ServerState
from .ollama_schemas import VERSION, ModelBody, metadata_value, parameter_size, quantization

__all__ = ["Description", "check_name", "router"]

#: Where a template shows that the model thinks before it answers.
THINKING_MARKS = ("<think>", "enable_thinking", "reasoning_content", "<|channel|>")
#: ``/api/ps``'s ``expires_at``: the model stays loaded as long as the server runs.
NEVER = "2318-01-01T00:00:00Z"


def check_name(state: ServerState, name: str | None) -> None:
    """404 ``model 'x' not found`` unless ``name`` (empty, or with a ``:latest`` tag) is the served model."""
    if not name:
        return
    try:
        state.check_model(name.removesuffix(":latest"))
    except APIError:
        raise APIError(404, f"model '{name}' not found", "not_found_error", param="model",
                       code="model_not_found") from None


class Description:
    """The served model's Ollama description, built once per process."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._digest: str | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        model_id = self.state.settings.model_id
        return model_id if ":" in model_id else model_id + ":latest"

    def digest(self) -> str:
        """The file's SHA-256 (hex), read once (call it in a worker thread)."""
        with self._lock:
            if self._digest is None:
                h = hashlib.sha256()
                with open(self.state.settings.model, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                self._digest = h.hexdigest()
            return self._digest

    def metadata(self) -> dict[str, str]:
        return dict(self.state.model.metadata())

    def details(self) -> dict[str, Any]:
        meta = self.metadata()
        arch = meta.get("general.architecture", "")
        return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch] if arch else None,
                "parameter_size": parameter_size(int(self.state.model.n_params)),
                "quantization_level": quantization(meta.get("general.file_type"))}

    def file_facts(self) -> dict[str, Any]:
        path = self.state.settings.model
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
        info[f"{arch}.context_length"] = self.state.n_ctx_seq
        info.setdefault("general.parameter_count", int(self.state.model.n_params))
        return info

    def template_source(self) -> str:
        return str(getattr(self.state.template, "source", "") or "")

    def capabilities(self) -> list[str]:
        """What the model can do here, each only where it holds: tools where the chat template has a
        tool-call syntax, insert where the vocabulary has FIM tokens, thinking where the template
        thinks, embedding for an embedding model (a pooling type in its metadata) served with
        ``--embeddings``. No vision: this server takes no images."""
        caps = ["completion"]
        template = self.state.template
        source = self.template_source()
        if template is not None and hasattr(template, "capabilities") and template.capabilities.get(
                "supports_tool_calls"):
            caps.append("tools")
        if not fim.missing_fim_tokens(self.state.model):
            caps.append("insert")
        if any(mark in source for mark in THINKING_MARKS):
            caps.append("thinking")
        arch = self.metadata().get("general.architecture", "")
        if self.state.settings.embeddings and f"{arch}.pooling_type" in self.metadata():
            caps.append("embedding")
        return caps

    def parameters(self) -> str:
        """Ollama's ``parameters`` text (one ``key value`` per line): the context a request gets."""
        return f"num_ctx {self.state.n_ctx_seq}"

    async def show(self) -> dict[str, Any]:
        source = self.template_source()
        meta = self.metadata()
        return {"license": meta.get("general.license", ""), "modelfile": f"FROM {self.state.settings.model}\n",
                "parameters": self.parameters(), "template": source, "details": self.details(),
                "model_info": self.model_info(), "capabilities": self.capabilities(),
                "modified_at": self.file_facts()["modified_at"]}


def router(state: ServerState, about: Description) -> APIRouter:
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
        state.require_ready()
        return JSONResponse({"models": [await about.entry()]})

    @api.get("/api/ps")
    async def ps() -> JSONResponse:
        state.require_ready()
        entry = await about.entry()
        entry.pop("modified_at")
        return JSONResponse({"models": [{**entry, "expires_at": NEVER, "size_vram": 0,
                                         "context_length": state.n_ctx_seq}]})

    @api.post("/api/show")
    async def show(body: ModelBody) -> JSONResponse:
        state.require_ready()
        check_name(state, body.model_name)
        return JSONResponse(await about.show())

    return api
