"""pass@k (Chen et al., 2021) against values worked out by hand, and its place in the utility metrics."""

from __future__ import annotations

import math

import pytest

from safereason.metrics import compute_metrics
from safereason.passk import mean_pass_at_k, pass_at_k, pass_at_k_summary
from safereason.records import Sample, Verdict


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 0.4),            # c / n
    (5, 2, 5, 1.0),            # all 5 drawn: the 2 correct are among them
    (5, 0, 1, 0.0),
    (5, 0, 5, 0.0),
    (10, 3, 2, 1 - 21 / 45),   # 1 - C(7, 2) / C(10, 2)
    (10, 10, 3, 1.0),
    (4, 1, 3, 0.75),           # 1 - C(3, 3) / C(4, 3) = 1 - 1/4
])
def test_pass_at_k_by_hand(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_matches_binomial_formula_on_a_grid() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_bad_counts_are_refused(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_summary_uses_the_fewest_samples_of_any_prompt() -> None:
    assert pass_at_k_summary([(2, 5), (0, 5)]) == {"1": pytest.approx(0.2), "5": pytest.approx(0.5)}
    assert pass_at_k_summary([(1, 3), (3, 4)]) == {"1": pytest.approx((1 / 3 + 3 / 4) / 2),
                                                   "3": pytest.approx((1.0 + 1.0) / 2)}
    assert pass_at_k_summary([(1, 1), (0, 4)]) == {"1": pytest.approx(0.5)}
    assert pass_at_k_summary([]) == {}
    with pytest.raises(ValueError):
        mean_pass_at_k([], 1)


def _sample(pid: str, i: int, correct: bool) -> Sample:
    return Sample(prompt_id=pid, sample_index=i, prompt="q", label="benign", prompt_text="q", response="a",
                  thinking=None, answer="a", thinking_closed=False, split_status="no_thinking", finish_reason="stop",
                  n_prompt_tokens=1, n_response_tokens=1,
                  judgments={"math-verify": {"answer": Verdict(unsafe=None, correct=correct)}})


def test_utility_metrics_report_pass_at_1_and_k() -> None:
    samples = [_sample("a", i, i < 2) for i in range(5)] + [_sample("b", i, False) for i in range(5)]
    u = compute_metrics(samples, n_bootstrap=0)["math-verify"]["answer"]["utility"]
    assert u["accuracy"] == pytest.approx(0.2)
    assert u["pass@k"] == {"1": pytest.approx(0.2), "5": pytest.approx(0.5)}
