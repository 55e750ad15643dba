"""``safereason data ...``: build training data (a thin layer over :mod:`safereason.data.safechain`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safereason.errors import SafereasonError

app = typer.Typer(no_args_is_help=True, help="Build training data from a teacher model (SafeChain's recipe).")


@app.command("safechain")
def safechain_cmd(
    prompts: Annotated[str, typer.Option(help="instruction pool: registered benchmark or a CSV/JSONL/Parquet file")],
    teacher: Annotated[str, typer.Option(help="teacher model: alias (smollm2-135m), local path or hub id")],
    out: Annotated[Path, typer.Option(help="data dir: teacher/ run, dataset.jsonl, card.json, README.md; "
                                           "re-running the same command resumes")],
    judge: Annotated[str, typer.Option(help="safety judge(s), comma-separated: every one must judge every sample "
                                            "safe")] = "rs-match",
    n: Annotated[int | None, typer.Option("--n", help="instructions drawn uniformly at random (default: all)")]
    = None,
    seed: Annotated[int, typer.Option(help="seeds the draw, the teacher's sampling and the pick")] = 0,
    k: Annotated[int, typer.Option("--k", min=1, help="teacher samples per instruction")] = 5,
    style: Annotated[str, typer.Option(help="reasoning (thinking + answer) or answer-only (WJ-40K-style "
                                            "baseline)")] = "reasoning",
    parts: Annotated[str, typer.Option(help="parts that must be judged safe: full, thinking, answer")] = "full",
    judge_opt: Annotated[list[str] | None, typer.Option(help="JUDGE.KEY=VALUE judge option (repeatable)")] = None,
    backend: Annotated[str | None, typer.Option(help="transformers (default), vllm, openai, ray")] = None,
    backend_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE backend option (repeatable)")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy")] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    top_k: Annotated[int | None, typer.Option()] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="as eval's")] = None,
    batch_size: Annotated[int | None, typer.Option(help="rows (prompt x sample) per generate call")] = None,
    reasoning_format: Annotated[str | None, typer.Option(help="r1, qwen3, skyt1, none")] = None,
    system_prompt: Annotated[str | None, typer.Option()] = None,
    think_prefill: Annotated[str | None,
                             typer.Option(help="text appended after the template, e.g. '<think>\\n'")] = None,
    enable_thinking: Annotated[bool | None, typer.Option("--enable-thinking/--disable-thinking")] = None,
    thinking: Annotated[str | None, typer.Option(help="default, zero, less, more")] = None,
    preset: Annotated[str | None, typer.Option(help="teacher preset, as eval's --preset")] = None,
    defense: Annotated[str | None, typer.Option(help="steer the teacher's traces: safethink, ...")] = None,
    defense_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE defense option (repeatable)")] = None,
    chat_template: Annotated[Path | None, typer.Option(help="Jinja chat template file")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
    prompt_column: Annotated[str | None, typer.Option(help="for a file pool")] = None,
    id_column: Annotated[str | None, typer.Option(help="for a file pool")] = None,
    category_column: Annotated[str | None, typer.Option(help="for a file pool")] = None,
    label_column: Annotated[str | None, typer.Option(help="for a file pool")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """SafeChain's recipe: the teacher answers each instruction K times; keep it iff all K are judged safe; pick one."""
    from safereason.commands.common import (
        _judge_options,
        _quiet_libraries,
        _split,
        err_console,
        out_console,
        read_template,
    )
    from safereason.data.safechain import STYLES, SafeChainRecipe, build_safechain, summarize

    if style not in STYLES:
        raise SafereasonError(f"--style must be {' or '.join(STYLES)}, not {style!r}")
    template_text = read_template(chat_template)
    values: dict[str, Any] = {
        "model": teacher, "backend": backend, "k": k, "judges": _split(judge), "parts": _split(parts),
        "judge_options": _judge_options(judge_opt),
        "backend_options": (_judge_options(backend_opt, default_judge="backend") or {}).get("backend"),
        "temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": max_new_tokens,
        "batch_size": batch_size, "reasoning_format": reasoning_format, "system_prompt": system_prompt,
        "think_prefill": think_prefill, "enable_thinking": enable_thinking, "thinking": thinking, "preset": preset,
        "defense": defense,
        "defense_options": (_judge_options(defense_opt, default_judge="defense") or {}).get("defense"),
        "chat_template": template_text, "device": device, "dtype": dtype,
    }
    columns = {"prompt_column": prompt_column, "id_column": id_column, "category_column": category_column,
               "label_column": label_column}
    recipe = SafeChainRecipe(prompts=prompts, out=out, n=n, seed=seed, style=style,  # type: ignore[arg-type]
                             data_dir=data_dir, columns={c: v for c, v in columns.items() if v is not None})
    _quiet_libraries()
    result = build_safechain({key: v for key, v in values.items() if v is not None}, recipe,
                             progress=not no_progress)
    summarize(result, lambda line: err_console.print(line, highlight=False, soft_wrap=True))
    out_console.print(f"dataset: [bold]{result.dataset}[/bold] ({len(result.rows)} rows; card: "
                      f"{out / 'card.json'}, {out / 'README.md'}; teacher run: {out / 'teacher'})")
    out_console.print(f"train on it: safereason train sft --model MODEL --data {result.dataset} --out DIR")


from safereason.commands.mix import mix_cmd  # noqa: E402  (its own module; registered here on `data`)

app.command("mix")(mix_cmd)
