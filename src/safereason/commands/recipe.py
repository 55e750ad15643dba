"""``safereason recipe ...``: end-to-end recipes (a thin layer over :mod:`safereason.recipes`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from safereason.recipes.common import RecipeConfigBase

R = TypeVar("R")

app = typer.Typer(no_args_is_help=True, help="End-to-end recipes: eval, data, training, eval, table.")

# the options every recipe has
ConfigOption = Annotated[Path | None, typer.Option(help="YAML config (keys as the flags); flags override it")]
SeedOption = Annotated[int | None, typer.Option()]
DataDirOption = Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu (default), cuda, auto")]
PrintConfigOption = Annotated[bool, typer.Option("--print-config", help="print the resolved config as YAML and exit")]
NoProgressOption = Annotated[bool, typer.Option("--no-progress")]


def _run(cfg: RecipeConfigBase, run: Callable[..., R], *, print_config: bool, no_progress: bool) -> R | None:
    """``--print-config`` prints ``cfg`` as YAML (None); else ``run(cfg)`` with its progress lines on stderr."""
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return None
    from safereason.commands.common import _quiet_libraries, err_console

    _quiet_libraries()
    return run(cfg, progress=not no_progress,
               echo=lambda line: err_console.print(line, highlight=False, soft_wrap=True, markup=False))


def _show(report: Path, summary: str) -> None:
    """The recipe's report (table or card) on stdout, then a line saying where its outputs are."""
    from safereason.commands.common import out_console

    out_console.print(report.read_text(encoding="utf-8"), highlight=False, markup=False, soft_wrap=True)
    out_console.print(summary, highlight=False)


@app.command("safechain")
def safechain_cmd(
    out: Annotated[Path | None, typer.Option(help="recipe dir (a stage per sub-dir, table.md); re-running the "
                                                  "same command skips finished stages")] = None,
    config: ConfigOption = None,
    student: Annotated[str | None, typer.Option(help="model evaluated and fine-tuned (default smollm2-135m)")]
    = None,
    teacher: Annotated[str | None, typer.Option(help="model that writes the traces (default: the student)")] = None,
    heldout: Annotated[str | None, typer.Option(help="held-out harmful set (default strongreject-small)")] = None,
    n_heldout: Annotated[int | None, typer.Option(help="held-out prompts drawn (default 20)")] = None,
    utility: Annotated[str | None, typer.Option(help="utility set graded by math-verify (default gsm8k)")] = None,
    n_utility: Annotated[int | None, typer.Option(help="utility prompts drawn (default 10)")] = None,
    train_prompts: Annotated[str | None, typer.Option(help="training pool, held-out prompts removed (default "
                                                           "advbench)")] = None,
    n_train: Annotated[int | None, typer.Option(help="instructions drawn from the pool (default 48)")] = None,
    k: Annotated[int | None, typer.Option("--k", help="samples per prompt in both evals (default 3)")] = None,
    teacher_k: Annotated[int | None, typer.Option(help="teacher samples per instruction (default 3)")] = None,
    teacher_defense: Annotated[str | None, typer.Option(help="defense on the teacher, e.g. safethink")] = None,
    judge: Annotated[str | None, typer.Option(help="safety judge(s), comma-separated (default smol-guard,rs-match)")]
    = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="held-out and teacher samples (default 128)")] = None,
    epochs: Annotated[float | None, typer.Option(help="SFT epochs (default 3)")] = None,
    lr: Annotated[float | None, typer.Option(help="LoRA learning rate (default 2e-4)")] = None,
    seed: SeedOption = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
    print_config: PrintConfigOption = False,
    no_progress: NoProgressOption = False,
) -> None:
    """SafeChain on one machine: baseline eval, safe traces from a teacher, LoRA SFT, eval, before/after table."""
    from safereason.commands.common import _split
    from safereason.recipes import load_recipe_config, run_recipe

    values: dict[str, Any] = {
        "out": out, "student": student, "teacher": teacher, "heldout": heldout, "n_heldout": n_heldout,
        "utility": utility, "n_utility": n_utility, "train_prompts": train_prompts, "n_train": n_train, "k": k,
        "teacher_k": teacher_k, "teacher_defense": teacher_defense, "judges": _split(judge),
        "max_new_tokens": max_new_tokens, "epochs": epochs, "lr": lr, "seed": seed, "data_dir": data_dir,
        "device": device,
    }
    result = _run(load_recipe_config(config, **values), run_recipe, print_config=print_config,
                  no_progress=no_progress)
    if result is not None:
        _show(result.table_md, f"table: {result.table_md} (and {result.table_md.with_suffix('.json')})")


@app.command("think")
def think_cmd(
    out: Annotated[Path | None, typer.Option(help="recipe dir (prompts, teacher/, data/, sft/, adapter/, measure/, "
                                                  "CARD.md); re-running the same command skips finished stages")]
    = None,
    config: ConfigOption = None,
    base: Annotated[str | None, typer.Option(help="model taught to think (default smollm2-135m)")] = None,
    teacher: Annotated[str | None, typer.Option(help="model writing the answers (default: the base)")] = None,
    prompts: Annotated[str | None, typer.Option(help="'builtin' (default) or a JSONL file: prompt, label "
                                                     "(benign/harmful), optional id, category, thought, answer")]
    = None,
    seed: SeedOption = None,
    epochs: Annotated[float | None, typer.Option(help="SFT epochs (default 3)")] = None,
    lr: Annotated[float | None, typer.Option(help="LoRA learning rate (default 3e-4)")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (default 8)")] = None,
    teacher_max_new_tokens: Annotated[int | None, typer.Option(help="tokens per teacher reply (default 64)")]
    = None,
    measure_k: Annotated[int | None, typer.Option(help="samples per smoke prompt in the measure (default 5)")]
    = None,
    n_xstest: Annotated[int | None, typer.Option(help="XSTest safe prompts measured, the first N (default 50; "
                                                      "0 skips)")] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
    print_config: PrintConfigOption = False,
    no_progress: NoProgressOption = False,
) -> None:
    """Teach a chat model to think, close its thought, then answer (how smollm2-135m-think's adapter is made)."""
    from safereason.recipes.think import run_think
    from safereason.recipes.think_config import load_think_config

    values: dict[str, Any] = {
        "out": out, "base": base, "teacher": teacher, "prompts": prompts, "seed": seed, "epochs": epochs, "lr": lr,
        "lora_r": lora_r, "teacher_max_new_tokens": teacher_max_new_tokens, "measure_k": measure_k,
        "n_xstest": n_xstest, "data_dir": data_dir, "device": device,
    }
    cfg = load_think_config(config, **values)
    result = _run(cfg, run_think, print_config=print_config, no_progress=no_progress)
    if result is not None:
        _show(result.card, f"card: {result.card}; adapter: {cfg.out / 'adapter'}")
