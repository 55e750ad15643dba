"""Decision tokens of first-token classifier judges, and head-and-tail truncation, derived from the tokenizer.

Rules (used by :class:`safereason.judges.hf_classifier.HFLogitJudge`):

  as it appears *after the rendered prompt* (``encode(prompt + prefix + word)`` minus ``encode(prompt)``;
  where the tokenizer merges across that boundary the continuation is encoded on its own). The word's
  first surface form must then be exactly one token, else :class:`ModelLoadError`; further forms (e.g.
  with a leading space) count too when they are one token.
* **Tokens the model always emits first.** A judge declares ``output_prefix``, the text its documented
  output starts with (Llama Guard 3 answers ``"\\n\\nsafe"`` / ``"\\n\\nunsafe\\nS1"`` after a template that
  ends at the assistant header). If the rendered prompt already ends with that prefix nothing is added;
  if it ends with a head of it (say one ``"\\n"``) the rest is added; otherwise the whole prefix is
  appended as tokens, so that one forward pass lands on the decision token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safereason.errors import ModelLoadError

TRUNCATION_MARK = "\n...\n"


@dataclass(frozen=True)
class DecisionWord:
    """An answer of the classifier. ``forms[0]`` must be one token; later forms count when they are."""

    name: str
    forms: tuple[str, ...]


@dataclass(frozen=True)
class DecisionTokens:
    """Token ids appended after the prompt (``prefix``), then the ids counted as each answer."""

    prefix: tuple[int, ...]
    positive: tuple[int, ...]
    negative: tuple[int, ...]

def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def encode(tokenizer: Any, text: str, add_special_tokens: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens, return_attention_mask=False)["input_ids"])


def continuation_ids(tokenizer: Any, context: str, continuation: str) -> list[int]:
    """The ids ``continuation`` gets when it follows ``context`` (how the model would have seen it)."""
    base = encode(tokenizer, context)
    full = encode(tokenizer, context + continuation)
    if full[: len(base)] == base:
        return full[len(base):]
    return encode(tokenizer, continuation)  # the tokenizer merged across the boundary


def effective_prefix(rendered: str, output_prefix: str) -> str:
    """What to append so that ``rendered`` + it ends with ``output_prefix`` (see the module docstring)."""
    for k in range(len(output_prefix), 0, -1):
        if rendered.endswith(output_prefix[:k]):
            return output_prefix[k:]
    return output_prefix


def derive_decision_tokens(tokenizer: Any, context: str, prefix: str, positive: DecisionWord,
                           negative: DecisionWord) -> DecisionTokens:
    """Ids of the prefix and of each decision word after ``context`` (a rendered probe prompt)."""
    prefix_ids: tuple[int, ...] | None = None
    found: dict[str, list[int]] = {}
    for word in (positive, negative):
        ids: list[int] = []
        for i, form in enumerate(word.forms):
            cont = continuation_ids(tokenizer, context, prefix + form)
            head, last = tuple(cont[:-1]), cont[-1:]
            single = (len(last) == 1 and tokenizer.decode(last).strip() == form.strip()
                      and tokenizer.decode(list(head)) == prefix)
            if not single or (prefix_ids is not None and head != prefix_ids):
                if i > 0:
                    continue  # an optional form that does not fit: not counted
                if not single:
                    shown = [tokenizer.decode([t]) for t in cont]
                    raise ModelLoadError(
                        f"decision word {form!r} is not exactly one token after the prompt"
                        f"{f' and the prefix {prefix!r}' if prefix else ''} in this tokenizer "
                        f"(got {len(cont)} tokens {shown}); this judge needs a model whose tokenizer has it "
                        "as a single token"
                    )
                raise ModelLoadError(f"the prefix {prefix!r} tokenizes differently before {positive.forms[0]!r} "
                                     f"and {form!r}; cannot score both from one forward pass")
            prefix_ids = head if prefix_ids is None else prefix_ids
            if last[0] not in ids:
                ids.append(last[0])
        found[word.name] = ids
    if set(found[positive.name]) & set(found[negative.name]):
        raise ModelLoadError(f"decision words {positive.name!r} and {negative.name!r} share a token id")
    return DecisionTokens(prefix=prefix_ids or (), positive=tuple(found[positive.name]),
                          negative=tuple(found[negative.name]))


def head_tail(tokenizer: Any, ids: Sequence[int], budget: int) -> str:
    """Text of the first 2/3 and the last 1/3 of ``budget`` tokens of ``ids``, joined by the mark."""
    keep = max(budget - len(encode(tokenizer, TRUNCATION_MARK)), 2)
    head = (2 * keep) // 3
    tail = keep - head
    return tokenizer.decode(list(ids[:head])) + TRUNCATION_MARK + tokenizer.decode(list(ids[len(ids) - tail:]))
