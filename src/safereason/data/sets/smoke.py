"""The built-in smoke set: 18 prompts written for safereason (12 harmful, 6 benign) that need no files.

Shipped as ``safereason/data/prompts/smoke.jsonl``; each row gives its own id, category and label.
"""

from __future__ import annotations

from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _require, _text, label_of
from safereason.records import Prompt


def parse(t: Table) -> list[Prompt]:
    _require(t, "id", "prompt", "category", "label")
    return _check([
        Prompt(id=r["id"], prompt=_text(t, i, "prompt"), category=r["category"], label=label_of(r["label"]))
        for i, r in enumerate(t.rows)
    ], t)


SPEC = BenchmarkSpec("smoke", "18 prompts written for safereason (12 harmful, 6 benign); needs no files",
                     None, None, parse, resource="prompts/smoke.jsonl")
