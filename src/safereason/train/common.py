"""What every training command shares: loading the student, precision, LoRA, checkpoints, the step log, saving
``OUT/model``, and the keys of a run config that are the same for SFT, GRPO and DPO.

The run directory layout is the same for every trainer: ``config.yaml``, ``data.json``, ``checkpoints/``,
``train_log.jsonl``, ``adapter/`` (LoRA), ``model/`` (loadable by ``safereason eval --model``), ``result.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safereason.config import check_dtype, format_validation_error, read_yaml_mapping
from safereason.errors import ConfigError, ModelLoadError, SafereasonError
from safereason.train.config import require_train_extra, write_atomic

# -- the shared part of a run config -----------------------------------------------------------------


class RunConfigBase(BaseModel):
    """Student, rendering (as eval's), LoRA and bookkeeping keys; subclasses add the data and optimisation."""

    model_config = ConfigDict(extra="forbid")
    #: the TRL config class the ``trl:`` mapping is checked against
    TRL_CONFIG: ClassVar[str] = ""
    #: fields of that class our own keys set: ``{field: our key}``
    OWNED_TRL: ClassVar[dict[str, str]] = {}
    #: keys that say where a run runs, not what it learns (they may change on resume)
    NON_IDENTITY: ClassVar[tuple[str, ...]] = ("out", "device")
    #: the key naming the data file (its sha256 is checked on resume)
    DATA_KEY: ClassVar[str] = "prompts"
    KIND: ClassVar[str] = ""

    model: str = Field("smollm2-135m", description="student: alias, local path or hub id[@revision]")
    out: Path = Field(description="run directory: model/, train_log.jsonl, checkpoints/")

    preset: str | None = Field(None, description="model preset, as eval's --preset")
    reasoning_format: str | None = Field(None, description="r1, qwen3, skyt1, none (default r1 or the preset's)")
    system_prompt: str | None = None
    think_prefill: str | None = Field(None, description="text after the template, e.g. '<think>\\n'")
    enable_thinking: bool | None = None
    chat_template: str | None = Field(None, description="Jinja chat template text (the CLI reads --chat-template)")

    seed: int = 0
    lora: bool = Field(False, description="train a LoRA adapter, merged into the weights at the end")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = Field(None, description="module names; None: all linear layers")

    logging_steps: int = Field(1, ge=1, description="optimizer steps between train_log.jsonl entries")
    save_steps: int = Field(50, ge=1, description="optimizer steps between checkpoints")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept")
    device: str = Field("auto", description="auto, cpu or cuda (several GPUs: accelerate launch)")
    dtype: str = Field("auto", description="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    trl: dict[str, Any] = Field(default_factory=dict, description="further TRL config fields, passed unchanged")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {v!r}: use auto, cpu or cuda (pick GPUs with CUDA_VISIBLE_DEVICES, "
                             "several with accelerate launch)")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        return check_dtype(v)

    @field_validator("trl")
    @classmethod
    def _trl_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        owned = sorted(set(v) & set(cls.OWNED_TRL))
        if owned:
            raise ValueError("set " + ", ".join(f"{k} through {cls.OWNED_TRL[k]}" for k in owned) + ", not through trl")
        if v:
            require_train_extra()
            import trl

            known = {f.name for f in dataclasses.fields(getattr(trl, cls.TRL_CONFIG))}
            unknown = sorted(set(v) - known)
            if unknown:
                raise ValueError(f"not {cls.TRL_CONFIG} fields: {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _check_text(self) -> RunConfigBase:
        from safereason.reasoning import FORMATS

        if self.reasoning_format is not None:
            try:
                FORMATS.get(self.reasoning_format)
            except SafereasonError as e:
                raise ValueError(str(e)) from None
        for name in ("system_prompt", "think_prefill", "chat_template", "model"):
            value = getattr(self, name)
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name} contains a NUL byte (\\x00); remove it")
        return self

    @property
    def data(self) -> Path:
        """The data file whose sha256 a resumed run must match."""
        return Path(getattr(self, self.DATA_KEY))

    def identity(self) -> dict[str, Any]:
        """The keys that decide what is learned (a resumed run must have the same)."""
        skip = {*self.NON_IDENTITY, self.DATA_KEY}
        return {k: v for k, v in json.loads(self.model_dump_json()).items() if k not in skip}

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False, allow_unicode=True)


def make_run_config(cls: type[RunConfigBase], **values: Any) -> Any:
    """Build a config, turning pydantic's multi-line errors into one ConfigError line."""
    try:
        return cls(**values)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e).replace("invalid config", f"invalid {cls.KIND} config")) from None


def load_run_config(cls: type[RunConfigBase], path: str | Path | None, **overrides: Any) -> Any:
    """A YAML config (the same snake_case keys as the flags) with ``overrides`` (flags, None = unset) on top."""
    data: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return make_run_config(cls, **data)


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
