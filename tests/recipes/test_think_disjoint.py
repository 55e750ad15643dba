"""``recipe think``'s built-in prompts share no prompt with a set the README evaluates on: not the same normalised
text, and no near-duplicate (content-word Jaccard at or above 0.5; the closest pair today is 0.33)."""

from __future__ import annotations

import re

import pytest

from safereason.recipes.safechain import normalize
from safereason.recipes.think_prompts import builtin_prompts

EVALUATED = ("strongreject", "strongreject-small", "harmbench", "jbb-harmful", "jbb-benign", "advbench", "xstest",
             "math500", "gsm8k", "aime2024", "humaneval", "smoke")
_STOP_TEXT = ("a an the is are was were be to of in on at for with and or but how do does did i my me you your what "
              "why can could would should it its this that there their they we our from by as into about which who "
              "when where will")
STOP = frozenset(_STOP_TEXT.split(" "))
THRESHOLD = 0.5


def content_words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower())) - STOP


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def closest(mine: list[str], theirs: list[str]) -> tuple[float, str, str]:
    mw = [(m, content_words(m)) for m in mine]
    best = (0.0, "", "")
    for t in theirs:
        tw = content_words(t)
        for m, w in mw:
            if (j := jaccard(w, tw)) > best[0]:
                best = (j, m, t)
    return best


@pytest.fixture(scope="module")
def evaluated(shared_data) -> dict[str, list[str]]:
    from safereason.data import load_benchmark

    return {name: [p.prompt for p in load_benchmark(name, data_dir=shared_data).prompts] for name in EVALUATED}


@pytest.mark.parametrize("seed", [0, 1])
def test_builtin_prompts_are_disjoint_from_every_evaluated_set(evaluated, seed):
    mine = [r["prompt"] for r in builtin_prompts(seed)]
    assert len(mine) == len(set(mine)) >= 150
    for name, theirs in evaluated.items():
        assert len(theirs) >= 18, name  # the set really loaded
        assert not {normalize(m) for m in mine} & {normalize(t) for t in theirs}, name
        j, m, t = closest(mine, theirs)
        assert j < THRESHOLD, f"{name}: {m!r} is a near-duplicate of {t!r} (Jaccard {j:.2f})"


def test_the_check_catches_a_reworded_benchmark_prompt(evaluated):
    """The threshold is not vacuous: a benchmark prompt with a few words changed is flagged."""
    for name in ("xstest", "advbench", "gsm8k"):
        original = next(p for p in evaluated[name] if len(content_words(p)) >= 6)
        words = original.split()
        reworded = " ".join(["Please:", *words[:-1], "today?"])  # one word swapped, one added
        assert closest([reworded], evaluated[name])[0] >= THRESHOLD, name


def test_builtin_set_is_mixed_and_reproducible():
    rows = builtin_prompts(0)
    labels = {r["label"] for r in rows}
    assert labels == {"benign", "harmful"} and sum(r["label"] == "harmful" for r in rows) >= 20
    assert rows == builtin_prompts(0) and rows != builtin_prompts(1)
    math = [r for r in rows if r["category"] == "math"]
    for r in math:  # the answer states the thought's result, which is right and not negative
        n = int(re.findall(r"-?\d+", r["thought"])[-1])
        assert n >= 0 and re.findall(r"\d+", r["answer"]) == [str(n)] and r["answer"] not in r["thought"]
    assert all("<think>" not in r["thought"] and "</think>" not in r["thought"] for r in rows)
