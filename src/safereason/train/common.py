"""What every training command shares: loading the student, precision, LoRA, checkpoints, the step log and
saving ``OUT/model`` (the shared run config, :class:`RunConfigBase`, lives in :mod:`.config`; re-exported here).

The run directory layout is the same for every trainer: ``config.yaml``, ``data.json``, ``checkpoints/``,
``train_log.jsonl``, ``adapter/`` (LoRA), ``model/`` (loadable by ``safereason eval --model``), ``result.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safereason.errors import ModelLoadError
from safereason.train.config import (  # noqa: F401 - the shared run config, re-exported for the trainers
    RunConfigBase,
    load_run_config,
    make_run_config,
    write_atomic,
)

# -- the step log and checkpoints --------------------------------------------------------------------

def read_train_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trim_train_log(path: Path, step: int) -> None:
    """Keep only entries up to ``step`` (the checkpoint resumed from): the steps after it are trained again."""
    kept = [r for r in read_train_log(path) if r["step"] <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def last_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last), with its step."""
    found = []
    for d in folder.glob("checkpoint-*") if folder.is_dir() else []:
        try:
            state = json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # cut short by a kill
        found.append((int(state["global_step"]), d))
    if not found:
        return None
    step, d = max(found)
    return d, step


# -- model, precision, LoRA --------------------------------------------------------------------------

def precision(cfg: Any) -> tuple[str, dict[str, bool]]:
    """(dtype the weights are loaded in, TRL config precision flags)."""
    import torch

    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bfloat16" if cfg.device != "cpu" and torch.cuda.is_available() else "float32"
    if dtype == "bfloat16":
        return "bfloat16", {"bf16": True, "fp16": False}
    if dtype == "float16":  # fp16 mixed precision keeps float32 master weights
        return "float32", {"bf16": False, "fp16": True}
    return "float32", {"bf16": False, "fp16": False}


def load_tokenizer(cfg: Any) -> tuple[Any, str]:
    from transformers import AutoTokenizer

    from safereason.models.resolve import resolve_model

    resolved = resolve_model(cfg.model)
    kw = {"revision": resolved.revision} if resolved.revision else {}
    try:
        tok = AutoTokenizer.from_pretrained(resolved.path, **kw)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer of {cfg.model!r}: {e}") from None
    if cfg.chat_template is not None:
        tok.chat_template = cfg.chat_template
    return tok, resolved.path


def load_model(path: str, cfg: Any, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from safereason.models.resolve import resolve_model

    revision = resolve_model(cfg.model).revision
    kw = {"revision": revision} if revision else {}
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kw)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load model {cfg.model!r}: {e}") from None


def peft_config(cfg: Any) -> Any:
    """A LoRA config from the flags, or None for a full fine-tune (TRL's ``get_peft_config`` pattern)."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules or "all-linear", task_type="CAUSAL_LM")


def merge_adapter(base_path: str, adapter_dir: Path, target: Path, cfg: Any, dtype: str, tokenizer: Any) -> None:
    """The LoRA adapter merged into freshly loaded base weights: a plain model directory for any backend
    (read from disk, so it works the same after DDP, FSDP or DeepSpeed training)."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(load_model(base_path, cfg, dtype), str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))


def save_final_model(trainer: Any, cfg: Any, base_path: str, tokenizer: Any, state: Any) -> None:
    """``OUT/model``: the trained weights (LoRA merged) with the tokenizer, swapped in whole once written."""
    out = cfg.out
    dtype, _ = precision(cfg)
    tmp = out / "model.partial"
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    if cfg.lora:
        trainer.save_model(str(out / "adapter"))  # every process: gathers sharded weights
        if state.is_main_process:
            merge_adapter(base_path, out / "adapter", tmp, cfg, dtype, tokenizer)
    else:
        trainer.save_model(str(tmp))  # model + tokenizer (with the chat template used for rendering)
    if state.is_main_process:
        shutil.rmtree(out / "model", ignore_errors=True)
        tmp.rename(out / "model")
    state.wait_for_everyone()


def trainer_resume(cfg: Any, state: Any) -> tuple[Path, int] | None:
    """The checkpoint a re-run resumes from; the step log is cut back to it (main process)."""
    resume = last_checkpoint(cfg.out / "checkpoints")
    if state.is_main_process:
        trim_train_log(cfg.out / "train_log.jsonl", resume[1] if resume else 0)
    state.wait_for_everyone()
    return resume
