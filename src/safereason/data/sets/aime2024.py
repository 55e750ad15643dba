"""AIME 2024 (utility): the 30 problems of the 2024 American Invitational Mathematics Examination I and II, each
with an integer answer in 0-999, as shipped by the Qwen2.5-Math evaluation suite (``evaluation/data/aime24``).
The problems are copyright of the MAA; the solutions come from the AoPS wiki.

``aime2024``: 30 prompts, label benign, category ``AIME I`` / ``AIME II``, ids ``aime2024-I-<n>`` /
``aime2024-II-<n>`` (from each row's AoPS url); the answer goes to ``meta["gold"]``, graded by ``math-verify``.
"""

from __future__ import annotations

import re

from safereason.data.fetch import _GH
from safereason.data.sets.utility import MATH_INSTRUCTION
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _require, _text
from safereason.errors import DataError
from safereason.records import Prompt

AIME2024_COMMIT = "a45202bd16f1ec06f433442dc1152d0074773465"  # QwenLM/Qwen2.5-Math
#: of ``evaluation/data/aime24/test.jsonl`` at that commit
AIME2024_SHA256 = "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac"
_URL = re.compile(r"2024_AIME_(I|II)_Problems/Problem_(\d+)$")


def parse_aime2024(t: Table) -> list[Prompt]:
    """One benign utility prompt per problem; the answer (a string such as ``"025"``) is the reference."""
    _require(t, "problem", "answer", "url")
    prompts = []
    for i, r in enumerate(t.rows):
        m = _URL.search(str(r["url"]))
        if m is None:
            raise DataError(f"{t.where} {t.at(i)}: url {r['url']!r} names no 2024 AIME I/II problem")
        exam, number = m.groups()
        prompts.append(Prompt(id=f"aime2024-{exam}-{int(number)}", prompt=_text(t, i, "problem") + MATH_INSTRUCTION,
                              category=f"AIME {exam}", label="benign",
                              meta={"gold": str(r["answer"]), "url": r["url"]}))
    return _check(prompts, t)


SPEC = BenchmarkSpec(
    "aime2024", "AIME 2024 I + II (utility): 30 competition problems with integer answers, label benign",
    "aime2024/test.jsonl", f"{_GH}/QwenLM/Qwen2.5-Math/{AIME2024_COMMIT}/evaluation/data/aime24/test.jsonl",
    parse_aime2024, sha256=AIME2024_SHA256)
