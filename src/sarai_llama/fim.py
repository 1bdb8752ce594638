"""Fill-in-the-middle prompts: the one builder behind ``/infill``, the ``suffix`` of
``/v1/completions`` and ``Llama.create_completion(suffix=...)``.

A code model with FIM tokens (``_core.Model.fim_tokens``) writes the text that
belongs between a prefix and a suffix when it reads them in the order it was
trained on (llama-server's ``/infill`` order):

    [BOS] [extra context] <FIM_PRE> prefix prompt <FIM_SUF> suffix <FIM_MID>

or, with ``spm`` (llama-server's ``--spm-infill``, for models trained so),
``<FIM_SUF> suffix <FIM_PRE> prefix prompt <FIM_MID>``. The extra context (other
files of the project) uses the repository-level pattern where the vocabulary has
the tokens for it: ``<FIM_REP>myproject\\n``, then ``<FIM_SEP>{filename}\\n{text}``
per file and a last ``<FIM_SEP>filename\\n`` for the file being edited; a vocabulary
without FIM_SEP gets each file's text after a ``\\n\\n--- snippet ---\\n\\n`` line.
Without extra context the prompt is the file-level pattern alone (llama-server
writes the repository header even then; Qwen2.5-Coder's card gives the file-level
pattern for a single file).

Texts are tokenized as text (special-token spellings in them stay text), except
``prompt``, which may spell special tokens as llama-server's ``prompt`` may. BOS
comes first when the model adds one (llama-server puts the extra context before
it; a model never saw BOS mid-sequence in training).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError, utf8

__all__ = ["COMPLETION_FIELDS", "INFILL_FIELDS", "FimBudget", "fills", "fim_prompt", "missing_fim_tokens"]

#: The FIM tokens every prompt needs, by the name the errors use.
REQUIRED = {"pre": "prefix", "suf": "suffix", "mid": "middle"}
#: llama-server's fixed repository name and the current file's name in the repository-level pattern.
REPO_NAME = "myproject"
CURRENT_FILE = "filename"
#: What separates extra files where the vocabulary has no FIM_SEP (llama-server's).
SNIPPET = "\n\n--- snippet ---\n\n"
#: The request field of each part, for errors: ``/v1/completions`` and ``create_completion`` ...
COMPLETION_FIELDS = {"prefix": "prompt", "suffix": "suffix", "prompt": "prompt", "extra": "input_extra"}
#: ... and llama-server's ``/infill``.
INFILL_FIELDS = {"prefix": "input_prefix", "suffix": "input_suffix", "prompt": "prompt", "extra": "input_extra"}


@dataclass(frozen=True)
class FimBudget:
    """How much of each part fits (``/infill``, as llama-server cuts): the prefix keeps its
    last ``3/4 * n_batch`` tokens, the suffix its first ``n_batch/4 - 2 - len(prompt)``,
    the extra context its last ``n_ctx - n_batch - 2 * n_predict`` (``n_predict``: the
    tokens the request may generate)."""

    n_batch: int
    n_ctx: int
    n_predict: int


def missing_fim_tokens(model: Any) -> list[str]:
    """The FIM tokens a prompt needs that ``model``'s vocabulary lacks ([] when it can fill in)."""
    fim = model.fim_tokens
    return [name for attr, name in REQUIRED.items() if getattr(fim, attr) < 0]


def fills(model: Any, suffix: str | None, echo: bool = False) -> bool:
    """Whether a completion with ``suffix`` fills in the middle (its prompt then being the
    prefix): any suffix but an empty one on a model without FIM tokens, which asks for
    nothing after the text, as a plain completion does. A non-empty suffix on such a
    model is a ``ParameterError`` later (:func:`fim_prompt`), never dropped; ``echo``
    with a suffix is one now (the answer has no single text to echo)."""
    if suffix is None or (suffix == "" and missing_fim_tokens(model)):
        return False
    if echo:
        raise ParameterError("echo cannot be combined with suffix (fill-in-the-middle)", "echo")
    return True


def fim_prompt(model: Any, prefix: str | bytes | Sequence[int], suffix: str | bytes, *, prompt: str = "",
               extra: Sequence[tuple[str, str]] = (), spm: bool = False, budget: FimBudget | None = None,
               fields: Mapping[str, str] = COMPLETION_FIELDS) -> list[int]:
    """The tokens of a fill-in-the-middle prompt for ``model`` (a ``_core.Model``).

    ``prefix``: text, or tokens taken as they are; ``suffix``: text; ``prompt``: text
    that continues the prefix (``/infill``'s ``prompt``); ``extra``: (filename, text)
    of other files; ``spm``: suffix first; ``budget``: cut the parts to fit (None:
    keep everything). A :class:`~sarai_llama.errors.ParameterError` when the
    vocabulary lacks a FIM token (never a prompt without them) or a text is not valid
    Unicode, naming the request's field for the part (``fields``: part -> field).
    """
    missing = missing_fim_tokens(model)
    if missing:
        keys = ", ".join(f"tokenizer.ggml.fim_{attr}_token_id" for attr, name in REQUIRED.items() if name in missing)
        raise ParameterError(f"this model cannot fill in the middle: its vocabulary has no FIM "
                             f"{', '.join(missing)} token (GGUF {keys})", fields["suffix"])
    fim = model.fim_tokens

    def text(value: str | bytes, part: str, special: bool = False) -> list[int]:
        if isinstance(value, str):
            try:
                value = utf8(value, fields[part])
            except ValueError as exc:
                raise ParameterError(str(exc), fields[part]) from None
        return list(model.tokenize(value, False, special)) if value else []

    pre = text(prefix, "prefix") if isinstance(prefix, (str, bytes)) else [int(t) for t in prefix]
    suf = text(suffix, "suffix")
    tail = text(prompt, "prompt", special=True)
    context: list[int] = []
    if extra and fim.rep >= 0:
        context += [fim.rep, *text(REPO_NAME + "\n", "extra")]
    for filename, body in extra:
        if fim.sep >= 0:
            context += [fim.sep, *text(filename + "\n", "extra")]
        else:
            context += text(SNIPPET, "extra")
        context += text(body, "extra")
    if extra and fim.sep >= 0:
        context += [fim.sep, *text(CURRENT_FILE + "\n", "extra")]
    if budget is not None:
        pre = pre[max(0, len(pre) - 3 * (budget.n_batch // 4)):]
        suf = suf[:max(0, budget.n_batch // 4 - (2 + len(tail)))]
        keep = min(max(0, budget.n_ctx - budget.n_batch - 2 * budget.n_predict), len(context))
        context = context[len(context) - keep:]
    head = [fim.pre, *pre, *tail]
    middle = [fim.suf, *suf]
    first, second = (middle, head) if spm else (head, middle)
    bos = [int(model.token_bos)] if model.add_bos and model.token_bos >= 0 else []
    return [*bos, *context, *first, *second, fim.mid]
