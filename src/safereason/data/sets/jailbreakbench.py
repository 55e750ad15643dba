"""JailbreakBench JBB-Behaviors (Chao et al., 2024): 100 harmful behaviours in 10 categories (``jbb-harmful``)
and 100 topic-matched benign ones (``jbb-benign``). The prompt is the ``Goal``; ids are ``jbb-<label>-<Index>``.
"""

from __future__ import annotations

from collections.abc import Callable

from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _meta, _require, _text
from safereason.records import Label, Prompt

REVISION = "886acc352a31533ffbcf4ef22c744658688086fc"  # hf dataset JailbreakBench/JBB-Behaviors
HARMFUL_SHA256 = "4a8ec6832056b631eb092dccc60d37a61c3d441268268888b3d006288afeffa1"  # data/harmful-behaviors.csv
BENIGN_SHA256 = "3cda234d21a991fa309bbfea4b6d9dae31ccdf8e9d452424b6a983e4fdc33468"  # data/benign-behaviors.csv
_REMOTE = f"hf://JailbreakBench/JBB-Behaviors@{REVISION}/data"


def parser(label: Label) -> Callable[[Table], list[Prompt]]:
    """Rows to prompts, every one labelled ``label``."""
    def parse(t: Table) -> list[Prompt]:
        _require(t, "Index", "Goal", "Behavior", "Category")
        return _check([
            Prompt(id=f"jbb-{label}-{r['Index']}", prompt=_text(t, i, "Goal"), category=r["Category"] or None,
                   label=label, meta=_meta(r, "Goal", "Category"))
            for i, r in enumerate(t.rows)
        ], t)

    return parse


SPECS = (
    BenchmarkSpec("jbb-harmful", "JailbreakBench JBB-Behaviors: 100 harmful behaviours, 10 categories",
                  "jailbreakbench/harmful-behaviors.csv", f"{_REMOTE}/harmful-behaviors.csv", parser("harmful"),
                  sha256=HARMFUL_SHA256),
    BenchmarkSpec("jbb-benign", "JailbreakBench JBB-Behaviors: 100 topic-matched benign behaviours",
                  "jailbreakbench/benign-behaviors.csv", f"{_REMOTE}/benign-behaviors.csv", parser("benign"),
                  sha256=BENIGN_SHA256),
)
