"""Opt-in alias: ``import llama_cpp`` gives sarai_llama's high-level API in this interpreter.

For code and frameworks that import llama-cpp-python by name (LangChain's
``LlamaCpp``, LlamaIndex's ``LlamaCPP``)::

    import sarai_llama.compat
    sarai_llama.compat.install()
    import llama_cpp            # sarai_llama underneath

Never installed by default. :func:`install` refuses when a real
llama-cpp-python can be imported, so it never shadows one. The modules and
names covered are :data:`COVERED`; llama-cpp-python's ctypes low-level API
(``llama_cpp.llama_cpp``, ``llama_cpp._internals``: ``llama_decode`` and
friends), its Python Jinja chat formatters (``llama_chat_format``), LLaVA and
its server are not: importing them raises ``ModuleNotFoundError`` as for any
missing module.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

__all__ = ["COVERED", "install", "installed", "uninstall"]

_MARK = "__sarai_llama_alias__"

#: module name -> (sarai_llama module, names). Each alias module holds these names only.
COVERED: dict[str, tuple[str, list[str]]] = {
    "llama_cpp.llama": ("sarai_llama", [
        "Llama", "LlamaState", "LLAMA_DEFAULT_SEED", "LogitsProcessor", "LogitsProcessorList",
        "StoppingCriteria", "StoppingCriteriaList", "MinTokensLogitsProcessor",
        "LlamaCache", "LlamaRAMCache", "LlamaDiskCache", "BaseLlamaCache", "LlamaTokenizer", "BaseLlamaTokenizer",
        "LlamaGrammar",
    ]),
    "llama_cpp.llama_types": ("sarai_llama.llama_types", []),  # filled from its __all__
    "llama_cpp.llama_grammar": ("sarai_llama.grammar", ["LlamaGrammar"]),
    "llama_cpp.llama_cache": ("sarai_llama.llama_cache", [
        "BaseLlamaCache", "LlamaCache", "LlamaRAMCache", "LlamaDiskCache"]),
    "llama_cpp.llama_tokenizer": ("sarai_llama.llama_tokenizer", ["BaseLlamaTokenizer", "LlamaTokenizer"]),
    "llama_cpp.llama_speculative": ("sarai_llama.llama_speculative", ["LlamaDraftModel", "LlamaPromptLookupDecoding"]),
}


def _real_llama_cpp() -> str | None:
    """Where an importable llama-cpp-python lives, if any (ours does not count)."""
    present = sys.modules.get("llama_cpp")
    if present is not None:
        return None if getattr(present, _MARK, False) else str(getattr(present, "__file__", "llama_cpp"))
    spec = importlib.util.find_spec("llama_cpp")
    return None if spec is None else str(spec.origin or spec.submodule_search_locations or "llama_cpp")


def installed() -> bool:
    """True when ``llama_cpp`` in this interpreter is this alias."""
    return bool(getattr(sys.modules.get("llama_cpp"), _MARK, False))


def _module(name: str, doc: str) -> types.ModuleType:
    mod = types.ModuleType(name, doc)
    setattr(mod, _MARK, True)
    # A spec, so importlib (find_spec, reload checks) treats it as a regular loaded module.
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=name == "llama_cpp")
    return mod


def install() -> list[str]:
    """Register ``llama_cpp`` and its submodules (:data:`COVERED`) as sarai_llama's; returns
    their names. Idempotent. ``RuntimeError`` when a real llama-cpp-python is importable."""
    if installed():
        return ["llama_cpp", *COVERED]
    real = _real_llama_cpp()
    if real is not None:
        raise RuntimeError(f"llama-cpp-python is importable here ({real}); sarai_llama.compat does not shadow it. "
                           "Use `import sarai_llama` directly, or run where llama-cpp-python is not installed.")
    import sarai_llama

    top = _module("llama_cpp", "sarai_llama under llama-cpp-python's name (sarai_llama.compat.install()).")
    top.__path__ = []  # a package: its submodules are the entries below
    top.__version__ = sarai_llama.__version__
    built = {}
    for name, (source, names) in COVERED.items():
        src = importlib.import_module(source)
        mod = _module(name, f"{source} under llama-cpp-python's name {name}.")
        for attr in names or list(src.__all__):
            setattr(mod, attr, getattr(src, attr))
        mod.__all__ = list(names or src.__all__)
        built[name] = mod
        setattr(top, name.rsplit(".", 1)[1], mod)
    # llama_cpp's top level re-exports llama.py's names and, through it, llama_types'.
    exported = built["llama_cpp.llama"].__all__ + built["llama_cpp.llama_types"].__all__
    for attr in exported:
        setattr(top, attr, getattr(built["llama_cpp.llama"], attr, None) or getattr(built["llama_cpp.llama_types"], attr))
    top.__all__ = list(dict.fromkeys(exported))
    sys.modules["llama_cpp"] = top
    sys.modules.update(built)
    return ["llama_cpp", *built]


def uninstall() -> None:
    """Remove the alias modules again (a real llama-cpp-python is never touched)."""
    for name in ["llama_cpp", *COVERED]:
        if getattr(sys.modules.get(name), _MARK, False):
            del sys.modules[name]
