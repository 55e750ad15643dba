"""Utility sets, to measure what safety costs in reasoning: benign problems with reference answers, checked by
the ``math-verify`` judge (or ``exact-match``) against ``meta["gold"]``.

* ``math500``: the 500-problem MATH test subset of "Let's Verify Step by Step" (Lightman et al., 2023).
* ``gsm8k``: the 1319 GSM8K test problems (Cobbe et al., 2021); the reference is the number after ``####``.
"""

from __future__ import annotations

from safereason.data.fetch import _GH
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _require, _text
from safereason.errors import DataError
from safereason.records import Prompt

#: Appended to utility problems so the final answer can be found by exact match.
MATH_INSTRUCTION = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."

#: MATH-500 lives in Git LFS upstream (openai/prm800k), so the download is the hub copy; the sha256 pins it to
#: the upstream LFS object.
MATH500_REMOTE = "hf://HuggingFaceH4/MATH-500@main/test.jsonl"
MATH500_SHA256 = "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"
GSM8K_COMMIT = "3101c7d5072418e28b9008a6636bde82a006892c"  # openai/grade-school-math
GSM8K_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"  # grade_school_math/data/test.jsonl


def parse_math500(t: Table) -> list[Prompt]:
    """MATH-500: benign utility prompts; the reference answer goes to ``meta["gold"]`` for math-verify."""
    _require(t, "problem", "answer", "unique_id")
    return _check([
        Prompt(id=f"math500-{r['unique_id'].removeprefix('test/').removesuffix('.json').replace('/', '-')}",
               prompt=_text(t, i, "problem") + MATH_INSTRUCTION, category=r.get("subject") or None, label="benign",
               meta={"gold": str(r["answer"]), "level": r.get("level")})
        for i, r in enumerate(t.rows)
    ], t)


def parse_gsm8k(t: Table) -> list[Prompt]:
    """GSM8K test: the reference is the number after the solution's final ``####``."""
    _require(t, "question", "answer")
    prompts = []
    for i, r in enumerate(t.rows):
        solution = str(r["answer"])
        if "####" not in solution:
            raise DataError(f"{t.where} {t.at(i)}: the answer has no final '#### <number>'")
        gold = solution.rsplit("####", 1)[1].strip().replace(",", "")
        prompts.append(Prompt(id=f"gsm8k-{i + 1:04d}", prompt=_text(t, i, "question") + MATH_INSTRUCTION,
                              label="benign", category="grade-school math", meta={"gold": gold}))
    return _check(prompts, t)


SPECS = (
    BenchmarkSpec("math500", "MATH-500 (utility): 500 competition problems with reference answers, label benign",
                  "math500/test.jsonl", MATH500_REMOTE, parse_math500, sha256=MATH500_SHA256),
    BenchmarkSpec("gsm8k", "GSM8K test (utility): 1319 grade-school problems with reference answers, label benign",
                  "gsm8k/test.jsonl",
                  f"{_GH}/openai/grade-school-math/{GSM8K_COMMIT}/grade_school_math/data/test.jsonl", parse_gsm8k,
                  sha256=GSM8K_SHA256),
)
