"""A self-contained HTML report (and a Markdown twin) comparing one or more run dirs.

The HTML embeds its plots as base64 PNGs and its CSS inline, so the single file can be mailed or attached to an
issue. The page comes from the Jinja2 templates in ``report/templates/`` (see :mod:`safereason.report.page` for
the layout and how to add a section); this module only prepares each section's data. Model outputs are
adversarial text: autoescaping is on, so everything taken from a run dir is escaped, never inserted raw.

The pieces live in their own modules and are re-exported here: loading and labelling runs
(:mod:`~safereason.report.runs`), figures (:mod:`~safereason.report.figures`), tables
(:mod:`~safereason.report.tables`) and the Markdown writer (:mod:`~safereason.report.markdown`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from safereason.errors import SafereasonError
from safereason.report.figures import Plot, _asr_lines, make_plots
from safereason.report.markdown import render_markdown
from safereason.report.page import Section, data_uri, render_page
from safereason.report.runs import (
    PART_ORDER,
    Run,
    differing_keys,
    load_run,
    pick_judge,
    run_labels,
    run_partial,
    safethink_m,
    worst_samples,
)
from safereason.report.tables import MetricsTable, header_rows, metrics_tables, utility_rows
from safereason.rundir import atomic_write_text

__all__ = ["MetricsTable", "Plot", "Run", "_asr_lines", "build_report", "differing_keys", "header_rows",
           "load_run", "make_plots", "metrics_tables", "pick_judge", "render_html", "render_markdown",
           "render_page", "run_labels", "run_partial", "safethink_m", "utility_rows", "worst_samples"]

_PROMPT_LINE = 160  # characters of the prompt shown in a collapsed sample's summary line


# -- section data ----------------------------------------------------------------------------------------------


def runs_section(runs: Sequence[Run]) -> dict[str, Any]:
    """The run table: one column per run; rows whose values differ between runs are flagged."""
    rows = [{"name": name, "cells": values,
             "diff": len(runs) > 1 and len(set(values)) > 1 and name != "directory"}
            for name, values in header_rows(runs)]
    return {"labels": [r.label for r in runs], "rows": rows}


def metrics_section(runs: Sequence[Run], primary: str | None) -> dict[str, Any]:
    """One table per judge; a number cell splits "0.500 [0.42, 0.58]" into value and CI for the CI's styling."""
    tables = []
    for t in metrics_tables(runs):
        rows = []
        for row in t.rows:
            cells: list[dict[str, Any]] = [{"num": False, "text": text} for text, _ in row[:2]]
            for text, key in row[2:]:
                value, _, ci = text.partition(" ")
                cells.append({"num": True, "value": value, "ci": ci, "key": key})
            rows.append(cells)
        tables.append({"judge": t.judge, "primary": t.judge == primary, "head": t.head, "rows": rows})
    return {"confidence": f"{runs[0].config.get('confidence', 0.95):.0%}", "tables": tables}


def utility_section(runs: Sequence[Run]) -> list[dict[str, str]]:
    """:func:`utility_rows` as display text: accuracy with its CI, signed delta against the undefended run."""
    out = []
    for r in utility_rows(runs):
        ci = f" [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]" if r["ci"] else ""
        out.append({"run": r["run"], "judge": r["judge"], "part": r["part"], "accuracy": f"{r['accuracy']:.3f}{ci}",
                    "delta": "" if r["delta"] is None else f"{r['delta']:+.3f}", "n_prompts": str(r["n_prompts"])})
    return out


def badges(v: dict[str, Any] | None) -> list[dict[str, str]]:
    """The badges for one verdict: safe/unsafe with score, refused/complied, label, flags; "error" with its text
    as the tooltip; a dash when the judge left this part unjudged."""
    if not v:
        return [_badge("b-meta", "—")]
    if v.get("error"):
        return [_badge("b-error", "error", str(v["error"]))]
    out = []
    if v.get("unsafe") is not None:
        word = "unsafe" if v["unsafe"] else "safe"
        out.append(_badge(f"b-{word}", word + (f" {v['score']:.2f}" if v.get("score") is not None else "")))
    if v.get("refused") is not None:
        out.append(_badge("b-refused", "refused" if v["refused"] else "complied"))
    if v.get("label"):
        out.append(_badge("b-meta", str(v["label"])))
    if v.get("flags"):
        out.append(_badge("b-meta", ", ".join(v["flags"])))
    return out


def _badge(cls: str, text: str, title: str = "") -> dict[str, str]:
    return {"cls": cls, "text": text, "title": title}


def _text(title: str, text: Any, cls: str, empty: str) -> dict[str, Any]:
    return {"title": title, "text": text if isinstance(text, str) and text.strip() else None, "cls": cls,
            "empty": empty}


def sample_view(s: dict[str, Any], judge: str) -> dict[str, Any]:
    """One sample for the browser: a summary line (id, unsafe parts, top score, category, prompt start), then
    metadata, every judge's verdict per part, and the full texts."""
    judgments = s.get("judgments") or {}
    mine = judgments.get(judge) or {}
    scores = [v["score"] for v in mine.values() if v and v.get("unsafe") and v.get("score") is not None]
    prompt = " ".join(str(s.get("prompt", "")).split())
    status = s.get("split_status")
    meta = [f"label: {s.get('label') or 'none'}", f"split: {status}", f"finish: {s.get('finish_reason')}",
            f"tokens: {s.get('n_response_tokens')} (thinking {s.get('n_thinking_tokens')}, "
            f"answer {s.get('n_answer_tokens')})"]
    if s.get("control"):
        meta.append("control: " + json.dumps(s["control"], ensure_ascii=False))
    parts = [p for p in PART_ORDER if any(p in (j or {}) for j in judgments.values())]
    return {
        "pid": f"{s.get('prompt_id')} #{s.get('sample_index')}",
        "unsafe_parts": [p for p, v in mine.items() if v and v.get("unsafe")],
        "score": f"{max(scores):.2f}" if scores else "",
        "category": s.get("category") or "no category",
        "prompt_line": prompt[:_PROMPT_LINE] + ("…" if len(prompt) > _PROMPT_LINE else ""),
        "meta": meta,
        "parts": parts,
        "verdicts": [{"judge": j, "cells": [badges((judgments.get(j) or {}).get(p)) for p in parts]}
                     for j in judgments],
        "texts": [_text("prompt", s.get("prompt"), "prompt", "empty"),
                  _text("thinking", s.get("thinking"), "thinking",
                        "no thinking (split status: no_thinking)" if status == "no_thinking" else "empty"),
                  _text("answer", s.get("answer"), "answer",
                        "no answer: the thought was never closed" if status == "unclosed" else "empty")],
        "model_input": _text("prompt text", s.get("prompt_text"), "", "not recorded"),
    }


def samples_section(runs: Sequence[Run], judge: str | None, max_samples: int) -> dict[str, Any]:
    """Per run, its worst samples under ``judge`` (none without a safety judge)."""
    out = []
    for r in runs if judge is not None else ():
        shown, total = worst_samples(r, judge, max_samples)
        out.append({"label": r.label, "n_shown": len(shown), "total": total, "n_samples": len(r.samples),
                    "samples": [sample_view(s, judge) for s in shown]})
    return {"judge": judge, "runs": out}


# -- page ------------------------------------------------------------------------------------------------------


def render_html(runs: Sequence[Run], judge: str | None, figures: Sequence[Plot], max_samples: int) -> str:
    """The report page: runs, metrics, utility (when a run has accuracy numbers), plots, worst samples."""
    title = (f"safereason report: {runs[0].config.get('model')} on {runs[0].config.get('benchmark')}"
             if len(runs) == 1 else f"safereason report: {len(runs)} runs")
    subtitle = Markup("{} run{}; primary judge <code>{}</code>").format(len(runs), "s" if len(runs) != 1 else "",
                                                                         judge or "none")
    utility = utility_section(runs)
    sections = [
        Section("runs", "Runs", "section_runs.html.j2", runs_section(runs)),
        Section("metrics", "Metrics", "section_metrics.html.j2", metrics_section(runs, judge)),
        *([Section("utility", "Utility", "section_utility.html.j2", utility)] if utility else []),
        Section("plots", "Plots", "section_plots.html.j2",
                [{"caption": p.caption, "src": data_uri(p.png)} for p in figures]),
        Section("samples", "Worst samples", "section_samples.html.j2", samples_section(runs, judge, max_samples)),
    ]
    return render_page(title, sections, subtitle)


# -- entry point -----------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_report(run_dirs: list[Path], out: Path, *, judge: str | None = None, max_samples: int = 20,
                 allow_partial: bool = False) -> Path:
    """Write ``out`` (self-contained HTML), ``out``'s stem ``.md`` and its ``<stem>_plots/`` PNGs; return ``out``."""
    out = Path(out)
    if not run_dirs:
        raise SafereasonError("give at least one run dir")
    if out.suffix.lower() not in (".html", ".htm"):
        raise SafereasonError(f"--out {out} must end in .html (a Markdown copy is written next to it as .md)")
    if max_samples < 0:
        raise SafereasonError(f"--max-samples must be >= 0, got {max_samples}")
    runs = [load_run(Path(d), allow_partial=allow_partial) for d in run_dirs]
    for r, label in zip(runs, run_labels(runs), strict=True):
        r.label = f"{label} [PARTIAL]" if r.partial else label
    primary = pick_judge(runs, judge)
    figures = make_plots(runs, primary)

    md_path = out.with_suffix(".md")
    plot_dir = out.parent / f"{out.stem}_plots"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_dir.mkdir(exist_ok=True)
        names = {f"{p.name}.png" for p in figures}
        for old in plot_dir.glob("*.png"):  # figures of an earlier report that this one does not have
            if old.name not in names:
                old.unlink()
        for p in figures:
            _atomic_write_bytes(plot_dir / f"{p.name}.png", p.png)
        atomic_write_text(md_path, render_markdown(runs, primary, figures, plot_dir.name, max_samples))
        atomic_write_text(out, render_html(runs, primary, figures, max_samples))
    except OSError as err:
        raise SafereasonError(f"cannot write report {out}: {err.strerror or err}") from None
    return out
