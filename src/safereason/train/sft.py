"""Supervised fine-tuning through TRL's ``SFTTrainer``: full fine-tune or LoRA, loss on the assistant turn only.

Layout of ``OUT``: ``config.yaml`` (the run's config, reusable with ``--config``), ``data.json`` (the data file's
sha256 and row count), ``checkpoints/`` (the Trainer's), ``train_log.jsonl`` (one object per logged step),
``adapter/`` (LoRA only), ``model/``, a full model directory with tokenizer and chat template that
``safereason eval --model OUT/model`` loads, and ``result.json`` (steps, last loss, the eval command), written
last. Re-running the same command resumes from the last complete checkpoint; another config or other data in the
same ``OUT`` is refused.

Runs unchanged under ``accelerate launch`` (DDP / FSDP / DeepSpeed from an accelerate config)::

    accelerate launch --config_file fsdp.yaml -m safereason.train.sft --config sft.yaml
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safereason.hashing import sha256_file
from safereason.train.common import last_checkpoint, load_tokenizer, peft_config, read_train_log, save_final_model
from safereason.train.common import load_model as _load_model
from safereason.train.common import precision as _precision
from safereason.train.common import trim_train_log as _trim_train_log
from safereason.train.config import SFTRunConfig, check_run_dir, require_train_extra, write_atomic
from safereason.train.render import Example, build_examples, eval_config, read_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTResult:
    out: Path
    model_dir: Path
    steps: int
    #: the last logged training loss (None when nothing was logged, e.g. an already finished run)
    final_loss: float | None
    #: the checkpoint training resumed from, if any
    resumed_from: str | None
    #: the eval command that renders prompts exactly as training did
    eval_command: str


# -- logging -----------------------------------------------------------------------------------------

def _train_log_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class TrainLogCallback(TrainerCallback):
        """Appends one JSON object per logged step (step, loss, learning rate, input tokens seen) to ``path``."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            record = {"step": state.global_step, "epoch": state.epoch, "loss": logs["loss"],
                      "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                      "tokens": state.num_input_tokens_seen}
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    return TrainLogCallback()


# -- model and trainer -------------------------------------------------------------------------------

def _dataset(examples: list[Example]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                              "completion_mask": [e.completion_mask for e in examples]})


def sft_args(cfg: SFTRunConfig, *, progress: bool = True) -> Any:
    """TRL's SFTConfig for this run: our keys, the ``trl:`` mapping unchanged, and the fixed choices."""
    from trl import SFTConfig

    _, precision = _precision(cfg)
    return SFTConfig(
        output_dir=str(cfg.out / "checkpoints"), learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_length, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, use_cpu=cfg.device == "cpu", completion_only_loss=True,
        include_num_input_tokens_seen="non_padding", disable_tqdm=not progress, report_to="none",
        **precision, **cfg.trl,
    )


def eval_command(cfg: SFTRunConfig, model_dir: Path) -> str:
    """``safereason eval`` with every rendering setting spelled out: a local model gets no preset."""
    ecfg = eval_config(cfg.model_dump())
    parts = ["safereason", "eval", "--model", str(model_dir)]
    if ecfg.reasoning_format != "r1":
        parts += ["--reasoning-format", ecfg.reasoning_format]
    if ecfg.system_prompt is not None:
        parts += ["--system-prompt", ecfg.system_prompt]
    if ecfg.think_prefill is not None:
        parts += ["--think-prefill", ecfg.think_prefill]
    if ecfg.enable_thinking is not None:
        parts.append("--enable-thinking" if ecfg.enable_thinking else "--disable-thinking")
    return shlex.join(parts)


# -- the run -----------------------------------------------------------------------------------------

def prepare_examples(cfg: SFTRunConfig, tokenizer: Any) -> list[Example]:
    """The tokenised training set, rendered as eval renders prompts (errors before anything is written)."""
    return build_examples(read_rows(cfg.data), tokenizer, eval_config(cfg.model_dump()), model_name=cfg.model,
                          max_length=cfg.max_length, where=str(cfg.data))


def train_sft(cfg: SFTRunConfig, *, progress: bool = True) -> SFTResult:
    """Fine-tune ``cfg.model`` on ``cfg.data`` with TRL's SFTTrainer; resume when ``cfg.out`` holds this run."""
    from accelerate import PartialState

    from safereason.errors import DataError

    require_train_extra()
    state = PartialState()
    out, model_dir = cfg.out, cfg.out / "model"
    try:
        data_sha = sha256_file(cfg.data)
    except OSError as e:
        raise DataError(f"cannot read training data {cfg.data}: {e.strerror}") from None
    resuming = check_run_dir(cfg, data_sha)
    command = eval_command(cfg, model_dir)
    if resuming and (out / "result.json").exists():  # written once OUT/model is complete
        done = json.loads((out / "result.json").read_text(encoding="utf-8"))
        return SFTResult(out, model_dir, done["steps"], done["final_loss"], None, command)
    tokenizer, base_path = load_tokenizer(cfg)
    examples = prepare_examples(cfg, tokenizer)
    if state.is_main_process:
        write_atomic(out / "config.yaml", cfg.to_yaml())
        write_atomic(out / "data.json", json.dumps({"path": str(cfg.data), "sha256": data_sha,
                                                     "rows": len(examples)}, indent=2) + "\n")
    state.wait_for_everyone()
    steps, loss, resumed = _fit(cfg, tokenizer, base_path, examples, progress=progress, state=state)
    if state.is_main_process:
        write_atomic(out / "result.json", json.dumps({"steps": steps, "final_loss": loss, "model": str(model_dir),
                                                       "eval_command": command}, indent=2) + "\n")
    return SFTResult(out, model_dir, steps, loss, resumed, command)


def _fit(cfg: SFTRunConfig, tokenizer: Any, base_path: str, examples: list[Example], *, progress: bool,
         state: Any) -> tuple[int, float | None, str | None]:
    """Build the trainer, train (resuming when a checkpoint exists), save the model: (steps, last loss, resumed)."""
    from trl import SFTTrainer

    out, log_path = cfg.out, cfg.out / "train_log.jsonl"
    dtype, _ = _precision(cfg)
    args = sft_args(cfg, progress=progress)
    trainer = SFTTrainer(model=_load_model(base_path, cfg, dtype), args=args, train_dataset=_dataset(examples),
                         processing_class=tokenizer, peft_config=peft_config(cfg))
    trainer.add_callback(_train_log_callback(log_path))
    resume = last_checkpoint(out / "checkpoints")
    if state.is_main_process:
        _trim_train_log(log_path, resume[1] if resume else 0)
    state.wait_for_everyone()
    trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    save_final_model(trainer, cfg, base_path, tokenizer, state)
    logged = read_train_log(log_path)
    return trainer.state.global_step, (logged[-1]["loss"] if logged else None), (str(resume[0]) if resume else None)


if __name__ == "__main__":  # accelerate launch -m safereason.train.sft --config sft.yaml [flags]
    from safereason.train.__main__ import main

    main("sft")
