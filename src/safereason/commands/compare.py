"""``safereason compare RUN_DIR...``: the SafeChain table (a thin layer over :mod:`safereason.compare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from safereason.errors import SafereasonError

app = typer.Typer(help="Compare models: safety and utility side by side, with deltas against a baseline.")


@app.command("compare")
def compare_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="finished run dirs: safety and utility runs of each model")],
    label: Annotated[list[str] | None, typer.Option(help="model name of each run dir, in order (default: the "
                                                         "run's model); runs with one label share a row")] = None,
    baseline: Annotated[str | None, typer.Option(help="model label or run dir the deltas are against (default: "
                                                      "the first model)")] = None,
    part: Annotated[str, typer.Option(help="part the safety metrics are read for: full, thinking, answer")] = "full",
    judge: Annotated[str | None, typer.Option(help="safety judges to show, comma-separated (default: all)")] = None,
    n_bootstrap: Annotated[int, typer.Option(min=0, help="resamples for the CIs of the differences")] = 1000,
    out: Annotated[Path | None, typer.Option(help="write the table as Markdown (FILE.md) and JSON (FILE.json)")]
    = None,
) -> None:
    """The SafeChain table: per model Safe@1/Safe@K/ConsSafe@K and utility accuracy, deltas with bootstrap CIs."""
    from safereason.commands.common import _split, out_console, print_comparison
    from safereason.compare import compare_runs, to_markdown
    from safereason.rundir import atomic_write_text

    if out is not None and out.suffix not in (".md", ".json"):
        raise SafereasonError(f"--out {out}: give a .md or .json file (both are written)")
    cmp = compare_runs(run_dirs, labels=label, baseline=baseline, part=part, judges=_split(judge),
                       n_bootstrap=n_bootstrap)
    print_comparison(cmp)
    if out is not None:
        try:
            atomic_write_text(out.with_suffix(".md"), to_markdown(cmp))
            atomic_write_text(out.with_suffix(".json"), json.dumps(cmp.to_json(), indent=2) + "\n")
        except OSError as e:
            raise SafereasonError(f"cannot write {out}: {e.strerror}") from None
        out_console.print(f"table: [bold]{out.with_suffix('.md')}[/bold] (and {out.with_suffix('.json')})")
