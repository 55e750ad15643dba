"""``safereason attack report``: attack success from eval run dirs of adversarial files (a thin layer over
:mod:`safereason.attacks.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safereason.commands.attack import attack_app
from safereason.commands.common import out_console


@attack_app.command("report")
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="eval run dirs of DIR/adversarial.jsonl files")],
    out: Annotated[Path, typer.Option(help="writes attack_report.{md,json,html} and success_vs_budget.png")],
    judge: Annotated[str | None, typer.Option(help="the safety judge (default: the first with safety metrics)")]
    = None,
    part: Annotated[str | None, typer.Option(help="answer (default when judged), full or thinking")] = None,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="report unfinished runs, marked")] = False,
) -> None:
    """Attack success rate (1 - Safe@1, and 1 - Safe@K) per attack, model and defense with CIs, budget spent per
    success, and the success-vs-budget curve (GCG steps, PAIR depth)."""
    from safereason.attacks.report import build_attack_report, render_markdown

    rows = build_attack_report(run_dirs, out, judge=judge, part=part, allow_partial=allow_partial)
    out_console.print(render_markdown(rows, []), highlight=False, markup=False)
    out_console.print(f"attack report: [bold]{out / 'attack_report.html'}[/bold] (and .md, .json)")
