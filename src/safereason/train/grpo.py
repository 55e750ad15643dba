"""TARS's RL stage through TRL's ``GRPOTrainer``: GRPO on a λ prompt mix with format-gated safety and
helpfulness rewards (:mod:`safereason.train.rewards`), no hand-written RL loop.

The defaults are TARS's (danielkty/tars scripts/train/run_train.sh @ 32c10be22eabb4ddaadab353756bd5d2d2fb81f2):
8 samples per prompt, 32 prompts per step, lr 1e-6, KL coefficient 0.001 (verl's ``low_var_kl`` is the k3
estimator TRL's GRPO uses), temperature 0.6, 4096-token completions, 512-token prompts, 3 epochs, one policy
update per generation batch. Prompts are rendered exactly as ``safereason eval`` renders them (chat template,
system prompt, ``think_prefill``); ``no_reasoning`` is the "RL without reasoning" baseline: the thought is
closed empty as in ZeroThink and the format gate is off.

``OUT`` has the same layout as ``train sft``'s (``config.yaml``, ``data.json``, ``checkpoints/``, ``model/``,
``result.json``); ``train_log.jsonl`` holds, per step, TRL's metrics (``reward``, ``rewards/<fn>/mean``,
``kl``, ``completions/mean_length``) and the reward components and per-label shares (``tars/...``,
``stats/<label>/refusal``, ``stats/<label>/think_tokens``, ...). Runs unchanged under ``accelerate launch``::

    accelerate launch -m safereason.train.grpo --config grpo.yaml
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from safereason.errors import ConfigError, DataError
from safereason.hashing import sha256_file
from safereason.train.common import (
    RunConfigBase,
    append_log,
    load_model,
    load_run_config,
    load_tokenizer,
    make_run_config,
    peft_config,
    precision,
    read_train_log,
    save_final_model,
    trainer_resume,
)
from safereason.train.config import check_run_dir, require_train_extra, write_atomic
from safereason.train.mix_prompts import (  # noqa: F401 - re-exported
    LABELS,
    PromptRow,
    open_prefill,
    prompt_dataset,
    read_mix,
    render_mix,
    trl_prompt_text,
)
from safereason.train.render import eval_config

#: TARS @ 32c10be scripts/train/run_train.sh: rollout.n=8, train_batch_size=32, optim.lr=1e-6, kl_loss_coef=0.001
#: (kl_loss_type=low_var_kl), rollout.temperature=0.6, max_response_length=4096, max_prompt_length=512,
#: total_epochs=3
TARS_DEFAULTS: dict[str, Any] = {"num_generations": 8, "prompts_per_step": 32, "lr": 1e-6, "beta": 0.001,
                                 "temperature": 0.6, "max_completion_length": 4096, "max_prompt_length": 512,
                                 "epochs": 3.0}
#: verl's optimiser and loss settings in TARS's runs, as TRL GRPOConfig fields (``trl:`` / ``--trl-opt`` override
#: them). danielkty/tars @ 32c10be: verl/verl/workers/fsdp_workers.py (_build_model_optimizer: AdamW with
#: betas (0.9, 0.999) and weight_decay 1e-2, get_constant_schedule_with_warmup with lr_warmup_steps_ratio 0 →
#: a constant lr) and verl/verl/trainer/config/ppo_trainer.yaml (actor: entropy_coeff 0.001, subtracted from the
#: loss as the masked mean token entropy as TRL's entropy_coef is; grad_clip 1.0; clip_ratio 0.2).
TARS_TRL_DEFAULTS: dict[str, Any] = {"lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": 0.01,
                                     "adam_beta1": 0.9, "adam_beta2": 0.999, "entropy_coef": 0.001,
                                     "max_grad_norm": 1.0, "epsilon": 0.2}
GENERATION = ("auto", "transformers", "vllm-colocate", "vllm-server")
#: verl's validation in TARS's runs (run_train.sh @ 32c10be: data.val_files=test.parquet, trainer.test_freq=20,
#: actor_rollout_ref.rollout.n_val=8, val_temperature=0.6 (the training temperature), val_before_train=False):
#: with ``eval_prompts``, TRL's evaluation every ``eval_steps`` steps, ``num_generations_eval`` samples per prompt,
#: scored by the training reward (``eval_reward`` and the per-label stats in train_log.jsonl)
TARS_VALIDATION: dict[str, Any] = {"eval_steps": 20, "num_generations_eval": 8}


class GRPORunConfig(RunConfigBase):
    """Everything that defines a GRPO run (YAML keys == CLI flags)."""

    TRL_CONFIG: ClassVar[str] = "GRPOConfig"
    KIND: ClassVar[str] = "GRPO"
    OWNED_TRL: ClassVar[dict[str, str]] = {
        "output_dir": "out", "learning_rate": "lr", "num_train_epochs": "epochs", "max_steps": "max_steps",
        "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "prompts_per_step",
        "num_generations": "num_generations", "max_completion_length": "max_completion_length",
        "temperature": "temperature", "beta": "beta", "seed": "seed", "data_seed": "seed",
        "logging_steps": "logging_steps", "save_steps": "save_steps", "save_total_limit": "save_total_limit",
        "use_cpu": "device", "bf16": "dtype", "fp16": "dtype", "use_vllm": "generation", "vllm_mode": "generation",
        "disable_tqdm": "--no-progress", "resume_from_checkpoint": "(resumed from OUT/checkpoints automatically)",
        "generation_batch_size": "prompts_per_step", "steps_per_generation": "prompts_per_step",
        "eval_strategy": "eval_prompts", "eval_steps": "eval_steps", "num_generations_eval": "num_generations_eval",
        "per_device_eval_batch_size": "num_generations_eval",
    }

    prompts: Path = Field(description="prompt mix: JSONL/Parquet with prompt, label (harmful/benign/ambiguous)")
    safety_judge: str = Field("llama-guard-3-1b", description="registry safety judge for harmful prompts")
    helpfulness: str = Field("proxy", description="reward model path/id, rubric judge, or proxy (1 - refused)")
    no_reasoning: bool = Field(False, description="RL without reasoning: thought closed empty, format reward off")

    num_generations: int = Field(TARS_DEFAULTS["num_generations"], ge=2, description="samples per prompt")
    prompts_per_step: int = Field(TARS_DEFAULTS["prompts_per_step"], ge=1, description="prompts per optimizer step")
    batch_size: int = Field(8, ge=1, description="completions per device per forward pass")
    max_completion_length: int = Field(TARS_DEFAULTS["max_completion_length"], ge=1)
    max_prompt_length: int | None = Field(TARS_DEFAULTS["max_prompt_length"], ge=1,
                                          description="longer rendered prompts are refused")
    temperature: float = Field(TARS_DEFAULTS["temperature"], gt=0)
    lr: float = Field(TARS_DEFAULTS["lr"], gt=0, allow_inf_nan=False)
    beta: float = Field(TARS_DEFAULTS["beta"], ge=0, description="KL coefficient (k3 estimator)")
    epochs: float = Field(TARS_DEFAULTS["epochs"], gt=0, description="passes over the prompts (unless max_steps)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    generation: str = Field("auto", description="auto (vLLM colocated when installed on GPU), transformers, "
                                                "vllm-colocate, vllm-server")
    eval_prompts: Path | None = Field(None, description="held-out prompt mix scored by the reward every eval_steps "
                                                        "(verl's validation set; none: no validation)")
    eval_steps: int = Field(TARS_VALIDATION["eval_steps"], ge=1, description="validation every N steps (TARS: 20)")
    num_generations_eval: int = Field(TARS_VALIDATION["num_generations_eval"], ge=1,
                                      description="samples per validation prompt (TARS: 8)")

    @field_validator("generation")
    @classmethod
    def _generation(cls, v: str) -> str:
        if v not in GENERATION:
            raise ValueError(f"unknown generation {v!r}: use {', '.join(GENERATION)}")
        return v


def make_grpo_config(**values: Any) -> GRPORunConfig:
    return make_run_config(GRPORunConfig, **values)


def load_grpo_config(path: str | Path | None, **overrides: Any) -> GRPORunConfig:
    return load_run_config(GRPORunConfig, path, **overrides)


@dataclass(frozen=True)
class GRPOResult:
    out: Path
    model_dir: Path
    steps: int
    #: the last train_log.jsonl entry (None when nothing was logged)
    last: dict[str, Any] | None
    resumed_from: str | None
    eval_command: str


# -- rewards ---------------------------------------------------------------------------------------

def build_reward(cfg: Any) -> Any:
    """TARS's reward for this config (format gate off for ``no_reasoning``)."""
    from safereason.train.rewards import make_tars_reward

    helpfulness = "refusal-proxy" if cfg.helpfulness == "proxy" else cfg.helpfulness
    return make_tars_reward(cfg.safety_judge, helpfulness, format=not cfg.no_reasoning)


class LoggedReward:
    """Wraps a TRL reward function: judges see the user's request (the ``question`` column) rather than the
    rendered chat text, and each step logs per-label refusal share, thinking and completion lengths."""

    def __init__(self, inner: Callable[..., list[float | None]], tokenizer: Any, fmt_name: str = "r1") -> None:
        from safereason.judges.refusal import RefusalStringJudge
        from safereason.reasoning import get_format

        self.inner, self.tokenizer, self.fmt = inner, tokenizer, get_format(fmt_name)
        self.refusal = RefusalStringJudge()
        self.__name__ = getattr(inner, "__name__", "reward")

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        questions = kwargs.get("question") or prompts
        scores = self.inner(prompts=list(questions), completions=completions, **kwargs)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for name, value in self.stats(prompts, completions, kwargs).items():
                log_metric(name, value)
        return scores

    def stats(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, float]:
        from safereason.judges.base import JudgeItem
        from safereason.train.rewards import answer_of, completion_text

        texts = [completion_text(c) for c in completions]
        labels = kwargs.get("label") or ["all"] * len(texts)
        ids = kwargs.get("completion_ids") or [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        refused = [bool(v.refused) for v in self.refusal.judge([JudgeItem(prompt="", text=answer_of(t))
                                                                for t in texts])]
        think = []
        for p, t in zip(prompts, texts, strict=True):
            split = self.fmt.split(t, p if isinstance(p, str) else "")
            think.append(len(self.tokenizer(split.thinking, add_special_tokens=False)["input_ids"])
                         if split.thinking else 0)
        out: dict[str, float] = {}
        for lab in sorted(set(labels)):
            rows = [i for i, x in enumerate(labels) if x == lab]
            out[f"stats/{lab}/share"] = len(rows) / len(labels)
            out[f"stats/{lab}/refusal"] = sum(refused[i] for i in rows) / len(rows)
            out[f"stats/{lab}/think_tokens"] = sum(think[i] for i in rows) / len(rows)
            out[f"stats/{lab}/completion_tokens"] = sum(len(ids[i]) for i in rows) / len(rows)
        return out

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


# -- trainer ---------------------------------------------------------------------------------------

def _generation_args(cfg: GRPORunConfig) -> dict[str, Any]:
    if cfg.generation == "auto":
        import importlib.util

        import torch

        use = importlib.util.find_spec("vllm") is not None and cfg.device != "cpu" and torch.cuda.is_available()
        return {"use_vllm": True, "vllm_mode": "colocate"} if use else {"use_vllm": False}
    if cfg.generation == "transformers":
        return {"use_vllm": False}
    return {"use_vllm": True, "vllm_mode": cfg.generation.removeprefix("vllm-")}


def grpo_args(cfg: GRPORunConfig, *, world_size: int = 1, progress: bool = True) -> Any:
    """TRL's GRPOConfig: ``prompts_per_step`` × ``num_generations`` completions per optimizer step, generated
    at once (one policy update per generation batch, as TARS's ppo_mini_batch_size == train_batch_size)."""
    from trl import GRPOConfig

    per_step = cfg.prompts_per_step * cfg.num_generations
    if per_step % (cfg.batch_size * world_size):
        raise ConfigError(f"prompts_per_step × num_generations ({per_step}) must be a multiple of batch_size × "
                          f"processes ({cfg.batch_size} × {world_size})")
    _, prec = precision(cfg)
    validation: dict[str, Any] = {"eval_strategy": "no"}
    if cfg.eval_prompts is not None:  # one prompt's samples per process and forward pass
        validation = {"eval_strategy": "steps", "eval_steps": cfg.eval_steps,
                      "num_generations_eval": cfg.num_generations_eval,
                      "per_device_eval_batch_size": cfg.num_generations_eval}
    return GRPOConfig(
        output_dir=str(cfg.out / "checkpoints"), learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=per_step // (cfg.batch_size * world_size), num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, use_cpu=cfg.device == "cpu",
        disable_tqdm=not progress, report_to="none", **_generation_args(cfg), **prec, **validation,
        **{**TARS_TRL_DEFAULTS, **cfg.trl},
    )


def step_log_callback(path: Path) -> Any:
    """A TrainerCallback appending every logged step's numeric metrics to ``path``."""
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs or "train_runtime" in logs:
                return
            record = {"step": state.global_step, "epoch": state.epoch}
            record.update({k: v for k, v in logs.items() if isinstance(v, int | float) or v is None})
            append_log(path, record)

    return StepLog()


def eval_command_for(cfg: Any, model_dir: Path) -> str:
    from safereason.train.sft import eval_command

    cmd = eval_command(cfg, model_dir)
    return cmd + " --thinking zero" if getattr(cfg, "no_reasoning", False) else cmd


def _data_record(cfg: GRPORunConfig, data_sha: str, rows: list[PromptRow],
                 eval_rows: list[PromptRow] | None) -> dict[str, Any]:
    def labels(rs: list[PromptRow]) -> dict[str, int]:
        return {lab: sum(r.label == lab for r in rs) for lab in LABELS}

    record: dict[str, Any] = {"path": str(cfg.prompts), "sha256": data_sha, "rows": len(rows), "labels": labels(rows)}
    if cfg.eval_prompts is not None and eval_rows is not None:
        overlap = {r.question for r in rows} & {r.question for r in eval_rows}
        if overlap:
            raise DataError(f"{cfg.eval_prompts}: {len(overlap)} validation prompt(s) are also training prompts "
                            f"(e.g. {next(iter(overlap))[:80]!r}); validation must be held out")
        record["eval"] = {"path": str(cfg.eval_prompts), "sha256": sha256_file(cfg.eval_prompts),
                          "rows": len(eval_rows), "labels": labels(eval_rows)}
    return record


def train_grpo(cfg: GRPORunConfig, *, reward_funcs: Sequence[Callable[..., Any]] | None = None,
               progress: bool = True) -> GRPOResult:
    """GRPO on ``cfg.prompts`` with TRL's GRPOTrainer; resume when ``cfg.out`` holds this run.
    ``reward_funcs`` replaces TARS's reward (built from the judges in ``cfg``)."""
    from accelerate import PartialState

    require_train_extra()
    state = PartialState()
    out, model_dir = cfg.out, cfg.out / "model"
    try:
        data_sha = sha256_file(cfg.prompts)
    except OSError as e:
        raise DataError(f"cannot read prompts {cfg.prompts}: {e.strerror}") from None
    resuming = check_run_dir(cfg, data_sha)
    command = eval_command_for(cfg, model_dir)
    if resuming and (out / "result.json").exists():
        done = json.loads((out / "result.json").read_text(encoding="utf-8"))
        return GRPOResult(out, model_dir, done["steps"], done["last"], None, command)
    tokenizer, base_path = load_tokenizer(cfg)
    rows = render_mix(cfg, tokenizer, read_mix(cfg.prompts))
    eval_rows = render_mix(cfg, tokenizer, read_mix(cfg.eval_prompts)) if cfg.eval_prompts is not None else None
    data_record = _data_record(cfg, data_sha, rows, eval_rows)  # a validation set overlapping training fails here
    args = grpo_args(cfg, world_size=state.num_processes, progress=progress)
    funcs = list(reward_funcs) if reward_funcs is not None else [build_reward(cfg)]
    fmt_name = eval_config(cfg.model_dump()).reasoning_format
    funcs = [LoggedReward(f, tokenizer, fmt_name) for f in funcs]
    if state.is_main_process:
        write_atomic(out / "config.yaml", cfg.to_yaml())
        write_atomic(out / "data.json", json.dumps(data_record, indent=2) + "\n")
    state.wait_for_everyone()
    from trl import GRPOTrainer

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = GRPOTrainer(model=load_model(base_path, cfg, precision(cfg)[0]), reward_funcs=funcs, args=args,
                          train_dataset=prompt_dataset(rows),
                          eval_dataset=prompt_dataset(eval_rows) if eval_rows else None,
                          processing_class=tokenizer, peft_config=peft_config(cfg))
    log_path = out / "train_log.jsonl"
    trainer.add_callback(step_log_callback(log_path))
    resume = trainer_resume(cfg, state)
    try:
        trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    finally:
        for f in funcs:
            f.close()
    save_final_model(trainer, cfg, base_path, tokenizer, state)
    logged = read_train_log(log_path)
    last = logged[-1] if logged else None
    if state.is_main_process:
        write_atomic(out / "result.json", json.dumps({"steps": trainer.state.global_step, "last": last,
                                                       "model": str(model_dir), "eval_command": command},
                                                      indent=2) + "\n")
    return GRPOResult(out, model_dir, trainer.state.global_step, last, str(resume[0]) if resume else None, command)


if __name__ == "__main__":  # accelerate launch -m safereason.train.grpo --config grpo.yaml [flags]
    from safereason.train.__main__ import main

    main("grpo")
