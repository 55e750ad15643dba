"""``safereason analyze tradeoff|lengths|representations RUN_DIR... --out DIR`` (a thin layer over
:mod:`safereason.analysis`): each writes ``<kind>.png``, ``<kind>.json`` and ``<kind>.html`` under ``--out``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="TARS's analyses over eval run dirs: trade-off, lengths, representations.")

RunDirs = Annotated[list[Path], typer.Argument(help="eval run dirs (with metrics.json)")]
Out = Annotated[Path, typer.Option(help="output dir for PNG + JSON + HTML")]
GroupBy = Annotated[str, typer.Option(help="pool run dirs by this config key (model), or 'run' for one per dir")]
Labels = Annotated[str | None, typer.Option(help="comma-separated group name per run dir (e.g. SFT,DPO,TARS)")]
Partial = Annotated[bool, typer.Option("--allow-partial", help="read unfinished runs too")]


def _groups(run_dirs: list[Path], group_by: str, labels: str | None, allow_partial: bool) -> list:
    from safereason.analysis import load_groups
    from safereason.commands.common import _split

    return load_groups(run_dirs, group_by=group_by, labels=_split(labels), allow_partial=allow_partial)


def _done(paths: dict[str, Path]) -> None:
    from safereason.commands.common import out_console

    out_console.print(f"wrote [bold]{paths['html']}[/bold] ({paths['png'].name}, {paths['json'].name})")


@app.command("tradeoff")
def tradeoff_cmd(run_dirs: RunDirs, out: Out, group_by: GroupBy = "model", labels: Labels = None,
                 safety_judge: Annotated[str | None, typer.Option(help="default: the first with unsafe verdicts")]
                 = None,
                 refusal_judge: Annotated[str | None, typer.Option(help="default: the first with refused verdicts")]
                 = None,
                 part: Annotated[str | None, typer.Option(help="judged part (default answer, else full)")] = None,
                 n_bootstrap: Annotated[int, typer.Option(min=0)] = 1000, seed: int = 0,
                 allow_partial: Partial = False) -> None:
    """Safe@1 on harmful prompts vs compliance on harmless / ambiguous ones, per model, with CIs and frontier."""
    from safereason.analysis import plot_tradeoff, tradeoff, write_analysis

    groups = _groups(run_dirs, group_by, labels, allow_partial)
    result = tradeoff(groups, safety_judge=safety_judge, refusal_judge=refusal_judge, part=part,
                      n_bootstrap=n_bootstrap, seed=seed)
    _done(write_analysis("tradeoff", result, plot_tradeoff(result), out, [str(d) for d in run_dirs]))


@app.command("lengths")
def lengths_cmd(run_dirs: RunDirs, out: Out, group_by: GroupBy = "model", labels: Labels = None,
                n_bootstrap: Annotated[int, typer.Option(min=0)] = 1000, seed: int = 0,
                allow_partial: Partial = False) -> None:
    """Thinking length by prompt label and category, per model."""
    from safereason.analysis import lengths, plot_lengths, write_analysis

    groups = _groups(run_dirs, group_by, labels, allow_partial)
    result = lengths(groups, n_bootstrap=n_bootstrap, seed=seed)
    _done(write_analysis("lengths", result, plot_lengths(result), out, [str(d) for d in run_dirs]))


@app.command("representations")
def representations_cmd(
    run_dirs: RunDirs, out: Out, group_by: GroupBy = "model", labels: Labels = None,
    model: Annotated[str | None, typer.Option(help="embed with this model instead of each run's (one group only)")]
    = None,
    negative: Annotated[str, typer.Option(help="harmless side: auto (ambiguous if any, else benign), ambiguous, "
                                               "benign, harmless")] = "auto",
    max_prompts: Annotated[int, typer.Option(min=2, help="at most N prompts of each kind (seeded draw)")] = 200,
    projection: Annotated[str, typer.Option(help="pca or umap")] = "pca",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    seed: int = 0, allow_partial: Partial = False,
) -> None:
    """Last-layer hidden states of harmful vs ambiguous prompts: a 2-D plot and a probe AUROC per model."""
    from safereason.analysis import group_separation, plot_separation, write_analysis
    from safereason.commands.common import _quiet_libraries
    from safereason.errors import SafereasonError

    groups = _groups(run_dirs, group_by, labels, allow_partial)
    if model is not None and len(groups) > 1:
        raise SafereasonError(f"--model applies to one group; these run dirs make {len(groups)}")
    _quiet_libraries()
    results = [group_separation(g, model=model, negative=negative, max_prompts=max_prompts, projection=projection,
                                seed=seed, device=device, batch_size=batch_size) for g in groups]
    result = {"groups": results}
    _done(write_analysis("representations", result, plot_separation(results), out, [str(d) for d in run_dirs]))
