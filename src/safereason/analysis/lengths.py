"""Adaptive reasoning (TARS's length analysis): thinking length by prompt label and category, per model.

An adaptive reasoner thinks longer where a prompt is hard to judge (ambiguous, adversarial) and briefly where it
is not. Lengths are the samples' ``n_thinking_tokens``; samples without a thinking part (no thinking format, or
not generated) are counted in ``n_without_thinking``, not averaged in as zeros.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from safereason.analysis.runs import ROLES, Group, bootstrap_ci, role_of


def _stats(values: Sequence[int], missing: int, n_bootstrap: int, seed: int) -> dict[str, Any]:
    ci = bootstrap_ci(values, n_bootstrap=n_bootstrap, seed=seed)
    return {"n": len(values), "n_without_thinking": missing,
            "mean": statistics.fmean(values) if values else None,
            "median": statistics.median(values) if values else None, "ci": list(ci) if ci else None}


def group_lengths(group: Group, *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Thinking-length statistics of one model, by role and by (role, category)."""
    vals: dict[str, list[int]] = defaultdict(list)
    miss: dict[str, int] = defaultdict(int)
    cat_vals: dict[tuple[str, str], list[int]] = defaultdict(list)
    cat_miss: dict[tuple[str, str], int] = defaultdict(int)
    for s in group.samples:
        if s.get("status", "ok") != "ok":
            continue
        role, cat = role_of(s), str(s.get("category") or "(none)")
        n = s.get("n_thinking_tokens")
        if n is None or s.get("thinking") is None:
            miss[role] += 1
            cat_miss[(role, cat)] += 1
        else:
            vals[role].append(int(n))
            cat_vals[(role, cat)].append(int(n))
    roles = [r for r in (*ROLES, "unlabelled") if vals.get(r) or miss.get(r)]
    by_category: dict[str, dict[str, Any]] = defaultdict(dict)
    for (role, cat) in sorted(set(cat_vals) | set(cat_miss)):
        by_category[role][cat] = _stats(cat_vals[(role, cat)], cat_miss[(role, cat)], n_bootstrap, seed)
    return {"name": group.name,
            "by_role": {r: _stats(vals[r], miss[r], n_bootstrap, seed) for r in roles},
            "by_category": dict(by_category)}


def lengths(groups: Sequence[Group], **options: Any) -> dict[str, Any]:
    return {"groups": [group_lengths(g, **options) for g in groups]}


def plot_lengths(result: dict[str, Any], max_categories: int = 16) -> bytes:
    """Left: mean thinking tokens by prompt role per model. Right: by role/category (the largest categories)."""
    import numpy as np

    from safereason.report.plots import _figure, _png, run_colors

    groups = result["groups"]
    colors = run_colors(max(len(groups), 1))
    roles = [r for r in (*ROLES, "unlabelled") if any(r in g["by_role"] for g in groups)]
    counts: dict[str, int] = defaultdict(int)
    for g in groups:
        for role, cats in g["by_category"].items():
            for cat, st in cats.items():
                counts[f"{role}/{cat}"] += st["n"]
    cats = sorted(counts, key=lambda k: (-counts[k], k))[:max_categories]
    with _figure((11, 4.2)) as fig:
        ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
        width = 0.8 / max(len(groups), 1)
        for j, (g, color) in enumerate(zip(groups, colors, strict=False)):
            for ax, keys, get in (
                (ax1, roles, lambda k, g=g: g["by_role"].get(k)),
                (ax2, cats, lambda k, g=g: g["by_category"].get(k.split("/", 1)[0], {}).get(k.split("/", 1)[1])),
            ):
                means = [(get(k) or {}).get("mean") for k in keys]
                pos = np.arange(len(keys)) + j * width
                ax.bar(pos, [m or 0 for m in means], width, color=color, label=g["name"] if ax is ax1 else None)
        for ax, keys, title in ((ax1, roles, "by prompt label"), (ax2, cats, "by label/category")):
            ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys, rotation=30 if ax is ax1 else 60,
                          ha="right", fontsize=7)
            ax.set_ylabel("mean thinking tokens")
            ax.set_title(title)
        if groups:
            ax1.legend(fontsize=7)
        return _png(fig)
