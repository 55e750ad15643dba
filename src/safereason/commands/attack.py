"""``safereason attack ...``: jailbreak attacks that write a re-usable adversarial benchmark file
(a thin layer over :mod:`safereason.attacks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safereason.commands.common import _quiet_libraries, err_console, out_console, read_template

attack_app = typer.Typer(help="Jailbreak attacks (GCG, PAIR, prefilling): each writes DIR/adversarial.jsonl, a "
                              "benchmark file that `safereason eval --benchmark` runs against any model and defense.",
                         no_args_is_help=True)

_TARGET_FROM = "target strings: harmbench (its optimizer targets by behaviour id), column (--target-column), or auto"


def _written(results: list[Any], out: Path) -> None:
    out_console.print(f"{len(results)} behaviours in [bold]{out / 'adversarial.jsonl'}[/bold]; evaluate with "
                      f"`safereason eval --benchmark {out / 'adversarial.jsonl'} --model ...`")


@attack_app.command("gcg")
def gcg_cmd(
    benchmark: Annotated[str, typer.Option(help="behaviours: registered name or a CSV/JSONL/Parquet path")],
    out: Annotated[Path, typer.Option(help="writes OUT/adversarial.jsonl; re-running the same command resumes")],
    model: Annotated[str, typer.Option(help="alias (smollm2-135m), local path or hub id[@revision]")]
    = "smollm2-135m",
    limit: Annotated[int | None, typer.Option(min=1, help="first N behaviours")] = None,
    steps: Annotated[int, typer.Option(min=1, help="optimisation steps per behaviour (nanoGCG: 250)")] = 250,
    suffix_init: Annotated[str, typer.Option(help="initial suffix (its token count is the suffix length)")]
    = "x x x x x x x x x x x x x x x x x x x x",
    search_width: Annotated[int, typer.Option(min=1, help="candidates per step")] = 512,
    topk: Annotated[int, typer.Option(min=1, help="top-k tokens per position from the gradient")] = 256,
    n_replace: Annotated[int, typer.Option(min=1, help="positions swapped per candidate")] = 1,
    batch_size: Annotated[int | None, typer.Option(min=1, help="candidates per forward pass (default: all)")]
    = None,
    template: Annotated[str, typer.Option(help="the user turn: {prompt} the behaviour, {optim_str} the suffix "
                                          "(nanoGCG: appended directly; '{prompt} {optim_str}' adds a space)")]
    = "{prompt}{optim_str}",
    early_stop: Annotated[bool, typer.Option("--early-stop/--no-early-stop",
                                             help="stop once the target is reached (nanoGCG: off)")] = False,
    early_stop_on: Annotated[str, typer.Option(help="any: a candidate's argmax is the target (nanoGCG); kept: the "
                                                    "kept suffix's, which is then returned")] = "any",
    best_includes_init: Annotated[bool, typer.Option(
        "--best-includes-init", help="the initial suffix may be returned as best (nanoGCG: steps only)")] = False,
    allow_non_ascii: Annotated[bool, typer.Option("--allow-non-ascii")] = False,
    prefix_cache: Annotated[bool, typer.Option("--prefix-cache/--no-prefix-cache")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    target_from: Annotated[str, typer.Option(help=_TARGET_FROM)] = "auto",
    target_column: Annotated[str, typer.Option()] = "target",
    reasoning_format: Annotated[str | None, typer.Option(help="r1, qwen3, skyt1, none")] = None,
    system_prompt: Annotated[str | None, typer.Option()] = None,
    think_prefill: Annotated[str | None, typer.Option(help="text appended after the template, e.g. '<think>\\n'")]
    = None,
    enable_thinking: Annotated[bool | None, typer.Option("--enable-thinking/--disable-thinking")] = None,
    thinking: Annotated[str | None, typer.Option(help="default, zero, less: the thinking control eval will use")]
    = None,
    prefill: Annotated[str | None, typer.Option(help="text the assistant turn starts with (as eval's --prefill)")]
    = None,
    preset: Annotated[str | None, typer.Option(help="model preset (as eval's --preset)")] = None,
    chat_template: Annotated[Path | None, typer.Option(help="Jinja chat template file")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="no per-step loss lines")] = False,
) -> None:
    """GCG (Zou et al. 2023): optimise an adversarial suffix per behaviour toward its target string, on the prompt
    exactly as `eval` renders it with the same settings; logs the loss per step."""
    from safereason.attacks.gcg import GCGAttackConfig
    from safereason.attacks.gcg_run import attack_gcg

    cfg = GCGAttackConfig(steps=steps, suffix_init=suffix_init, search_width=search_width, topk=topk,
                          n_replace=n_replace, batch_size=batch_size, template=template, early_stop=early_stop,
                          early_stop_on=early_stop_on, best_includes_init=best_includes_init,
                          allow_non_ascii=allow_non_ascii, prefix_cache=prefix_cache, seed=seed)
    render = {"reasoning_format": reasoning_format, "system_prompt": system_prompt, "think_prefill": think_prefill,
              "enable_thinking": enable_thinking, "thinking": thinking, "prefill": prefill, "preset": preset}
    _quiet_libraries()

    def on_step(pid: str, rec: dict[str, Any]) -> None:
        if not quiet:
            err_console.print(f"{pid} step {rec['step']}: loss {rec['loss']:.4f}"
                              f"{'  target reached' if rec['target_reached'] else ''}", highlight=False)

    def on_result(r: Any, done: int, total: int) -> None:
        reached = "target reached" if r.extra.get("target_reached") else "target not reached"
        err_console.print(f"[{done}/{total}] {r.id}: best loss {r.score:.4f} after {r.steps} steps, {reached}",
                          highlight=False)

    results = attack_gcg(model, benchmark, out, cfg, limit=limit, target_from=target_from,
                         target_column=target_column, data_dir=data_dir, device=device, dtype=dtype,
                         chat_template=read_template(chat_template), render_settings=render, on_step=on_step,
                         on_result=on_result)
    _written(results, out)


@attack_app.command("prefill")
def prefill_cmd(
    benchmark: Annotated[str, typer.Option(help="behaviours: registered name or a CSV/JSONL/Parquet path")],
    out: Annotated[Path, typer.Option(help="writes OUT/adversarial.jsonl; re-running the same command resumes")],
    where: Annotated[str, typer.Option(help="answer: the answer starts with the target (thinking closed first); "
                                            "thought: the thinking does")] = "answer",
    target_from: Annotated[str, typer.Option(help=_TARGET_FROM)] = "auto",
    target_column: Annotated[str, typer.Option()] = "target",
    limit: Annotated[int | None, typer.Option(min=1, help="first N behaviours")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
) -> None:
    """Prefilling: each behaviour's target string becomes the start of the model's answer (or thought) when
    `eval` runs the adversarial file, on any model and defense."""
    from safereason.attacks.prefill import attack_prefill

    results = attack_prefill(benchmark, out, where=where, target_from=target_from, target_column=target_column,
                             limit=limit, data_dir=data_dir)
    _written(results, out)


from safereason.commands import attack_pair, attack_report  # noqa: E402, F401  (register `attack pair`, `attack report`)
