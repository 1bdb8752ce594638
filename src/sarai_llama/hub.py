"""``Llama.from_pretrained``: a GGUF file from the Hugging Face Hub (needs ``huggingface_hub``)."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, TypeVar

from .errors import ModelLoadError

__all__ = ["download", "from_pretrained"]

_T = TypeVar("_T")


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError("Llama.from_pretrained needs huggingface_hub: pip install huggingface_hub "
                          "(or download the .gguf yourself and pass its path to Llama)") from exc
    return huggingface_hub


def _match(files: list[str], pattern: str, repo_id: str) -> str:
    found = [f for f in files if fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(Path(f).name, pattern)]
    if not found:
        raise ValueError(f"no file in {repo_id} matches {pattern!r}; its GGUF files: "
                         + ", ".join(f for f in files if f.endswith(".gguf")))
    if len(found) > 1:
        raise ValueError(f"{pattern!r} matches {len(found)} files in {repo_id}: {', '.join(found)}; name one")
    return found[0]


def download(repo_id: str, filename: str, additional_files: list[str] | None = None,
             local_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Path of ``filename`` (a name or glob pattern) from ``repo_id``, downloaded or from the
    Hub cache; ``additional_files`` (patterns) come along, for split GGUF files.

    Without a network, a file already in the cache is used when ``filename`` is an
    exact name; otherwise ``ModelLoadError`` says why.
    """
    hub = _hub()
    exact = not any(c in filename for c in "*?[")
    try:
        files = [str(f) for f in hub.HfApi().list_repo_files(repo_id)]
    except Exception as exc:  # network, auth, or an unknown repo: the hub raises many types
        if not exact:
            raise ModelLoadError(f"cannot list the files of {repo_id} on the Hugging Face Hub ({exc}); "
                                 "offline, pass an exact filename that is in the Hub cache") from exc
        files = [filename]
    names = [_match(files, filename, repo_id)] + [_match(files, p, repo_id) for p in additional_files or []]
    paths = []
    for name in names:
        try:
            paths.append(hub.hf_hub_download(repo_id, name, local_dir=local_dir, cache_dir=cache_dir))
        except Exception as exc:
            raise ModelLoadError(f"cannot download {name} from {repo_id} ({type(exc).__name__}: {exc}); "
                                 "without a network only files already in the Hub cache load") from exc
    return str(paths[0])


def from_pretrained(cls: type[_T], repo_id: str, filename: str, additional_files: list[str] | None = None,
                    local_dir: str | os.PathLike[str] | None = None, local_dir_use_symlinks: Any = "auto",
                    cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> _T:
    """A ``Llama`` (``cls``) on ``filename`` (a name or glob pattern) of a Hugging Face Hub
    repository, downloaded with ``huggingface_hub`` (or taken from its cache, see
    :func:`download`); ``kwargs`` go to ``Llama``. ``local_dir_use_symlinks`` is accepted
    and ignored (the Hub client decides)."""
    return cls(download(repo_id, filename, additional_files, local_dir, cache_dir), **kwargs)  # type: ignore[call-arg]
