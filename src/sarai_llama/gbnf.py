"""GBNF text, edited: the grammars llama.cpp's chat code writes, narrowed or joined.

llama.cpp's grammar syntax (``src/llama-grammar.cpp``): rules ``name ::= body``,
names of letters, digits and ``-``; in a body, ``"strings"``, ``[classes]``,
``<tokens>``, ``{m,n}`` repetitions and ``# comments`` hold no rule names.
"""

from __future__ import annotations

import json
import re

__all__ = ["call_or", "calls_only", "prefixed"]


#: The free-text rule llama.cpp's grammars put before (and after) a family's tool calls.
_FREE_TEXT = re.compile(r"until-\d+[?*]?")


def _top_level_items(body: str) -> list[str]:
    """A GBNF rule body split at the spaces outside strings, character classes and groups."""
    items, cur, depth, i = [], "", 0, 0
    while i < len(body):
        c = body[i]
        if c in "\"[":  # a string or a class, with its backslash escapes
            close = "\"" if c == "\"" else "]"
            j = i + 1
            while j < len(body) and body[j] != close:
                j += 2 if body[j] == "\\" else 1
            cur += body[i:j + 1]
            i = j + 1
            continue
        depth += (c == "(") - (c == ")")
        if c.isspace() and depth == 0:
            if cur:
                items.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return items + ([cur] if cur else [])


def _literal(item: str) -> str | None:
    """The text of a plain GBNF string item (``"..."``, no repetition suffix), else None."""
    if len(item) < 2 or item[0] != '"' or item[-1] != '"':
        return None
    try:
        return json.loads(item)  # GBNF's escapes in generated grammars (\n, \", \\, \t, \uXXXX) are JSON's
    except ValueError:
        return None


#: A rule that repeats a call: ``tool-calls ::= (tool-call space)+``.
_REPEATED_CALL = re.compile(r"(?P<name>[\w-]+) ::= \((?P<call>[\w-]+) space\)\+")


def calls_only(grammar: str, generation_prompt: str = "", parallel: bool = False) -> str:
    """``grammar`` with the free text before and after the tool calls taken out of its root rule.

    llama.cpp's grammar for ``tool_choice="required"`` lets the model write any text
    (an ``until-N`` rule) up to the family's call marker, so a model that never writes
    the marker never calls. OpenAI's contract for "required" and a named function is
    a call, always: with this root the answer starts at the call (after the generation
    prompt and whitespace), whatever the weights. Free text inside a group (a thinking
    block) is kept, and so is the whole grammar when the generation prompt goes on past
    the root's leading text (a template that opens a reasoning block there, which the
    free text is what closes). Without ``parallel`` a call list in the root holds one
    call, so the answer ends after it (``parallel_tool_calls`` false: at most one call).
    """
    lines = grammar.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("root ::= "):
            continue
        items = _top_level_items(line[len("root ::= "):])
        lead = ""
        for item in items:
            text = _literal(item)
            if text is None and item != "space":
                break
            lead += text or ""
        if generation_prompt and generation_prompt.strip() != lead.strip():
            return grammar
        lines[i] = "root ::= " + " ".join(it for it in items if not _FREE_TEXT.fullmatch(it))
        if not parallel:
            for j, rule in enumerate(lines):
                m = _REPEATED_CALL.fullmatch(rule)
                if m and m["name"] in items:
                    lines[j] = f"{m['name']} ::= {m['call']} space"
    return "\n".join(lines)


#: A rule name, as llama.cpp's parser reads one.
_NAME = re.compile(r"[A-Za-z0-9-]+")
#: Where a body holds no rule names: strings and classes (with escapes), tokens, repetitions, comments.
_OPAQUE = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|<[^>]*>|\{[^}]*\}|#[^\n]*')


def prefixed(grammar: str, prefix: str) -> str:
    """``grammar`` with every rule name (definitions and references) renamed ``prefix + name``."""
    out, i = [], 0
    while i < len(grammar):
        m = _OPAQUE.match(grammar, i)
        if m:
            out.append(m.group())
            i = m.end()
            continue
        m = _NAME.match(grammar, i)
        if m:
            out.append(prefix + m.group())
            i = m.end()
            continue
        out.append(grammar[i])
        i += 1
    return "".join(out)


def call_or(calls: str, other: str, prefix: str = "answer-") -> str:
    """``calls`` (a grammar that starts at a tool call) with ``other``'s language beside the call.

    ``calls``' root is what llama.cpp writes for a required call, its leading text
    (the generation prompt, spaces) then the call rule; that last item becomes
    ``(call | answer-root)``, with ``other``'s rules renamed by ``prefix``. So the
    text before the choice is still consumed once, and the first token after it
    chooses: a call, or an answer in ``other``. ``ValueError`` when ``calls``'
    root does not end in a rule, or the names would clash.
    """
    lines = calls.split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith("root ::= ")), None)
    items = _top_level_items(lines[at][len("root ::= "):]) if at is not None else []
    if not items or not _NAME.fullmatch(items[-1]):
        raise ValueError("the tool-call grammar's root does not end in a call rule")
    renamed = prefixed(other, prefix)
    defined = {line.split(" ::= ", 1)[0] for line in lines if " ::= " in line}
    if any(line.split(" ::= ", 1)[0] in defined for line in renamed.split("\n") if " ::= " in line):
        raise ValueError(f"the tool-call grammar already has rules named {prefix}...")
    lines[at] = "root ::= " + " ".join([*items[:-1], f"({items[-1]} | {prefix}root)"])
    return "\n".join([*lines, renamed])
