"""Images in chat messages, in no protocol's shape: their bytes, and the messages with a marker in their place.

Every protocol's route turns its image blocks into OpenAI ``image_url`` content parts
(Anthropic's base64 ``image`` blocks and Ollama's ``images`` through :func:`data_uri`,
Responses' ``input_image`` as it is); :func:`take` then reads each part's bytes and
puts the projector's media marker where it was, so the chat template renders the
marker and :func:`~sarai_llama.vision.media_prompt` puts the image there. Bytes are
decoded by llama.cpp's mtmd (stb_image), never here: no imaging library is imported.

Accepted image URLs: ``data:`` URIs (base64 or percent-encoded) and, where the caller
allows local files (``Llama``, never the server), ``file://`` paths. A remote URL is a
``ValueError``: nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ParameterError

__all__ = ["MAX_IMAGE_BYTES", "anthropic_part", "data_uri", "first_image", "image_part", "read_url", "take"]

#: The largest image accepted, in bytes: OpenAI's limit for one image (20 MB).
MAX_IMAGE_BYTES = 20 * 1000 * 1000

_IMAGE_PARTS = ("image_url", "input_image")
_AUDIO_PARTS = ("input_audio", "audio_url")


def data_uri(data: str, media_type: str | None) -> str:
    """A base64 payload (Anthropic's ``source.data``, Ollama's ``images``) as a ``data:`` URI."""
    return f"data:{media_type or 'application/octet-stream'};base64,{data}"


def image_part(url: str) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part (what every route turns its image blocks into)."""
    return {"type": "image_url", "image_url": {"url": url}}


def anthropic_part(block: Mapping[str, Any], param: str) -> dict[str, Any]:
    """An Anthropic ``image`` block (``source``: ``base64`` with ``media_type`` and ``data``) as an OpenAI
    part; a ``url`` source is refused as every remote URL is (ParameterError)."""
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise ParameterError("an image block needs a source", param)
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return image_part(data_uri(source["data"], str(source.get("media_type") or "")))
    if source.get("type") == "url":
        return image_part(str(source.get("url", "")))  # read_url says why it is not fetched
    raise ParameterError("an image block's source must be {\"type\": \"base64\", \"media_type\": ..., "
                         "\"data\": ...}", param)


def _checked(raw: bytes, param: str) -> bytes:
    if not raw:
        raise ParameterError("the image is empty", param)
    if len(raw) > MAX_IMAGE_BYTES:
        raise ParameterError(f"the image has {len(raw)} bytes; at most {MAX_IMAGE_BYTES} are taken", param)
    return raw


def read_url(url: str, param: str, *, files: bool = False) -> bytes:
    """An image URL's bytes: a ``data:`` URI, or a ``file://`` path when ``files`` (ParameterError otherwise)."""
    if not isinstance(url, str):
        raise ParameterError("the image URL must be a string", param)
    if url.startswith("data:"):
        head, sep, payload = url[5:].partition(",")
        if not sep:
            raise ParameterError("a data: URI needs a ',' before its payload", param)
        if head.endswith(";base64"):
            # Base64 in JSON may carry line breaks (MIME's 76-column lines); anything else is refused.
            try:
                raw = base64.b64decode("".join(payload.split()), validate=True)
            except (binascii.Error, ValueError):
                raise ParameterError("the data: URI's base64 payload does not decode", param) from None
        else:
            raw = urllib.parse.unquote_to_bytes(payload)
        return _checked(raw, param)
    if url.startswith("file://"):
        if not files:
            raise ParameterError("file:// image URLs are read by Llama only; send the image as a data: URI", param)
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        try:
            if path.stat().st_size > MAX_IMAGE_BYTES:
                raise ParameterError(f"{path} has more than {MAX_IMAGE_BYTES} bytes", param)
            return _checked(path.read_bytes(), param)
        except OSError as exc:
            raise ParameterError(f"cannot read the image {path}: {exc.strerror or exc}", param) from None
    scheme = url.split(":", 1)[0] if ":" in url else url[:16]
    raise ParameterError(f"image URLs of scheme {scheme!r} are not fetched (no network access): send the image "
                         "as a data: URI" + (" or a file:// path" if files else ""), param)


def _part_url(part: Mapping[str, Any], param: str) -> str:
    url = part.get("image_url")
    if isinstance(url, Mapping):  # chat: {"image_url": {"url": ..., "detail": ...}}
        url = url.get("url")
    if url is None and part.get("type") == "input_image" and part.get("file_id") is not None:
        raise ParameterError("input_image file_id needs stored files, which this server does not keep; "
                             "send image_url as a data: URI", param)
    if not isinstance(url, str):
        raise ParameterError("an image part needs image_url (a data: URI)", param)
    return url


def first_image(messages: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
    """(message, part) of the first image part, None when the messages hold none."""
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, Mapping) else None
        for j, p in enumerate(content if isinstance(content, list) else []):
            if isinstance(p, Mapping) and p.get("type") in _IMAGE_PARTS:
                return i, j
    return None


def take(messages: Sequence[Mapping[str, Any]], marker: str, *, files: bool = False,
         param: str = "messages") -> tuple[list[dict[str, Any]], list[bytes]]:
    """``messages`` with every image part replaced by a text part holding ``marker``, and the
    images' bytes in prompt order. Audio parts are refused (ParameterError): no projector of
    this build's models takes audio yet."""
    out: list[dict[str, Any]] = []
    images: list[bytes] = []
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if not isinstance(content, list):
            out.append(dict(msg) if isinstance(msg, Mapping) else msg)
            continue
        parts: list[Any] = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            where = f"{param}[{i}].content[{j}]"
            if kind in _IMAGE_PARTS:
                images.append(read_url(_part_url(part, where), where, files=files))
                parts.append({"type": "text", "text": marker})
            elif kind in _AUDIO_PARTS:
                raise ParameterError("audio input is not supported: only images reach the projector", where)
            else:
                parts.append(part)
        out.append({**msg, "content": parts})
    return out, images
