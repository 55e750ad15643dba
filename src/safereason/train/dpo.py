"""The DPO baseline of TARS's comparison, through TRL's ``DPOTrainer``, on the same prompt mix as GRPO.

Preference pairs come from the student itself: ``samples_per_prompt`` (K) samples of each prompt, rendered as
eval renders it, scored by the same TARS reward GRPO uses (format × safety or helpfulness); the best sample
is *chosen* and the worst *rejected*, and prompts whose samples all score the same (or that could not be
scored) give no pair. The pairs are written to ``OUT/pairs.jsonl`` before training, so a re-run after a kill
resumes training without sampling again. The rest of ``OUT`` is as for ``train sft`` / ``train grpo``::

    accelerate launch -m safereason.train.dpo --config dpo.yaml
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from safereason.errors import DataError
from safereason.hashing import sha256_file
from safereason.train.common import (
    RunConfigBase,
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
from safereason.train.grpo import TARS_DEFAULTS, build_reward, eval_command_for, read_mix, render_mix, step_log_callback


class DPORunConfig(RunConfigBase):
    """Everything that defines a DPO run (YAML keys == CLI flags)."""

    TRL_CONFIG: ClassVar[str] = "DPOConfig"
    KIND: ClassVar[str] = "DPO"
    OWNED_TRL: ClassVar[dict[str, str]] = {
        "output_dir": "out", "learning_rate": "lr", "num_train_epochs": "epochs", "max_steps": "max_steps",
        "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum", "beta": "beta",
        "max_length": "(prompt and completion lengths)", "seed": "seed", "data_seed": "seed",
        "logging_steps": "logging_steps", "save_steps": "save_steps", "save_total_limit": "save_total_limit",
        "use_cpu": "device", "bf16": "dtype", "fp16": "dtype", "disable_tqdm": "--no-progress",
        "resume_from_checkpoint": "(resumed from OUT/checkpoints automatically)",
    }

    prompts: Path = Field(description="prompt mix: JSONL/Parquet with prompt, label (harmful/benign/ambiguous)")
    safety_judge: str = Field("llama-guard-3-1b", description="registry safety judge for harmful prompts")
    helpfulness: str = Field("proxy", description="reward model path/id, rubric judge, or proxy (1 - refused)")
    no_reasoning: bool = Field(False, description="thought closed empty, format reward off (as GRPO's)")
    samples_per_prompt: int = Field(TARS_DEFAULTS["num_generations"], ge=2, description="K samples ranked per prompt")
    max_completion_length: int = Field(TARS_DEFAULTS["max_completion_length"], ge=1)
    max_prompt_length: int | None = Field(TARS_DEFAULTS["max_prompt_length"], ge=1)
    temperature: float = Field(TARS_DEFAULTS["temperature"], gt=0, description="sampling temperature for pairs")
    lr: float = Field(1e-6, gt=0, allow_inf_nan=False, description="TRL DPOConfig's default")
    beta: float = Field(0.1, gt=0, description="DPO beta (TRL's default)")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1, description="pairs per device per step")
    grad_accum: int = Field(1, ge=1)


def make_dpo_config(**values: Any) -> DPORunConfig:
    return make_run_config(DPORunConfig, **values)


def load_dpo_config(path: str | Path | None, **overrides: Any) -> DPORunConfig:
    return load_run_config(DPORunConfig, path, **overrides)


@dataclass(frozen=True)
class DPOResult:
    out: Path
    model_dir: Path
    steps: int
    pairs: int
    last: dict[str, Any] | None
    resumed_from: str | None
    eval_command: str


def rank_pairs(rows: list[Any], completions: list[list[str]], scores: list[list[float | None]]) -> list[dict]:
    """One (chosen = best, rejected = worst) pair per prompt whose scored samples differ; ties and unscored
    samples give none. The first best and the last worst win among equals (deterministic)."""
    pairs = []
    for row, texts, vals in zip(rows, completions, scores, strict=True):
        scored = [(v, i) for i, v in enumerate(vals) if v is not None]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda t: (t[0], -t[1]))
        worst = min(scored, key=lambda t: (t[0], -t[1]))
        if best[0] == worst[0]:
            continue
        pairs.append({"id": row.id, "label": row.label, "prompt": row.text, "chosen": texts[best[1]],
                      "rejected": texts[worst[1]], "chosen_score": best[0], "rejected_score": worst[0]})
    return pairs


def sample_pairs(cfg: DPORunConfig, base_path: str, rows: list[Any], reward: Callable[..., Any]) -> list[dict]:
    """K samples per prompt from the student (eval's transformers backend, seeded), ranked by ``reward``."""
    from safereason.models import SamplingParams, build_backend

    dtype, _ = precision(cfg)
    device = "cpu" if cfg.device == "cpu" else None
    backend = build_backend("transformers", base_path, dtype=dtype, **({"device": device} if device else {}))
    k = cfg.samples_per_prompt
    params = SamplingParams(temperature=cfg.temperature, top_p=1.0, max_new_tokens=cfg.max_completion_length)
    texts = [c.text for c in backend.generate([r.rendered for r in rows for _ in range(k)], params, seed=cfg.seed)]
    flat = reward(prompts=[r.question for r in rows for _ in range(k)], completions=texts,
                  label=[r.label for r in rows for _ in range(k)],
                  think_prefill=[r.think_prefill for r in rows for _ in range(k)])
    grouped = [texts[i * k:(i + 1) * k] for i in range(len(rows))]
    return rank_pairs(rows, grouped, [list(flat[i * k:(i + 1) * k]) for i in range(len(rows))])


def _dataset(pairs: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({k: [p[k] for p in pairs] for k in ("prompt", "chosen", "rejected")})


def dpo_args(cfg: DPORunConfig, *, progress: bool = True) -> Any:
    from trl import DPOConfig

    _, prec = precision(cfg)
    return DPOConfig(
        output_dir=str(cfg.out / "checkpoints"), learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, beta=cfg.beta,
        max_length=(cfg.max_prompt_length or 0) + cfg.max_completion_length if cfg.max_prompt_length else None,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, use_cpu=cfg.device == "cpu",
        disable_tqdm=not progress, report_to="none", **prec, **cfg.trl,
    )


def _pairs(cfg: DPORunConfig, base_path: str, rows: list[Any], reward: Callable[..., Any] | None,
           state: Any) -> list[dict]:
    """OUT/pairs.jsonl, sampled once (main process) and reused by a re-run."""
    path = cfg.out / "pairs.jsonl"
    if state.is_main_process and not path.exists():
        scorer = reward if reward is not None else build_reward(cfg)
        try:
            pairs = sample_pairs(cfg, base_path, rows, scorer)
        finally:
            close = getattr(scorer, "close", None)
            if reward is None and callable(close):
                close()
        write_atomic(path, "".join(json.dumps(p) + "\n" for p in pairs))
    state.wait_for_everyone()
    pairs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not pairs:
        raise DataError(f"no preference pairs: every prompt's {cfg.samples_per_prompt} samples scored the same "
                        f"(see {path}); sample more per prompt, raise the temperature, or warm the model up first")
    return pairs


def train_dpo(cfg: DPORunConfig, *, reward: Callable[..., Any] | None = None, progress: bool = True) -> DPOResult:
    """Sample and rank pairs (or reuse OUT/pairs.jsonl), then DPO with TRL; resume when ``cfg.out`` holds this
    run. ``reward`` replaces TARS's reward built from the judges in ``cfg``."""
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
        return DPOResult(out, model_dir, done["steps"], done["pairs"], done["last"], None, command)
    tokenizer, base_path = load_tokenizer(cfg)
    rows = render_mix(cfg, tokenizer, read_mix(cfg.prompts))
    args = dpo_args(cfg, progress=progress)
    if state.is_main_process:
        write_atomic(out / "config.yaml", cfg.to_yaml())
        write_atomic(out / "data.json", json.dumps({"path": str(cfg.prompts), "sha256": data_sha, "rows": len(rows)},
                                                    indent=2) + "\n")
    state.wait_for_everyone()
    pairs = _pairs(cfg, base_path, rows, reward, state)
    from trl import DPOTrainer

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = DPOTrainer(model=load_model(base_path, cfg, precision(cfg)[0]), args=args, train_dataset=_dataset(pairs),
                         processing_class=tokenizer, peft_config=peft_config(cfg))
    log_path = out / "train_log.jsonl"
    trainer.add_callback(step_log_callback(log_path))
    resume = trainer_resume(cfg, state)
    trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    save_final_model(trainer, cfg, base_path, tokenizer, state)
    logged = read_train_log(log_path)
    last = logged[-1] if logged else None
    if state.is_main_process:
        write_atomic(out / "result.json", json.dumps({"steps": trainer.state.global_step, "pairs": len(pairs),
                                                       "last": last, "model": str(model_dir),
                                                       "eval_command": command}, indent=2) + "\n")
    return DPOResult(out, model_dir, trainer.state.global_step, len(pairs), last,
                     str(resume[0]) if resume else None, command)


if __name__ == "__main__":  # accelerate launch -m safereason.train.dpo --config dpo.yaml [flags]
    from safereason.train.__main__ import main

    main("dpo")
