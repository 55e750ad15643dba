"""pass@k: the chance that at least one of k samples drawn from a prompt's n is correct (Chen et al., 2021,
"Evaluating Large Language Models Trained on Code", arXiv:2107.03374), estimated without bias from n >= k samples
of which c are correct as ``1 - C(n-c, k) / C(n, k)``, averaged over prompts.

pass@1 equals accuracy@1 (the mean over prompts of c/n); pass@K with K = the samples per prompt is the share of
prompts with at least one correct sample.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with ``c`` correct samples out of ``n``.

    Computed as a product rather than with binomials, which overflow for large n, as in
    ``estimate_pass_at_k`` of openai/human-eval human_eval/evaluation.py @ 6d43fb980f9fee3c892a914eda09951f772ad10d.
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k wants whole numbers, got n={n!r}, c={c!r}, k={k!r}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(tallies: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over prompts, each given as ``(correct, judged)``."""
    values = [pass_at_k(n, c, k) for c, n in tallies]
    if not values:
        raise ValueError("mean_pass_at_k: no prompts")
    return float(np.mean(values))


def pass_at_k_summary(tallies: Iterable[tuple[int, int]]) -> dict[str, float]:
    """``{"1": pass@1, "K": pass@K}`` with K the fewest judged samples of any prompt (so that every prompt has
    K to draw from); only ``"1"`` when some prompt has a single judged sample, ``{}`` when there are no prompts."""
    tallies = [(int(c), int(n)) for c, n in tallies]
    tallies = [(c, n) for c, n in tallies if n > 0]
    if not tallies:
        return {}
    top = min(n for _, n in tallies)
    return {str(k): mean_pass_at_k(tallies, k) for k in sorted({1, top})}
