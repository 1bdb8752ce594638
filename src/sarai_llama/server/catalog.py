"""Which models a server serves, by name: the positional model, ``--model NAME=PATH``, ``--models-dir``.

Every model is one :class:`ModelSpec`: the name clients send in ``model``, the
file, and its own :class:`~.settings.Settings` (the server's flags, with what its
``models.toml`` entry overrides). A ``models.toml`` beside the GGUFs of
``--models-dir`` names and configures them (README, "Many models behind one server")::

    [models.chat]                      # clients send "model": "chat"
    file = "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    ctx_size = 8192
    parallel = 2

    [models.embed]
    file = "nomic-embed-text-v1.5.f16.gguf"
    role = "embed"                     # a pooled context only: /v1/embeddings, no generation

A ``*.gguf`` of the directory without an entry is served under its file stem.
Each entry takes the per-model keys of :data:`PER_MODEL` (the ``serve`` flags'
names, with underscores) and ``role``; anything else is an error at start-up.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .settings import OPTIONS, Settings

__all__ = ["PER_MODEL", "ROLES", "ModelSpec", "catalog"]

#: The ``serve`` settings a model may set for itself (in ``models.toml``); the rest are the server's.
PER_MODEL = frozenset({
    "parallel", "ctx_size", "batch_size", "ubatch_size", "step_budget_ms", "spec_type", "draft_max", "draft_min",
    "spec_ngram_size_n", "cache_type_k", "cache_type_v", "flash_attn", "cache_ram", "threads", "job", "max_queue",
    "max_tokens_limit", "chat_format", "reasoning_format", "seed", "embeddings", "spm_infill", "mmproj",
})
#: What a model is loaded as: "generate" (the engine, with embeddings and rerank beside it on the same
#: weights), or a pooled context only, "embed" (embedding models) or "rank" (rerankers).
ROLES = ("generate", "embed", "rank")
Role = Literal["generate", "embed", "rank"]


@dataclass(frozen=True)
class ModelSpec:
    """One model the server may load: ``name`` (what clients send), its file and its settings."""

    name: str
    path: str
    settings: Settings  # the server's, with this model's overrides; ``model`` is ``path``, ``alias`` is ``name``
    role: Role = "generate"
    why: str = ""  # where it came from: "the command line", "--model", "models.toml", "--models-dir"

    @property
    def aliases(self) -> set[str]:
        """Every name a request may use for this model: its name, the file's name and stem."""
        return {self.name, Path(self.path).name, Path(self.path).stem}


def catalog(settings: Settings) -> dict[str, ModelSpec]:
    """Every model ``settings`` names, by name, the positional one first. ``ValueError`` for a
    ``models.toml`` that does not parse, a key it does not take, a name given twice or a file
    that does not exist (the server does not start: a typo is not a 404 at the first request)."""
    specs: dict[str, ModelSpec] = {}

    def add(spec: ModelSpec) -> None:
        if spec.name in specs:
            raise ValueError(f"the model name {spec.name!r} is given twice ({specs[spec.name].why}, {spec.why})")
        if not Path(spec.path).is_file():
            raise ValueError(f"model {spec.name!r}: no such file {spec.path} ({spec.why})")
        specs[spec.name] = spec

    if settings.model:
        add(ModelSpec(settings.model_id, settings.model, settings, why="the command line"))
    for name, path in settings.models:
        add(_spec(settings, name, path, {}, "--model"))
    if settings.models_dir:
        served = {Path(s.path).resolve() for s in specs.values()}
        for spec in _directory(settings, Path(settings.models_dir)):
            if spec.why != "--models-dir" or Path(spec.path).resolve() not in served:  # a file once, by its name
                add(spec)
    return specs


def _spec(settings: Settings, name: str, path: str, entry: dict[str, Any], why: str) -> ModelSpec:
    role = entry.pop("role", "generate")
    if role not in ROLES:
        raise ValueError(f"model {name!r} ({why}): role must be one of {', '.join(ROLES)}, not {role!r}")
    unknown = set(entry) - PER_MODEL
    if unknown:
        raise ValueError(f"model {name!r} ({why}): unknown key(s) {', '.join(sorted(unknown))}; a model may set "
                         f"file, role and {', '.join(sorted(PER_MODEL))}")
    parse = {opt.name: opt.parse for opt in OPTIONS}
    overrides: dict[str, Any] = {}
    for key, value in entry.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        try:
            overrides[key] = parse[key](text)
        except ValueError as exc:
            raise ValueError(f"model {name!r} ({why}): {key}: {exc}") from None
    # --mmproj is the positional model's projector: another model has its own (models.toml) or none.
    own = dataclasses.replace(settings, model=path, alias=name, **{"mmproj": None, **overrides})
    return ModelSpec(name, path, own, role, why)  # type: ignore[arg-type]


def _directory(settings: Settings, folder: Path) -> list[ModelSpec]:
    if not folder.is_dir():
        raise ValueError(f"--models-dir {folder}: not a directory")
    manifest = folder / "models.toml"
    entries: dict[str, Any] = {}
    if manifest.is_file():
        try:
            entries = tomllib.loads(manifest.read_text("utf-8")).get("models", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{manifest}: {exc}") from None
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise ValueError(f"{manifest}: expected [models.NAME] tables")
    out: list[ModelSpec] = []
    named: set[Path] = set()
    for name, entry in entries.items():
        entry = dict(entry)
        file = entry.pop("file", None)
        if not isinstance(file, str) or not file:
            raise ValueError(f"{manifest}: [models.{name}] needs file = \"NAME.gguf\"")
        path = (folder / file).resolve()
        named.add(path)
        if isinstance(entry.get("mmproj"), str):
            entry["mmproj"] = str((folder / entry["mmproj"]).resolve())
        out.append(_spec(settings, name, str(path), entry, str(manifest)))
    for path in sorted(folder.glob("*.gguf")):
        if path.resolve() not in named and not path.name.endswith("-mmproj.gguf"):
            out.append(_spec(settings, path.stem, str(path), {}, "--models-dir"))
    return out
