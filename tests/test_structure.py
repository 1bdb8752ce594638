"""The package's shape: no import circles, no module that outgrew its concept.

Checked on the source (``src/sarai_llama``), every import counted, also those inside
functions: a circle hidden in a function is still two modules that need each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "sarai_llama"


def module_names() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (a package's ``__init__`` is not counted:
    Python runs it before any of its modules anyway)."""
    mods = module_names()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    full = ".".join(base) + (f".{node.module}" if node.module else "")
                else:
                    full = node.module or ""
                deps.update(m for m in [full, *(f"{full}.{a.name}" for a in node.names)] if m in mods)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[name] = {d for d in deps if d != name and mods[d].name != "__init__.py"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    graph = import_graph()
    assert "sarai_llama.llama" in graph and "sarai_llama.logits" in graph["sarai_llama.llama"]
    assert cycles(graph) == []


@pytest.mark.parametrize("module, most", [("llama.py", 400), *((f"server/{p.name}", 350)
                                           for p in sorted((SRC / "server").glob("*.py")))])
def test_modules_stay_small(module: str, most: int) -> None:
    lines = len((SRC / module).read_text().splitlines())
    assert lines <= most, f"{module} has {lines} lines (at most {most}): split it by concept"


ROOT = SRC.parent.parent


def test_no_module_outgrew_its_concept() -> None:
    """The package's and the tools' Python modules stay within 400 lines, the C++ files within 600."""
    big = [f"{p.relative_to(ROOT)}: {n}" for pattern, most in (("src/sarai_llama/**/*.py", 400), ("tools/*.py", 400),
                                                            ("src/_core/*.[ch]*", 600))
           for p in sorted(ROOT.glob(pattern)) if (n := len(p.read_text().splitlines())) > most]
    assert big == [], f"split these by concept: {big}"


def test_llama_is_a_thin_face() -> None:
    """``class Llama`` stays within 300 lines: what it does lives in the parts it holds (issue 32)."""
    tree = ast.parse((SRC / "llama.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Llama"]
    assert cls.end_lineno is not None and cls.end_lineno - cls.lineno + 1 <= 300
    assert cls.bases == [], "Llama holds its parts; it inherits none"


#: The engine layer: what runs a model, in no protocol's shape.
ENGINE_LAYER = ("engine", "engine_io", "sequence", "runtime", "context_config", "sampling", "stops", "inline", "pooled",
                "embedding", "rerank", "state_cache", "loading", "threads", "tune_store")
#: The protocol modules: OpenAI's, Anthropic's and Ollama's shapes, and the server's routes.
PROTOCOLS = ("responses", "llama_types", "text_completion", "chat_completion", "server")


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.mark.parametrize("module", ENGINE_LAYER)
def test_the_engine_layer_imports_no_protocol(module: str) -> None:
    """Directly or through another module: the engine speaks no protocol (issue 32)."""
    graph = import_graph()
    name = f"sarai_llama.{module}"
    assert name in graph
    bad = sorted(d for d in reachable(graph, name)
                 if any(d == f"sarai_llama.{p}" or d.startswith(f"sarai_llama.{p}.") for p in PROTOCOLS))
    assert bad == [], f"{module} reaches protocol modules: {bad}"
