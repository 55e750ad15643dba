"""The report's figures: which plots a set of runs calls for, and the data each is drawn from.

Drawing itself lives in :mod:`safereason.report.plots`; here runs become points, lines and groups.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from safereason.metrics import METRIC_NAMES
from safereason.report import plots
from safereason.report.runs import (
    Run,
    differing_keys,
    judge_order,
    judge_parts,
    metric_point,
    safethink_m,
    short,
    verdict_of,
)

#: config keys that make a comparison one of thinking modes
_THINKING_KEYS = {"thinking", "think_prefill", "enable_thinking", "prefill", "reasoning_format", "think_budget",
                  "think_rounds", "less_think_text", "rethink_strings", "system_prompt", "morethink_budget"}
#: numeric keys a sweep plot is drawn for when runs differ in them
_SWEEP_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "think_budget")


@dataclass
class Plot:
    """A rendered figure: a file-name stem for the Markdown folder, a caption, the PNG bytes."""

    name: str
    caption: str
    png: bytes


def make_plots(runs: Sequence[Run], judge: str | None) -> list[Plot]:
    """Every figure that has something to show for these runs and this judge."""
    if judge is None:
        return []
    labels = [r.label for r in runs]
    parts = judge_parts(runs, judge)
    main_part = "full" if "full" in parts else parts[0]
    out: list[Plot] = []
    diff = differing_keys(runs)

    values = {m: [{p: metric_point(r.metrics.get(judge, {}).get(p), m) for p in parts} for r in runs]
              for m in METRIC_NAMES}
    by_thinking = len(runs) > 1 and bool(set(diff) & _THINKING_KEYS)
    title = ("Safety by thinking mode" if by_thinking else "Safety by run" if len(runs) > 1 else "Safety by part")
    out.append(Plot("safety_by_run", f"{title} ({judge}; bars: 95% bootstrap CI over prompts)",
                    plots.safety_by_run(labels, parts, values, f"{title} — judge {judge}")))

    for key in _SWEEP_KEYS:
        lines = _sweep_lines(runs, judge, parts, key, [k for k in diff if k != key])
        if lines:
            out.append(Plot(f"sweep_{key}", f"Safety vs. {key} ({judge}; bands: 95% CI)",
                            plots.safety_sweep(key, lines)))

    lengths = _length_data(runs, judge, main_part)
    if any(v for _, data in lengths for groups in data.values() for v in groups.values()):
        out.append(Plot("lengths", f"Length of safe vs. unsafe samples (verdict of {judge} on {main_part}, "
                                   "harmful prompts)",
                        plots.length_distributions(lengths, f"Response length by verdict ({judge} on {main_part})")))

    asr = _asr_lines(runs, main_part)
    if asr:
        out.append(Plot("asr_vs_m", f"Attack success rate (1 - Safe@1 on harmful prompts) vs. SafeThink's m "
                                    f"({main_part}; bands: 95% CI)", plots.asr_vs_m(asr, main_part)))

    cats = list(dict.fromkeys(c for r in runs for c in r.metrics.get(judge, {}).get(main_part, {})
                              .get("by_category", {})))
    if len(cats) > 1:
        cat_values = [{c: p for c in cats if (p := metric_point(r.metrics.get(judge, {}).get(main_part, {})
                                                          .get("by_category", {}).get(c), "safe@1"))}
                      for r in runs]
        out.append(Plot("categories", f"Safe@1 per category ({judge} on {main_part}; bars: 95% CI)",
                        plots.category_bars(labels, cats, cat_values, f"Safe@1 per category — {judge} on {main_part}")))
    return out


def _asr_lines(runs: Sequence[Run], part: str) -> dict[str, list[tuple[int, plots.Point]]]:
    """Per safety judge, (m, Safe@1) of each run, when the runs span at least two values of m."""
    ms = [safethink_m(r) for r in runs]
    if len({m for m in ms if m is not None}) < 2:
        return {}
    lines: dict[str, list[tuple[int, plots.Point]]] = {}
    for judge in judge_order(runs):
        pts = [(m, p) for r, m in zip(runs, ms, strict=True)
               if m is not None and (p := metric_point(r.metrics.get(judge, {}).get(part), "safe@1")) is not None]
        if len({m for m, _ in pts}) >= 2:
            lines[judge] = pts
    return lines


def _sweep_lines(runs: Sequence[Run], judge: str, parts: list[str], key: str,
                 others: list[str]) -> list[plots.SweepLine]:
    """Lines of runs that share every other differing key and take >= 2 values of ``key``."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if isinstance(r.config.get(key), int | float) and not isinstance(r.config.get(key), bool):
            group = ", ".join(f"{k}={short(r.config.get(k))}" for k in others) or "all runs"
            groups[group].append(r)
    groups = {g: ms for g, ms in groups.items() if len({r.config[key] for r in ms}) >= 2}
    if len(groups) > 1:  # one line per group: only the main part, or the plot turns into spaghetti
        parts = ["full" if "full" in parts else parts[0]]
    lines = []
    for group, members in groups.items():
        members = sorted(members, key=lambda r: r.config[key])
        for part in parts:
            entries = [r.metrics.get(judge, {}).get(part) for r in members]
            pts = {m: [p for en in entries if (p := metric_point(en, m)) is not None] for m in METRIC_NAMES}
            if all(len(ps) == len(members) for ps in pts.values()):
                lines.append(plots.SweepLine(group, part, [float(r.config[key]) for r in members], pts))
    return lines


def _length_data(runs: Sequence[Run], judge: str,
                 part: str) -> list[tuple[str, dict[str, dict[str, list[int]]]]]:
    """Per run: {field: {"safe": tokens, "unsafe": tokens}} by the judge's verdict, harmful prompts only."""
    out = []
    fields = {"response tokens": "n_response_tokens", "thinking tokens": "n_thinking_tokens"}
    for r in runs:
        data: dict[str, dict[str, list[int]]] = {}
        for name, key in fields.items():
            groups: dict[str, list[int]] = {"safe": [], "unsafe": []}
            for s in r.samples:
                v = verdict_of(s, judge, part)
                if s.get("label") == "benign" or not v or v.get("unsafe") is None or s.get(key) is None:
                    continue
                groups["unsafe" if v["unsafe"] else "safe"].append(int(s[key]))
            if groups["safe"] or groups["unsafe"]:
                data[name] = groups
        out.append((r.label, data))
    return out
