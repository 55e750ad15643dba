"""HarmBench text behaviours (Mazeika et al., 2024, arXiv:2402.04249), test + val splits, in two sets.

HarmBench scores its behaviours two ways, chosen by the behaviour's ``Tags``: those tagged ``hash_check`` (the
100 ``copyright`` behaviours: 50 books, 50 song lyrics) by MinHash matching against the copyrighted text, all
others with its classifier. So:

* ``harmbench``: the 300 behaviours HarmBench judges with its classifier (200 standard, 100 contextual);
* ``harmbench-copyright``: the 100 copyright behaviours. HarmBench scores these by hashing, never with a safety
  classifier, so a safety judge's verdict on them is not HarmBench's number.

Contextual behaviours get their context before the request, as HarmBench builds the user turn. Ids are
HarmBench's ``BehaviorID``; the category is the ``SemanticCategory``. Both sets read the same file and validate
all of its rows, so they share one dataset hash.
"""

from __future__ import annotations

from collections.abc import Callable

from safereason.data.fetch import _GH
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _meta, _require, _text
from safereason.records import Prompt

COMMIT = "8e1604d1171fe8a48d8febecd22f600e462bdcdd"  # centerforaisafety/HarmBench
SHA256 = "8d81accedd38eaaf8b760618622bb888417d1fd0c86eba65c427a16f1cbb4afc"  # harmbench_behaviors_text_all.csv
LOCAL_PATH = "harmbench/behavior_datasets/harmbench_behaviors_text_all.csv"
REMOTE = f"{_GH}/centerforaisafety/HarmBench/{COMMIT}/data/behavior_datasets/harmbench_behaviors_text_all.csv"
#: The tag that routes a behaviour to hashing instead of the classifier: ``evaluate_completions.py`` splits
#: ``Tags`` on ", " and calls ``compute_results_hashing`` when ``'hash_check' in tags``, else
#: ``compute_results_classifier`` (sigeisler/reinforce-attacks-llms evaluate_completions.py @
#: d1eb97e54afab7bb99a69fa68ea8d284ce74b181, the HarmBench fork that carries the pinned data; the same lines are in
#: the independent fork Bob-cheng/HB_RedTeam evaluate_completions.py @ f201bdd69dd58ebd2b9210553375fa0c848b42d3).
HASH_CHECK_TAG = "hash_check"


def harmbench_prompt(behavior: str, context: str | None) -> str:
    """HarmBench's user turn: a contextual behaviour's context, a rule, then the request."""
    return f"{context}\n\n---\n\n{behavior}" if context else behavior


def is_hash_checked(tags: str) -> bool:
    """Whether HarmBench scores the behaviour by hashing (its ``Tags`` holds ``hash_check``)."""
    return HASH_CHECK_TAG in tags.split(", ")


def parse(t: Table) -> list[Prompt]:
    """Every behaviour of the file, in file order (both sets are a filter on this)."""
    _require(t, "Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID")
    return _check([
        Prompt(id=r["BehaviorID"], prompt=harmbench_prompt(_text(t, i, "Behavior"), r["ContextString"]),
               category=r["SemanticCategory"] or None, label="harmful", meta=_meta(r, "SemanticCategory"))
        for i, r in enumerate(t.rows)
    ], t)


def parser(hashed: bool) -> Callable[[Table], list[Prompt]]:
    """The behaviours HarmBench scores by hashing (``hashed``) or with its classifier (not ``hashed``)."""
    def parse_split(t: Table) -> list[Prompt]:
        return [p for p, r in zip(parse(t), t.rows, strict=True) if is_hash_checked(r["Tags"] or "") == hashed]

    return parse_split


SPECS = (
    BenchmarkSpec("harmbench", "HarmBench text behaviours judged by its classifier, test+val: 300 (200 standard, "
                  "100 contextual); the 100 copyright behaviours, which HarmBench scores by hashing, are "
                  "harmbench-copyright", LOCAL_PATH, REMOTE, parser(hashed=False), sha256=SHA256),
    BenchmarkSpec("harmbench-copyright", "HarmBench copyright behaviours, test+val: 100 (50 books, 50 lyrics). "
                  "HarmBench scores these by hashing (MinHash match against the copyrighted text), not with a "
                  "safety classifier: a safety judge's verdict on them is not HarmBench's number",
                  LOCAL_PATH, REMOTE, parser(hashed=True), sha256=SHA256),
)
