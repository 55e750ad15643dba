"""``recipe think``'s data: the prompt rows (built in or a file, validated before any work) and the training rows.

A training row is ``messages`` = [user, assistant], the assistant text ``<think>\\n{thought}\\n</think>\\n{answer}``:
the rule-built thought of the prompt row, then the row's own answer (math) or the teacher's plain chat answer.
The teacher's answers are kept whatever they say (comply or refuse); only degenerate ones are dropped (empty,
too short, repetitive) and a reply cut at the token limit is trimmed back to its last full sentence.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from safereason.errors import DataError

LABELS = ("benign", "harmful")
REQUIRED = ("prompt", "label")
DROP_REASONS = ("missing", "empty", "too_short", "repetitive", "no_sentence")
#: a thought written for a prompt file without a ``thought`` column
DEFAULT_THOUGHT = "The user asks: \"{prompt}\" Let me think about what they need, then answer."
MIN_WORDS = 4


def read_prompt_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL prompt file, checked: every problem is one DataError line, raised before any work."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read prompt file {path}: {getattr(e, 'strerror', None) or e}") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DataError(f"{path} line {i}: not a JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {i}: not a JSON object")
        rows.append(row)
    return check_prompt_rows(rows, str(path))


def check_prompt_rows(rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Validate and normalise rows: ``prompt`` and ``label`` (benign / harmful) in every row, both labels present,
    unique ids (``think-N`` when absent), a thought for each (the default template when absent)."""
    if not rows:
        raise DataError(f"{where} holds no prompts")
    missing = [c for c in REQUIRED if not all(c in r for r in rows)]
    if missing:
        raise DataError(f"{where}: every row needs the column(s) {', '.join(missing)} (prompt text, label benign or "
                        "harmful); optional: id, category, thought, answer")
    out = []
    for i, r in enumerate(rows, 1):
        for col in ("prompt", "thought", "answer"):
            if col in r and (not isinstance(r[col], str) or not r[col].strip()):
                raise DataError(f"{where} row {i}: {col!r} must be non-empty text")
        if r["label"] not in LABELS:
            raise DataError(f"{where} row {i}: label {r['label']!r} is not one of {', '.join(LABELS)}")
        if "</think>" in r.get("thought", "") or "<think>" in r.get("thought", ""):
            raise DataError(f"{where} row {i}: the thought must not hold <think> or </think> (the recipe adds them)")
        out.append({**r, "id": str(r.get("id", f"think-{i - 1:03d}")),
                    "thought": r.get("thought") or DEFAULT_THOUGHT.format(prompt=r["prompt"].strip())})
    labels = Counter(r["label"] for r in out)
    if len(labels) < 2:
        raise DataError(f"{where}: all {len(out)} prompts are labelled {next(iter(labels))!r}; the set needs benign "
                        "and harmful prompts, so that the tuned model's safety stays mixed")
    dup = [k for k, n in Counter(r["id"] for r in out).items() if n > 1]
    if dup:
        raise DataError(f"{where}: duplicate id(s) {', '.join(dup[:3])}")
    return out


# -- the teacher's answers ---------------------------------------------------------------------------

def trim_to_sentence(text: str) -> str:
    """``text`` up to its last sentence end (``.``, ``!``, ``?``, a closing quote or bracket after one); a bare list
    marker (``2.`` on its own line, where a cut list stops) is not a sentence end."""
    for m in reversed(list(re.finditer(r"[.!?][\"')\]]?(?=\s|$)", text))):
        head = text[: m.end()]
        if not re.fullmatch(r"(?:\d+|[a-zA-Z])[.)]", head.rsplit("\n", 1)[-1].strip()):
            return head
    return ""


def is_repetitive(text: str) -> bool:
    """A line or sentence said three times, or a 4-gram making up a third of the words: a looping reply."""
    parts = [p.strip().lower() for p in re.split(r"[\n.!?]+", text) if len(p.strip()) > 10]
    if parts and Counter(parts).most_common(1)[0][1] >= 3:
        return True
    words = text.lower().split()
    grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    top = grams.most_common(1)[0][1] if grams else 0
    return top >= 3 and top * 4 * 3 >= len(words)


def clean_answer(text: str | None, cut: bool) -> tuple[str | None, str | None]:
    """(the answer to train on, None) or (None, why it is dropped); ``cut``: the reply hit the token limit."""
    if text is None:
        return None, "missing"
    answer = text.strip()
    if not answer:
        return None, "empty"
    if cut:
        answer = trim_to_sentence(answer).strip()
        if not answer:
            return None, "no_sentence"
    if len(answer.split()) < MIN_WORDS:
        return None, "too_short"
    if is_repetitive(answer):
        return None, "repetitive"
    return answer, None


def assistant_text(thought: str, answer: str) -> str:
    return f"<think>\n{thought.strip()}\n</think>\n{answer.strip()}"


def build_rows(prompts: Sequence[dict[str, Any]], replies: dict[str, tuple[str | None, bool]]
               ) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Training rows and drop counts; ``replies`` maps a prompt id to (teacher reply, cut at the limit)."""
    rows, dropped = [], Counter[str]()
    for p in prompts:
        if "answer" in p:
            answer, source = p["answer"], "rule"
        else:
            answer, why = clean_answer(*replies.get(p["id"], (None, False)))
            if answer is None:
                dropped[why or "missing"] += 1
                continue
            source = "teacher"
        rows.append({"messages": [{"role": "user", "content": p["prompt"]},
                                  {"role": "assistant", "content": assistant_text(p["thought"], answer)}],
                     "id": p["id"], "label": p["label"], "category": p.get("category"), "answer_source": source})
    return rows, dropped


def jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
