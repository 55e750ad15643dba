"""``safereason train ...``: fine-tune a model (a thin layer over :mod:`safereason.train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safereason.errors import SafereasonError

app = typer.Typer(no_args_is_help=True, help="Fine-tune a model with TRL: SFT, GRPO (TARS), DPO.")


def _read_template(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SafereasonError(f"cannot read chat template {path}: {e}") from None


def _trl_options(pairs: list[str] | None) -> dict[str, Any] | None:
    """``KEY=VALUE`` (values are YAML) -> {KEY: VALUE}."""
    import yaml

    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SafereasonError(f"--trl-opt {pair!r}: expected KEY=VALUE, e.g. warmup_steps=0.03")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key] = value
    return out


@app.command("sft")
def sft_cmd(
    model: Annotated[str | None, typer.Option(help="student: alias (smollm2-135m), local path or hub id")] = None,
    data: Annotated[Path | None, typer.Option(help="JSONL/Parquet rows: messages [user, assistant] (as `data "
                                                   "safechain` writes) or prompt/completion")] = None,
    out: Annotated[Path | None, typer.Option(help="run dir; re-running the same command resumes")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (keys as the flags); flags override it")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA adapter (merged at the end) or full "
                                                                    "fine-tune (default)")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the data (default 3)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="optimizer steps; overrides --epochs")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate (default 2e-5)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option(help="examples per device per step (default 8)")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="gradient accumulation steps (default 1)")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per example, prompt + target (default 1024)")]
    = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (default 16)")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default 32)")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout (default 0.05)")] = None,
    lora_target: Annotated[str | None, typer.Option(help="LoRA modules, comma-separated (default all linear)")]
    = None,
    preset: Annotated[str | None, typer.Option(help="model preset, as eval's --preset")] = None,
    reasoning_format: Annotated[str | None, typer.Option(help="r1, qwen3, skyt1, none")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="as eval's --system-prompt")] = None,
    think_prefill: Annotated[str | None, typer.Option(help="as eval's, e.g. '<think>\\n'")] = None,
    enable_thinking: Annotated[bool | None, typer.Option("--enable-thinking/--disable-thinking")] = None,
    chat_template: Annotated[Path | None, typer.Option(help="Jinja chat template file (saved with the model)")]
    = None,
    logging_steps: Annotated[int | None, typer.Option(help="steps between train_log.jsonl entries (10)")] = None,
    save_steps: Annotated[int | None, typer.Option(help="steps between checkpoints (100)")] = None,
    save_total_limit: Annotated[int | None, typer.Option(help="checkpoints kept (2)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16")] = None,
    trl_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE further SFTConfig field (repeatable)")]
    = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print the resolved config as YAML and "
                                                                       "exit")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Supervised fine-tuning with TRL's SFTTrainer, rendering each row exactly as `eval` renders the prompt."""
    from safereason.train.config import load_sft_config

    values: dict[str, Any] = {
        "model": model, "data": data, "out": out, "lora": lora, "epochs": epochs, "max_steps": max_steps, "lr": lr,
        "seed": seed, "batch_size": batch_size, "grad_accum": grad_accum, "max_length": max_length,
        "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "lora_target_modules": [m.strip() for m in lora_target.split(",") if m.strip()] if lora_target else None,
        "preset": preset, "reasoning_format": reasoning_format, "system_prompt": system_prompt,
        "think_prefill": think_prefill, "enable_thinking": enable_thinking,
        "chat_template": _read_template(chat_template), "logging_steps": logging_steps, "save_steps": save_steps,
        "save_total_limit": save_total_limit, "device": device, "dtype": dtype, "trl": _trl_options(trl_opt),
    }
    cfg = load_sft_config(config, **values)
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    from safereason.commands.common import _quiet_libraries
    from safereason.train.sft import train_sft

    _quiet_libraries()
    result = train_sft(cfg, progress=not no_progress)
    from accelerate import PartialState

    if PartialState().is_main_process:
        loss = f", last logged loss {result.final_loss:.4f}" if result.final_loss is not None else ""
        resumed = f" (resumed from {result.resumed_from})" if result.resumed_from else ""
        typer.echo(f"trained {result.steps} steps{resumed}{loss}; model: {result.model_dir}")
        typer.echo(f"evaluate it with: {result.eval_command}")


# -- GRPO and DPO (TARS's RL stage and its DPO baseline) -------------------------------------------------

ModelOpt = Annotated[str | None, typer.Option("--model", help="student: alias, local path or hub id")]
PromptsOpt = Annotated[Path | None, typer.Option("--prompts", help="prompt mix (JSONL/Parquet: id, prompt, label, "
                                                                   "source), as `data mix` writes")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="run dir; re-running the same command resumes")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config (keys as the flags); flags override")]
JudgeOpt = Annotated[str | None, typer.Option("--safety-judge", help="safety judge for harmful prompts "
                                                                    "(default llama-guard-3-1b)")]
HelpOpt = Annotated[str | None, typer.Option("--helpfulness", help="reward model path/id, rubric judge, or proxy "
                                                                   "(1 - refused; the default)")]
NoReasonOpt = Annotated[bool | None, typer.Option("--no-reasoning/--reasoning", help="RL without reasoning: "
                                                  "thought closed empty (ZeroThink), format reward off")]
LoraOpt = Annotated[bool | None, typer.Option("--lora/--full", help="LoRA adapter (merged at the end) or full")]
IntOpt = Annotated[int | None, typer.Option()]
FloatOpt = Annotated[float | None, typer.Option()]
StrOpt = Annotated[str | None, typer.Option()]
TrlOpt = Annotated[list[str] | None, typer.Option("--trl-opt", help="KEY=VALUE further TRL config field")]
PrintOpt = Annotated[bool, typer.Option("--print-config", help="print the resolved config as YAML and exit")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress")]
ThinkOpt = Annotated[bool | None, typer.Option("--enable-thinking/--disable-thinking")]


def _shared(**kw: Any) -> dict[str, Any]:
    """The keys every trainer shares, from their flags."""
    target = kw.pop("lora_target")
    kw["lora_target_modules"] = [m.strip() for m in target.split(",") if m.strip()] if target else None
    kw["chat_template"] = _read_template(kw["chat_template"])
    kw["trl"] = _trl_options(kw.pop("trl_opt"))
    return kw


def _run(kind: str, cfg: Any, print_config: bool, no_progress: bool) -> None:
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    from accelerate import PartialState

    from safereason.commands.common import _quiet_libraries

    _quiet_libraries()
    if kind == "grpo":
        from safereason.train.grpo import train_grpo

        result: Any = train_grpo(cfg, progress=not no_progress)
    else:
        from safereason.train.dpo import train_dpo

        result = train_dpo(cfg, progress=not no_progress)
    if PartialState().is_main_process:
        last = result.last or {}
        shown = ", ".join(f"{k} {last[k]:.4f}" for k in ("reward", "kl", "loss") if isinstance(last.get(k), float))
        resumed = f" (resumed from {result.resumed_from})" if result.resumed_from else ""
        typer.echo(f"trained {result.steps} steps{resumed}{'; last ' + shown if shown else ''}; model: "
                   f"{result.model_dir}")
        typer.echo(f"evaluate it with: {result.eval_command}")


@app.command("grpo")
def grpo_cmd(
    model: ModelOpt = None, prompts: PromptsOpt = None, out: OutOpt = None, config: ConfigOpt = None,
    safety_judge: JudgeOpt = None, helpfulness: HelpOpt = None, no_reasoning: NoReasonOpt = None,
    num_generations: Annotated[int | None, typer.Option(help="samples per prompt (TARS: 8)")] = None,
    prompts_per_step: Annotated[int | None, typer.Option(help="prompts per optimizer step (TARS: 32)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="completions per device per forward pass (8)")] = None,
    max_completion_length: Annotated[int | None, typer.Option(help="TARS: 4096")] = None,
    max_prompt_length: Annotated[int | None, typer.Option(help="TARS: 512")] = None,
    temperature: Annotated[float | None, typer.Option(help="TARS: 0.6")] = None,
    lr: Annotated[float | None, typer.Option(help="TARS: 1e-6")] = None,
    beta: Annotated[float | None, typer.Option(help="KL coefficient (TARS: 0.001)")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the prompts (TARS: 3)")] = None,
    max_steps: IntOpt = None, generation: Annotated[str | None, typer.Option(
        help="auto, transformers, vllm-colocate, vllm-server")] = None,
    eval_prompts: Annotated[Path | None, typer.Option(
        help="held-out prompt mix scored by the reward every --eval-steps (verl's validation)")] = None,
    eval_steps: Annotated[int | None, typer.Option(help="validation every N steps (TARS: 20)")] = None,
    num_generations_eval: Annotated[int | None, typer.Option(help="samples per validation prompt (TARS: 8)")] = None,
    seed: IntOpt = None, lora: LoraOpt = None, lora_r: IntOpt = None, lora_alpha: IntOpt = None,
    lora_dropout: FloatOpt = None, lora_target: StrOpt = None, preset: StrOpt = None, reasoning_format: StrOpt = None,
    system_prompt: StrOpt = None, think_prefill: StrOpt = None, enable_thinking: ThinkOpt = None,
    chat_template: Annotated[Path | None, typer.Option()] = None, logging_steps: IntOpt = None,
    save_steps: IntOpt = None, save_total_limit: IntOpt = None, device: StrOpt = None, dtype: StrOpt = None,
    trl_opt: TrlOpt = None, print_config: PrintOpt = False, no_progress: NoProgressOpt = False,
) -> None:
    """TARS's RL stage: GRPO (TRL) on a prompt mix with format-gated safety and helpfulness rewards."""
    values = _shared(**{k: v for k, v in locals().items() if k not in ("config", "print_config", "no_progress")})
    from safereason.train.grpo import load_grpo_config

    _run("grpo", load_grpo_config(config, **values), print_config, no_progress)


@app.command("dpo")
def dpo_cmd(
    model: ModelOpt = None, prompts: PromptsOpt = None, out: OutOpt = None, config: ConfigOpt = None,
    safety_judge: JudgeOpt = None, helpfulness: HelpOpt = None, no_reasoning: NoReasonOpt = None,
    samples_per_prompt: Annotated[int | None, typer.Option(help="K samples ranked per prompt (8)")] = None,
    max_completion_length: IntOpt = None, max_prompt_length: IntOpt = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature for the pairs (0.6)")] = None,
    lr: Annotated[float | None, typer.Option(help="default 1e-6")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta (0.1)")] = None,
    epochs: FloatOpt = None, max_steps: IntOpt = None, batch_size: IntOpt = None, grad_accum: IntOpt = None,
    seed: IntOpt = None, lora: LoraOpt = None, lora_r: IntOpt = None, lora_alpha: IntOpt = None,
    lora_dropout: FloatOpt = None, lora_target: StrOpt = None, preset: StrOpt = None, reasoning_format: StrOpt = None,
    system_prompt: StrOpt = None, think_prefill: StrOpt = None, enable_thinking: ThinkOpt = None,
    chat_template: Annotated[Path | None, typer.Option()] = None, logging_steps: IntOpt = None,
    save_steps: IntOpt = None, save_total_limit: IntOpt = None, device: StrOpt = None, dtype: StrOpt = None,
    trl_opt: TrlOpt = None, print_config: PrintOpt = False, no_progress: NoProgressOpt = False,
) -> None:
    """DPO baseline (TRL): pairs from K samples per prompt of the mix, ranked by the TARS reward."""
    values = _shared(**{k: v for k, v in locals().items() if k not in ("config", "print_config", "no_progress")})
    from safereason.train.dpo import load_dpo_config

    _run("dpo", load_dpo_config(config, **values), print_config, no_progress)


def _register_guard() -> None:
    from safereason.commands.guard import guard_cmd

    app.command("guard")(guard_cmd)


_register_guard()
