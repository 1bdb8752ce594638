"""``sarai-llama serve``: an OpenAI- and Anthropic-compatible HTTP server on the engine (needs the ``[server]`` extra).

``settings`` (flags = ``SARAI_*`` variables), ``scheduler`` (the one thread that
steps the engine, bounded admission), ``lifecycle`` (load, drain, shared state),
``gate`` (auth, body limit, access log), ``errors`` (and each protocol's error
shape), ``requests`` (protocol-neutral parts -> engine request), ``runs``
(admitted requests), ``sse`` (the stream writer), ``blocks`` (an answer's blocks),
one module pair per protocol (``openai_routes`` + ``openai_schemas``,
``responses_routes`` + ``responses_schemas``, ``anthropic_routes`` +
``anthropic_schemas``), ``embeddings``, ``llama_extras``, ``metrics``
(Prometheus), and ``app``, which wires them and runs uvicorn.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the serve options and run the server; the process's exit code."""
    from .settings import parse

    settings = parse(argv)
    try:
        from .app import serve
    except ImportError as exc:
        raise SystemExit(f"sarai-llama serve needs the server extra: pip install 'sarai-llama[server]' ({exc})")
    return serve(settings)
