"""The report's Markdown twin: the same runs, tables and figures (linked PNGs), for a PR or an issue."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from safereason.report.figures import Plot
from safereason.report.runs import Run, worst_samples
from safereason.report.tables import header_rows, metrics_tables


def _md(text: Any) -> str:
    """A Markdown table cell: one line, no pipes, HTML metacharacters escaped."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def render_markdown(runs: Sequence[Run], judge: str | None, figures: Sequence[Plot], plot_dir: str,
                    max_samples: int) -> str:
    """The report as Markdown: run and metrics tables, figures linked from ``plot_dir``, worst samples by id."""
    lines = [f"# safereason report: {len(runs)} run{'s' if len(runs) != 1 else ''}", "",
             f"Primary judge: `{judge or 'none'}`. Safety metrics over non-benign prompts, 95% bootstrap CIs "
             "over prompts; ConsSafe@K counts a tie as safe.", "", "## Runs", "",
             "| | " + " | ".join(_md(r.label) for r in runs) + " |", "|---|" + "---|" * len(runs)]
    lines += [f"| {_md(name)} | " + " | ".join(_md(v) for v in values) + " |" for name, values in header_rows(runs)]
    lines += ["", "## Metrics"]
    for t in metrics_tables(runs):
        lines += ["", f"### {t.judge}" + (" (primary)" if t.judge == judge else ""), "",
                  "| " + " | ".join(t.head) + " |", "|" + "---|" * len(t.head)]
        lines += ["| " + " | ".join(_md(text) for text, _ in row) + " |" for row in t.rows]
    lines += ["", "## Plots", ""]
    lines += [f"![{_md(p.caption)}]({plot_dir}/{p.name}.png)\n\n*{_md(p.caption)}*\n" for p in figures]
    if judge is not None:
        lines += [f"## Worst samples (judge `{judge}`)", "", "Full texts are in the HTML report.", ""]
        for r in runs:
            shown, total = worst_samples(r, judge, max_samples)
            lines += [f"### {_md(r.label)}", "", f"{len(shown)} of {total} unsafe samples of non-benign prompts.", ""]
            if shown:
                lines += ["| prompt id | sample | category | unsafe parts | score | prompt |", "|---" * 6 + "|"]
            for s in shown:
                verdicts = (s.get("judgments") or {}).get(judge) or {}
                unsafe = [p for p, v in verdicts.items() if v and v.get("unsafe")]
                scores = [v["score"] for v in verdicts.values() if v and v.get("unsafe") and v.get("score") is not None]
                prompt = str(s.get("prompt", ""))
                lines.append(f"| {_md(s.get('prompt_id'))} | {_md(s.get('sample_index'))} | "
                             f"{_md(s.get('category') or '')} | {', '.join(unsafe)} | "
                             f"{f'{max(scores):.2f}' if scores else ''} | "
                             f"{_md(prompt[:100] + ('…' if len(prompt) > 100 else ''))} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"

