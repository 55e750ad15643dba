"""The SFT run configuration: one pydantic model shared by the Python API, ``--config FILE.yaml`` and the flags.

Our own keys cover what the command documents (model, data, rendering as eval, the usual optimisation knobs,
LoRA); anything else TRL's ``SFTConfig`` takes goes in the ``trl:`` mapping, passed through unchanged, so no TRL
field is redeclared here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safereason.config import check_dtype, format_validation_error, read_yaml_mapping
from safereason.errors import ConfigError, RunDirError, SafereasonError

#: SFTConfig fields that our own keys (or the run directory layout) set; a ``trl:`` entry may not set them too
OWNED_TRL_FIELDS: dict[str, str] = {
    "output_dir": "out", "learning_rate": "lr", "num_train_epochs": "epochs", "max_steps": "max_steps",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "max_length": "max_length", "seed": "seed", "data_seed": "seed", "logging_steps": "logging_steps",
    "save_steps": "save_steps", "save_total_limit": "save_total_limit", "use_cpu": "device", "bf16": "dtype",
    "fp16": "dtype", "completion_only_loss": "(always on: loss on the assistant turn only)",
    "assistant_only_loss": "(the loss mask comes from the rendering)", "disable_tqdm": "--no-progress",
    "resume_from_checkpoint": "(resumed from OUT/checkpoints automatically)",
    "include_num_input_tokens_seen": "(tokens are logged to train_log.jsonl)",
    "dataset_kwargs": "(examples are tokenised by safereason)",
}
#: keys that say where or on what a run runs, not what it learns: they may change when a run resumes
NON_IDENTITY_KEYS = ("out", "data", "device")


def require_train_extra() -> None:
    """TRL and PEFT come with the ``train`` extra, not with a plain install: say how to get them."""
    import importlib.util

    missing = [m for m in ("trl", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"training needs {' and '.join(missing)}: pip install -e '.[train]' "
                          "(trl==1.16.0, peft==0.21.2), or bash scripts/install.sh --dev")


class SFTRunConfig(BaseModel):
    """Everything that defines an SFT run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m", description="student: alias, local path or hub id[@revision]")
    data: Path = Field(description="JSONL/JSON/Parquet/CSV rows: messages [user, assistant] or prompt/completion")
    out: Path = Field(description="run directory: model/, train_log.jsonl, checkpoints/")

    # rendering: the same keys and meaning as eval's (None: eval's default or the model's preset)
    preset: str | None = Field(None, description="model preset, as eval's --preset")
    reasoning_format: str | None = Field(None, description="r1, qwen3, skyt1, none (default r1 or the preset's)")
    system_prompt: str | None = None
    think_prefill: str | None = Field(None, description="text after the template, e.g. '<think>\\n'")
    enable_thinking: bool | None = None
    chat_template: str | None = Field(None, description="Jinja chat template text (the CLI reads --chat-template)")

    # optimisation
    epochs: float = Field(3.0, gt=0, description="passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    lr: float = Field(2e-5, gt=0, allow_inf_nan=False, description="peak learning rate (TRL's default 2e-5)")
    batch_size: int = Field(8, ge=1, description="examples per device per step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int | None = Field(1024, ge=2, description="tokens per example (prompt + target); longer are cut")
    seed: int = 0

    # LoRA (peft)
    lora: bool = Field(False, description="train a LoRA adapter, merged into the weights at the end")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = Field(None, description="module names; None: all linear layers")

    # bookkeeping and execution
    logging_steps: int = Field(10, ge=1, description="optimizer steps between train_log.jsonl entries")
    save_steps: int = Field(100, ge=1, description="optimizer steps between checkpoints")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept")
    device: str = Field("auto", description="auto, cpu or cuda (several GPUs: accelerate launch)")
    dtype: str = Field("auto", description="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    trl: dict[str, Any] = Field(default_factory=dict, description="further SFTConfig fields, passed unchanged")

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
        owned = sorted(set(v) & set(OWNED_TRL_FIELDS))
        if owned:
            raise ValueError("set " + ", ".join(f"{k} through {OWNED_TRL_FIELDS[k]}" for k in owned) +
                             ", not through trl")
        if v:
            import dataclasses

            require_train_extra()
            from trl import SFTConfig

            known = {f.name for f in dataclasses.fields(SFTConfig)}
            unknown = sorted(set(v) - known)
            if unknown:
                raise ValueError(f"not SFTConfig fields: {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> SFTRunConfig:
        from safereason.reasoning import FORMATS

        if self.reasoning_format is not None:
            try:
                FORMATS.get(self.reasoning_format)
            except SafereasonError as e:  # the message suggests close names
                raise ValueError(str(e)) from None
        for name in ("system_prompt", "think_prefill", "chat_template", "model"):
            value = getattr(self, name)
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name} contains a NUL byte (\\x00); remove it")
        return self

    # -- identity --------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The keys that decide what is learned (a resumed run must have the same)."""
        return {k: v for k, v in json.loads(self.model_dump_json()).items() if k not in NON_IDENTITY_KEYS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False, allow_unicode=True)


def make_sft_config(**values: Any) -> SFTRunConfig:
    """Build a config, turning pydantic's multi-line errors into one ConfigError line."""
    try:
        return SFTRunConfig(**values)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e).replace("invalid config", "invalid SFT config")) from None


def load_sft_config(path: str | Path | None, **overrides: Any) -> SFTRunConfig:
    """A YAML config (the same snake_case keys as the flags) with ``overrides`` (flags, None = unset) on top."""
    data: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return make_sft_config(**data)


# -- the run directory -----------------------------------------------------------------------------

def check_run_dir(cfg: Any, data_sha256: str) -> bool:
    """Refuse a run directory made with another config or other data (naming what differs); True when it
    was made by this config (a resume), False when it is new. ``cfg`` is any run config (SFT, GRPO, DPO)."""
    out, kind = cfg.out, getattr(cfg, "KIND", "SFT")
    stored_path = out / "config.yaml"
    if not stored_path.exists():
        if out.exists() and any(out.iterdir()):
            raise RunDirError(f"{out} is not empty and holds no {kind} run (no config.yaml); use a new --out directory")
        return False
    try:
        stored = type(cfg)(**(yaml.safe_load(stored_path.read_text(encoding="utf-8")) or {}))
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as e:
        raise RunDirError(f"cannot read {stored_path} ({type(e).__name__}); use a new --out directory") from None
    old, new = stored.identity(), cfg.identity()
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differ:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in differ)
        raise RunDirError(f"{out} was trained with a different config: {shown}; re-run with the same settings to "
                          "resume, or use a new --out directory")
    data_json = out / "data.json"
    if data_json.exists():
        recorded = json.loads(data_json.read_text(encoding="utf-8")).get("sha256")
        if recorded != data_sha256:
            raise RunDirError(f"{out} was trained on other data (sha256 {recorded} there, {data_sha256} in "
                              f"{cfg.data}); use a new --out directory")
    return True


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader (another process of the run, a re-run after a kill) sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
