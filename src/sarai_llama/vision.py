"""The projector beside a model: images in prompts, through llama.cpp's mtmd (``_core.Vision``).

:func:`load` opens an mmproj GGUF for a loaded text model (``Runtime(mmproj=...)``,
``Llama(mmproj=...)``, ``serve --mmproj``); :func:`media_prompt` turns a rendered
prompt holding the projector's markers and the images' bytes (:func:`images.take
<sarai_llama.images.take>`) into the engine's tokens and encoded images, and
:func:`attach` puts them on a request. Encoding happens there, on the caller's thread;
the engine only decodes the embeddings, under its step budget. An image's
positions hold placeholders derived from the SHA-256 of its bytes, so prefix reuse
and the state cache serve a later turn about the same image without decoding it
again, and the projector's cache of encodings (128 MiB) spares its encoder run.

llama-cpp-python's multimodal chat handlers are here by name (:class:`MTMDChatHandler`
and its family classes): ``Llama(model, chat_handler=Llava15ChatHandler(clip_model_path=...))``
loads that projector. The chat itself is rendered by the GGUF's own template, not by a
handler's hard-coded one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _core, images
from .engine_io import Request
from .errors import ParameterError, utf8

__all__ = ["Gemma3ChatHandler", "Llava15ChatHandler", "Llava16ChatHandler", "MTMDChatHandler",
           "NanoLlavaChatHandler", "NO_PROJECTOR", "attach", "chat_images", "load", "media_prompt",
           "projector_path"]

#: The error for an image sent to a model without a projector (the server adds its flag).
NO_PROJECTOR = "this model takes no images: it was loaded without a projector (mmproj GGUF)"


class MTMDChatHandler:
    """llama-cpp-python's generic multimodal handler: ``clip_model_path`` is the projector GGUF.

    ``Llama(model, chat_handler=MTMDChatHandler(clip_model_path=path))`` is
    ``Llama(model, mmproj=path)``; other keywords (``verbose``, ``image_min_tokens``, ...)
    are accepted and have no effect.
    """

    def __init__(self, clip_model_path: str | os.PathLike[str], verbose: bool = True, **kwargs: Any) -> None:
        self.clip_model_path = os.fspath(clip_model_path)
        self.verbose = verbose


class Llava15ChatHandler(MTMDChatHandler):
    """llama-cpp-python's LLaVA 1.5 handler: its projector, the GGUF's own chat template."""


class Llava16ChatHandler(MTMDChatHandler):
    """llama-cpp-python's LLaVA 1.6 handler: its projector, the GGUF's own chat template."""


class NanoLlavaChatHandler(MTMDChatHandler):
    """llama-cpp-python's nanoLLaVA handler: its projector, the GGUF's own chat template."""


class Gemma3ChatHandler(MTMDChatHandler):
    """llama-cpp-python's Gemma 3 handler: its projector, the GGUF's own chat template."""


def projector_path(mmproj: str | os.PathLike[str] | None, chat_handler: Any) -> str | None:
    """The projector a ``Llama`` loads: ``mmproj``, or a multimodal ``chat_handler``'s ``clip_model_path``."""
    from_handler = getattr(chat_handler, "clip_model_path", None) if chat_handler is not None else None
    if chat_handler is not None and from_handler is None:
        raise ParameterError("chat_handler: only multimodal handlers (with a clip_model_path) are taken; "
                             "chats use the GGUF's template or chat_format=", "chat_handler")
    if mmproj is not None and from_handler is not None and os.fspath(mmproj) != from_handler:
        raise ParameterError("mmproj and chat_handler name different projectors", "mmproj")
    got = mmproj if mmproj is not None else from_handler
    return None if got is None else os.fspath(got)


def load(model: Any, path: str | os.PathLike[str], n_threads: int) -> _core.Vision:
    """The projector at ``path`` for ``model`` (``FileNotFoundError``; ``ValueError`` with mtmd's
    reason for a file that is not a projector of this model's width, or one of a kind not decoded).
    It loads in this process: :func:`~sarai_llama.loading.load_model` (``mmproj=``) probes the file first."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"projector file not found: {path}")
    return _core.Vision(model, os.fspath(path), n_threads)


def chat_images(vision: _core.Vision | None, messages: Sequence[Mapping[str, Any]], *, files: bool = False,
                no_projector: str = NO_PROJECTOR, param: str = "messages") -> tuple[list[dict[str, Any]], list[bytes]]:
    """``messages`` with their images replaced by the projector's marker, and the images' bytes;
    ParameterError (``no_projector``) for an image and no projector."""
    if vision is None:
        if (at := images.first_image(messages)) is not None:
            raise ParameterError(no_projector, f"{param}[{at[0]}].content[{at[1]}]")
        return list(messages), []  # type: ignore[arg-type]
    return images.take(messages, vision.marker, files=files, param=param)


def media_prompt(vision: _core.Vision, model: Any, prompt: str, pictures: Sequence[bytes],
                 param: str = "messages") -> _core.MediaPrompt:
    """The rendered ``prompt`` (one marker per picture) as tokens and encoded images (BOS
    first where the model wants it); ParameterError with the reason for a bad image."""
    text = utf8(prompt, param)
    try:
        return vision.tokenize(text, list(pictures), bool(model.add_bos), True)
    except ValueError as exc:
        raise ParameterError(str(exc), param) from None


def attach(request: Request, vision: _core.Vision, model: Any, prompt: str, pictures: Sequence[bytes]) -> Request:
    """``request`` with the prompt's tokens and images from :func:`media_prompt`."""
    got = media_prompt(vision, model, prompt, pictures)
    request.prompt, request.media = list(got.tokens), list(got.media)
    return request
