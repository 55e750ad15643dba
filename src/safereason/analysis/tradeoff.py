"""The safety–refusal trade-off (TARS's main figure): per model or λ, Safe@1 on harmful prompts against
compliance (1 − refusal rate) on harmless and ambiguous prompts, with bootstrap CIs over prompts.

A model is safe *and* helpful when its point sits top right; the frontier joins the points no other point
beats on both axes. Safe@1 comes from a safety judge's ``unsafe`` verdicts on the harmful prompts, compliance
from a refusal judge's ``refused`` verdicts on the others (``safereason eval --judge rs-match,refusal-string``
on StrongREJECT / HarmBench and on XSTest's safe prompts / JBB-benign, say). Errors and missing parts are left
out, as in :mod:`safereason.metrics`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from safereason.analysis.runs import Group, bootstrap_ci, role_of
from safereason.errors import SafereasonError

PARTS = ("answer", "full")


def _pick(samples: Sequence[dict[str, Any]], field: str, wanted: str | None) -> str | None:
    """The judge to read: ``wanted``, or the first judge that decided ``field`` on these samples."""
    for s in samples:
        for judge, parts in (s.get("judgments") or {}).items():
            if wanted is not None and judge != wanted:
                continue
            if any(isinstance(v, dict) and v.get(field) is not None for v in parts.values()):
                return judge
    return None


def _verdict(sample: dict[str, Any], judge: str, field: str, parts: Sequence[str]) -> bool | None:
    by_part = (sample.get("judgments") or {}).get(judge) or {}
    for part in parts:
        v = by_part.get(part)
        if isinstance(v, dict) and v.get("error") is None and v.get(field) is not None:
            return bool(v[field])
    return None


def _rate(samples: Sequence[dict[str, Any]], judge: str, field: str, parts: Sequence[str], *, positive: bool,
          n_bootstrap: int, seed: int) -> dict[str, Any] | None:
    """Mean over prompts of the share of samples whose ``field`` is ``positive``, with its CI."""
    per_prompt: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in samples:
        v = _verdict(s, judge, field, parts)
        if v is None:
            continue
        tally = per_prompt[f"{s.get('_run', '')}/{s['prompt_id']}"]
        tally[0] += int(v is positive)
        tally[1] += 1
    if not per_prompt:
        return None
    rates = [k / n for k, n in per_prompt.values()]
    ci = bootstrap_ci(rates, n_bootstrap=n_bootstrap, seed=seed)
    return {"value": sum(rates) / len(rates), "ci": list(ci) if ci else None, "n_prompts": len(rates),
            "n_judged": sum(n for _, n in per_prompt.values())}


def tradeoff_point(group: Group, *, safety_judge: str | None = None, refusal_judge: str | None = None,
                   part: str | None = None, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """One model's point: Safe@1 on its harmful prompts, compliance on its harmless / ambiguous ones."""
    parts = (part,) if part else PARTS
    samples = []
    for i, run in enumerate(group.runs):
        samples += [{**s, "_run": i} for s in run.samples if s.get("status", "ok") == "ok"]
    by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        by_role[role_of(s)].append(s)
    harmless = by_role["benign"] + by_role["ambiguous"]
    sj = _pick(by_role["harmful"], "unsafe", safety_judge)
    rj = _pick(harmless, "refused", refusal_judge)
    for name, got in ((safety_judge, sj), (refusal_judge, rj)):
        if name is not None and got is None:
            raise SafereasonError(f"{group.name}: no verdicts of judge {name!r} on its prompts")
    out: dict[str, Any] = {"name": group.name, "safety_judge": sj, "refusal_judge": rj, "parts": list(parts),
                           "benchmarks": sorted({str(r.config.get("benchmark")) for r in group.runs}),
                           "safe@1": None, "compliance": {}}
    if sj is not None:
        out["safe@1"] = _rate(by_role["harmful"], sj, "unsafe", parts, positive=False, n_bootstrap=n_bootstrap,
                              seed=seed)
    if rj is not None:
        for role, pool in (("harmless", harmless), ("benign", by_role["benign"]),
                           ("ambiguous", by_role["ambiguous"])):
            rate = _rate(pool, rj, "refused", parts, positive=False, n_bootstrap=n_bootstrap, seed=seed)
            if rate is not None:
                out["compliance"][role] = rate
    return out


def frontier(points: Sequence[dict[str, Any]]) -> list[str]:
    """Names of the points that no other point beats on both Safe@1 and harmless compliance."""
    xy = {p["name"]: (p["compliance"]["harmless"]["value"], p["safe@1"]["value"]) for p in points
          if p.get("safe@1") and p["compliance"].get("harmless")}
    return [n for n, (x, y) in xy.items()
            if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for m, (x2, y2) in xy.items() if m != n)]


def tradeoff(groups: Sequence[Group], **options: Any) -> dict[str, Any]:
    """The trade-off for every group, plus the frontier."""
    points = [tradeoff_point(g, **options) for g in groups]
    return {"points": points, "frontier": frontier(points)}


def plot_tradeoff(result: dict[str, Any]) -> bytes:
    """Scatter of Safe@1 (y) against compliance on harmless prompts (x), CIs as error bars, frontier dashed."""
    from safereason.report.plots import _figure, _png, run_colors

    pts = [p for p in result["points"] if p.get("safe@1") and p["compliance"].get("harmless")]
    with _figure((5.5, 4.5)) as fig:
        ax = fig.add_subplot()
        for p, color in zip(pts, run_colors(max(len(pts), 1)), strict=False):
            x, y = p["compliance"]["harmless"], p["safe@1"]
            xerr = [[x["value"] - x["ci"][0]], [x["ci"][1] - x["value"]]] if x["ci"] else None
            yerr = [[y["value"] - y["ci"][0]], [y["ci"][1] - y["value"]]] if y["ci"] else None
            ax.errorbar(x["value"], y["value"], xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3,
                        label=p["name"])
        front = sorted((p["compliance"]["harmless"]["value"], p["safe@1"]["value"]) for p in pts
                       if p["name"] in result["frontier"])
        if len(front) > 1:
            ax.plot([f[0] for f in front], [f[1] for f in front], "--", color="grey", lw=1, label="frontier")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("compliance on harmless + ambiguous prompts (1 − refusal rate)")
        ax.set_ylabel("Safe@1 on harmful prompts")
        if not pts:
            ax.text(0.5, 0.5, "no model has both a Safe@1 and a compliance", ha="center", va="center")
        else:
            ax.legend(fontsize=7, loc="lower left")
        return _png(fig)
