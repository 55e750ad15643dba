"""The ``safereason`` command: a thin layer over the Python API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from safereason.commands.analyze import app as analyze_app
from safereason.commands.attack import attack_app
from safereason.commands.card import app as card_app
from safereason.commands.common import (
    _judge_options,
    _quiet_libraries,
    _split,
    err_console,
    out_console,
    read_template,
)
from safereason.commands.compare import app as compare_app
from safereason.commands.data import app as data_app
from safereason.commands.recipe import app as recipe_app
from safereason.commands.serve import app as serve_app
from safereason.commands.steer import app as steer_app
from safereason.commands.train import app as train_app
from safereason.errors import SafereasonError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure and improve the safety of large reasoning models.")


def _show(result: Any, title: str, max_judge_errors: int | None = None) -> None:
    """Print the metrics; end with the count of judge errors, exiting 3 when there are more than allowed."""
    from safereason.report import metrics_table
    from safereason.report.summary import extra_tables

    partial = getattr(result, "partial", None)
    if partial:
        title = f"PARTIAL ({partial['missing_samples']} samples, {partial['missing_judgments']} judgments missing): " \
            + title
    out_console.print(metrics_table(result.metrics, title=title))
    for table in extra_tables(result.metrics):
        out_console.print(table)
    out_console.print(f"run dir: [bold]{result.run_dir}[/bold]  (samples.jsonl, metrics.json, summary.md)")
    errors = getattr(result, "judge_errors", None) or {}
    n_errors = sum(n for parts in errors.values() for n in parts.values())
    if n_errors:
        counts = ", ".join(f"{j} x {p}: {n}" for j, parts in errors.items() for p, n in parts.items())
        err_console.print(f"{n_errors} judge errors ({counts}); re-run to retry them", highlight=False,
                          soft_wrap=True)
        if max_judge_errors is not None and n_errors > max_judge_errors:
            raise typer.Exit(JUDGE_ERRORS_EXIT)


#: exit status of eval/judge/metrics when more verdicts than --max-judge-errors are errors (outputs are written)
JUDGE_ERRORS_EXIT = 3
_MAX_JUDGE_ERRORS_HELP = (f"exit {JUDGE_ERRORS_EXIT} (after writing the results) when more verdicts than this are "
                          "judge errors; a re-run retries them")
_ALLOW_PARTIAL_HELP = "compute from an incomplete run (killed during generation or judging), marked PARTIAL"


@app.command("eval")
def eval_cmd(
    model: Annotated[str | None, typer.Option(help="alias (smollm2-135m), local path or hub id[@revision]")] = None,
    benchmark: Annotated[str | None, typer.Option(help="registered name or a CSV/JSONL/Parquet path")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config; flags override its keys")] = None,
    backend: Annotated[str | None, typer.Option(help="transformers (default), vllm, openai")] = None,
    backend_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE backend option (repeatable)")] = None,
    limit: Annotated[int | None, typer.Option(help="first N prompts")] = None,
    k: Annotated[int | None, typer.Option("--k", help="samples per prompt")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy")] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    top_k: Annotated[int | None, typer.Option()] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        help="default 512; 16000 (SafeChain's) with a model preset or --thinking more")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option(help="rows (prompt x sample) per generate call")] = None,
    judge: Annotated[str | None, typer.Option(help="judge name(s), comma-separated")] = None,
    judge_opt: Annotated[list[str] | None, typer.Option(help="JUDGE.KEY=VALUE judge option (repeatable)")] = None,
    parts: Annotated[str | None, typer.Option(help="thinking,answer,full")] = None,
    reasoning_format: Annotated[str | None, typer.Option(help="r1, qwen3, skyt1, none")] = None,
    system_prompt: Annotated[str | None, typer.Option()] = None,
    think_prefill: Annotated[str | None,
                             typer.Option(help="text appended after the template, e.g. '<think>\\n'")] = None,
    enable_thinking: Annotated[bool | None, typer.Option("--enable-thinking/--disable-thinking")] = None,
    thinking: Annotated[str | None, typer.Option(help="default, zero (ZeroThink), less (LessThink), more (MoreThink)")]
    = None,
    think_budget: Annotated[int | None, typer.Option(help="MoreThink: max thinking tokens (10000)")] = None,
    think_rounds: Annotated[int | None, typer.Option(help="MoreThink: max forced rethink rounds (10)")] = None,
    morethink_budget: Annotated[str | None, typer.Option(
        help="MoreThink budgets: safechain (SafeChain's: answer gets max-new-tokens - think-budget) or shared")] = None,
    preset: Annotated[str | None, typer.Option(
        help="model preset (SafeChain's settings; default: from the hub id; `none` turns it off; see `list`)")] = None,
    prefill: Annotated[str | None, typer.Option(help="text the assistant turn starts with, after any control")]
    = None,
    defense: Annotated[str | None, typer.Option(help="safethink, zerothink, lessthink, safepath, adashield")] = None,
    defense_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE defense option (repeatable)")] = None,
    chat_template: Annotated[Path | None, typer.Option(help="Jinja chat template file")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
    prompt_column: Annotated[str | None, typer.Option()] = None,
    id_column: Annotated[str | None, typer.Option()] = None,
    category_column: Annotated[str | None, typer.Option()] = None,
    label_column: Annotated[str | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16")] = None,
    n_bootstrap: Annotated[int | None, typer.Option()] = None,
    out: Annotated[Path | None, typer.Option(help="run dir; re-running the same command resumes")] = None,
    on_long_prompt: Annotated[str | None, typer.Option(
        help="a prompt whose tokens + max-new-tokens exceed the model's context: error (default, before any "
             "generation) or skip (recorded as skipped, left out of the metrics)")] = None,
    max_judge_errors: Annotated[int, typer.Option(min=0, help=_MAX_JUDGE_ERRORS_HELP)] = 0,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Sample K responses per prompt, split thinking from answer, judge, and report Safe@1/Safe@K/ConsSafe@K."""
    from safereason.config import load_config_file, make_config
    from safereason.runner import evaluate

    template_text = read_template(chat_template)
    values: dict[str, Any] = {
        "model": model, "benchmark": benchmark, "limit": limit, "k": k, "temperature": temperature,
        "top_p": top_p, "top_k": top_k, "max_new_tokens": max_new_tokens, "stop": stop or None, "seed": seed,
        "batch_size": batch_size, "judges": _split(judge), "parts": _split(parts),
        "judge_options": _judge_options(judge_opt), "backend": backend,
        "backend_options": (_judge_options(backend_opt, default_judge="backend") or {}).get("backend"),
        "reasoning_format": reasoning_format, "system_prompt": system_prompt, "think_prefill": think_prefill,
        "enable_thinking": enable_thinking, "thinking": thinking, "think_budget": think_budget,
        "think_rounds": think_rounds, "morethink_budget": morethink_budget, "preset": preset,
        "prefill": prefill, "defense": defense,
        "defense_options": (_judge_options(defense_opt, default_judge="defense") or {}).get("defense"),
        "chat_template": template_text, "data_dir": data_dir,
        "prompt_column": prompt_column, "id_column": id_column, "category_column": category_column,
        "label_column": label_column, "device": device, "dtype": dtype, "n_bootstrap": n_bootstrap, "out": out,
        "on_long_prompt": on_long_prompt,
    }
    values = {key: v for key, v in values.items() if v is not None}
    cfg = load_config_file(config, **values) if config is not None else make_config(**values)
    _quiet_libraries()
    result = evaluate(cfg, progress=not no_progress)
    _show(result, f"{cfg.model} on {cfg.benchmark} (K={cfg.k})", max_judge_errors)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="folder of the demo's two run dirs (undefended, safethink)")]
    = Path("runs/demo"),
    k: Annotated[int, typer.Option("--k", min=1)] = 2,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """The embedded default end to end: smollm2-135m-think on the built-in prompts, undefended and under SafeThink,
    judged by smol-guard and rs-match, with SafeThink's change and its paired CI."""
    from safereason.commands.common import print_comparison
    from safereason.demo import DEMO_MODEL, run_demo

    _quiet_libraries()
    err_console.print(f"[bold]safereason demo[/bold]: {DEMO_MODEL} on the built-in smoke prompts (12 harmful, 6 "
                      f"benign), K={k}, undefended and under SafeThink (scorer smol-guard)")
    result = run_demo(out, k=k, max_new_tokens=max_new_tokens, progress=not no_progress)
    _show(result.undefended, f"demo, undefended: {DEMO_MODEL} (K={k})")
    _show(result.safethink, f"demo, SafeThink (scorer smol-guard): {DEMO_MODEL} (K={k})")
    print_comparison(result.comparison)


@app.command("sweep")
def sweep_cmd(
    config: Annotated[Path, typer.Option(help="sweep YAML: eval keys + grid: {key: [values]} + out: DIR")],
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Run an eval per grid point (each resumable), then write one combined summary and report."""
    from rich.table import Table

    from safereason.report.summary import fmt_metric
    from safereason.sweep import load_sweep, sweep

    base, grid, out = load_sweep(config)
    _quiet_libraries()

    def on_point(i: int, n: int, point: dict[str, Any]) -> None:
        err_console.print(f"[bold]point {i + 1}/{n}[/bold]: " + ", ".join(f"{k}={v}" for k, v in point.items()))

    result = sweep(base, grid, out, progress=not no_progress, on_point=on_point)
    table = Table(title=f"sweep {out}", title_justify="left")
    for col in [*grid, "judge", "part", "Safe@1", "Safe@K", "ConsSafe@K"]:
        table.add_column(col)
    for d in result.points:
        for judge, parts in d["metrics"].items():
            for part, e in parts.items():
                if e.get("safe@1") is None and e.get("refusal"):
                    continue
                table.add_row(*(str(d["point"][k]) for k in grid), judge, part,
                              *(fmt_metric(e, m) for m in ("safe@1", "safe@k", "conssafe@k")))
    out_console.print(table)
    out_console.print(f"sweep dir: [bold]{out}[/bold] (sweep.json, summary.md"
                      + (f", {result.report.name})" if result.report else ")"))


@app.command("judge")
def judge_cmd(
    run_dir: Annotated[Path, typer.Argument(help="an existing run dir")],
    judge: Annotated[str, typer.Option(help="judge name(s), comma-separated")],
    judge_opt: Annotated[list[str] | None, typer.Option(help="JUDGE.KEY=VALUE judge option (repeatable)")] = None,
    parts: Annotated[str | None, typer.Option(help="thinking,answer,full")] = None,
    max_judge_errors: Annotated[int, typer.Option(min=0, help=_MAX_JUDGE_ERRORS_HELP)] = 0,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help=_ALLOW_PARTIAL_HELP)] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Add judgments to a run without regenerating (retrying verdicts that are errors), then recompute its metrics."""
    from safereason.runner import judge_run

    _quiet_libraries()
    result = judge_run(run_dir, _split(judge) or [], parts=_split(parts), judge_options=_judge_options(judge_opt),
                       progress=not no_progress, allow_partial=allow_partial)
    _show(result, f"{run_dir}", max_judge_errors)


@app.command("metrics")
def metrics_cmd(
    run_dir: Annotated[Path, typer.Argument(help="an existing run dir")],
    n_bootstrap: Annotated[int | None, typer.Option()] = None,
    max_judge_errors: Annotated[int, typer.Option(min=0, help=_MAX_JUDGE_ERRORS_HELP)] = 0,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help=_ALLOW_PARTIAL_HELP)] = False,
) -> None:
    """Recompute metrics.json and summary.md from the records of a run (refused while records are missing)."""
    from safereason.runner import metrics_run

    _show(metrics_run(run_dir, n_bootstrap=n_bootstrap, allow_partial=allow_partial), f"{run_dir}", max_judge_errors)


@app.command("judge-agreement")
def judge_agreement_cmd(
    dataset: Annotated[str, typer.Option(help="harmbench-val, xstest-completions, jbb-judge-comparison or a file")],
    judge: Annotated[str | None, typer.Option(help="judge name(s) to run, comma-separated")] = None,
    verdict_column: Annotated[list[str] | None, typer.Option(
        help="score a verdict column shipped in the file instead of running a judge (repeatable; 'all')")] = None,
    judge_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE option of --judge (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="write one JSON line per item here")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="local data dir (env SAFEREASON_DATA)")] = None,
    limit: Annotated[int | None, typer.Option(help="first N items")] = None,
    kind: Annotated[str | None, typer.Option(help="for a file: harm (label = unsafe) or refusal (label = refused)")]
    = None,
    text_column: Annotated[str, typer.Option(help="for a file: the labelled response")] = "text",
    label_column: Annotated[str, typer.Option(help="for a file: the human label")] = "label",
    prompt_column: Annotated[str, typer.Option(help="for a file: the prompt (optional column)")] = "prompt",
    id_column: Annotated[str | None, typer.Option(help="for a file: an id column")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Measure a judge against human labels: accuracy, precision, recall, F1, Pearson, Cohen's kappa."""
    import json

    from safereason.agreement import agreement_metrics, results_from_column, run_judge
    from safereason.data.labelled import VERDICT_COLUMNS, load_labelled
    from safereason.report import agreement_table
    from safereason.rundir import atomic_write_text

    judges = _split(judge) or []
    columns = list(verdict_column or [])
    if not judges and not columns:
        raise SafereasonError("give --judge NAME to run a judge, or --verdict-column COL to score a column of the file")
    if kind not in (None, "harm", "refusal"):
        raise SafereasonError(f"--kind must be harm or refusal, not {kind!r}")
    if limit is not None and limit < 1:
        raise SafereasonError("--limit must be at least 1")
    if len(judges) > 1 and judge_opt:
        raise SafereasonError("--judge-opt applies to a single --judge")
    _quiet_libraries()
    ls = load_labelled(dataset, data_dir=data_dir, kind=kind, text_column=text_column,  # type: ignore[arg-type]
                       label_column=label_column, prompt_column=prompt_column, id_column=id_column, limit=limit)
    if columns == ["all"]:
        columns = list(VERDICT_COLUMNS.get(ls.name, ())) or sorted({c for it in ls.items for c in it.verdicts})
    options = (_judge_options(judge_opt, default_judge=judges[0]) or {}) if judges else {}
    runs = {}
    for name in judges:
        runs[name] = run_judge(name, ls, options=options.get(name), batch_size=batch_size, progress=not no_progress)
    for col in columns:
        runs[f"column:{col}"] = results_from_column(ls, col)
    metrics = {name: agreement_metrics(res) for name, res in runs.items()}
    if out is not None:
        lines = [json.dumps({"judge": name, **r.to_json()}, ensure_ascii=False) + "\n"
                 for name, res in runs.items() for r in res]
        try:
            atomic_write_text(out, "".join(lines))
        except OSError as e:
            raise SafereasonError(f"cannot write {out}: {e.strerror}") from None
    if json_output:
        out_console.print_json(json.dumps({"dataset": ls.name, "kind": ls.kind, "positive": ls.positive,
                                           "source": ls.source, "judges": metrics}))
    else:
        out_console.print(agreement_table(metrics, title=f"agreement with human labels: {ls.name} "
                                          f"({len(ls.items)} items; positive = {ls.positive})"))
        if out is not None:
            out_console.print(f"per-item results: [bold]{out}[/bold]")


@app.command("report")
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="one or more run dirs to compare")],
    out: Annotated[Path, typer.Option(help="HTML file; a Markdown copy (.md) and <stem>_plots/ go next to it")]
    = Path("report.html"),
    judge: Annotated[str | None, typer.Option(help="judge for plots and samples (default: first safety judge)")]
    = None,
    max_samples: Annotated[int, typer.Option(min=0, help="worst unsafe samples shown per run")] = 20,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="include runs that are unfinished or "
                                                "whose metrics were computed with --allow-partial, marked PARTIAL")]
    = False,
) -> None:
    """Compare runs in one self-contained HTML page: settings, metrics with CIs, plots, worst samples."""
    from safereason.report.html import build_report

    path = build_report(list(run_dirs), out, judge=judge, max_samples=max_samples, allow_partial=allow_partial)
    out_console.print(f"report: [bold]{path}[/bold]  (and {path.with_suffix('.md')})")


@app.command("list")
def list_cmd() -> None:
    """List registered models, benchmarks, judges and reasoning formats."""
    from safereason.data import BENCHMARKS
    from safereason.judges import JUDGES
    from safereason.models.adapters import ADAPTED
    from safereason.models.presets import PRESETS
    from safereason.models.resolve import EMBEDDED
    from safereason.reasoning import FORMATS

    out_console.print("[bold]models[/bold]: " + ", ".join([*EMBEDDED, *ADAPTED]) + " (or any local path / hub id)")
    out_console.print("[bold]model presets[/bold] (SafeChain's settings, chosen from the hub id; any flag "
                      "overrides; sampling stays temperature 0.6, top-p 0.95, K 5):", highlight=False)
    for p in PRESETS.values():
        out_console.print(f"  {p.model}: {p.describe()}", highlight=False, soft_wrap=True)
    out_console.print("[bold]benchmarks[/bold]: " + ", ".join(BENCHMARKS.names()) + " (or a local file)")
    out_console.print("[bold]judges[/bold]: " + ", ".join(JUDGES.names()))
    out_console.print("[bold]reasoning formats[/bold]: " + ", ".join(FORMATS.names()))


app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")
app.add_typer(compare_app)
app.add_typer(steer_app)
app.add_typer(serve_app)
app.add_typer(attack_app, name="attack")
app.add_typer(analyze_app, name="analyze")
app.add_typer(card_app)


def _interrupted() -> None:
    err_console.print("interrupted; re-run the same command to resume", highlight=False)
    sys.exit(130)


def main() -> None:
    """Run the CLI. Typer's standalone mode is off so that Ctrl-C reaches us (it would print "Aborted!" or exit
    silently); usage errors are then shown here as typer shows them."""
    try:
        from typer._click.exceptions import ClickException  # typer vendors click since 0.2x
    except ImportError:  # pragma: no cover - older typer runs on click itself
        from click.exceptions import ClickException
    try:
        rc = app(standalone_mode=False)
    except SafereasonError as e:
        err_console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):  # typer.Abort: click turned a KeyboardInterrupt into one
        _interrupted()
    except ClickException as e:
        try:
            from typer import rich_utils

            rich_utils.rich_format_error(e)
        except ImportError:  # pragma: no cover - typer without rich
            e.show()
        sys.exit(e.exit_code)
    if rc == 130:  # typer turns KeyboardInterrupt into Exit(130); no command exits 130 itself
        _interrupted()
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
