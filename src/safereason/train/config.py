"""Run configurations of the trainers: one pydantic model per trainer, shared by the Python API,
``--config FILE.yaml`` and the flags, all on :class:`RunConfigBase` (student, rendering as eval's, LoRA,
bookkeeping, and their validators), and the run directory checks every trainer shares.

Our own keys cover what the commands document; anything else the TRL config takes goes in the ``trl:`` mapping,
passed through unchanged, so no TRL field is redeclared here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safereason.config import check_dtype, format_validation_error, read_yaml_mapping
from safereason.errors import ConfigError, RunDirError, SafereasonError


def require_train_extra() -> None:
    """TRL and PEFT come with the ``train`` extra, not with a plain install: say how to get them."""
    import importlib.util

    missing = [m for m in ("trl", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"training needs {' and '.join(missing)}: pip install -e '.[train]' "
                          "(trl==1.16.0, peft==0.21.2), or bash scripts/install.sh --dev")


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
            import trl  # the class named by TRL_CONFIG

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

    def data_file(self) -> Path:
        """The data file whose sha256 a resumed run must match (not a ``data`` property: SFT's key is ``data``)."""
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


class SFTRunConfig(RunConfigBase):
    """Everything that defines an SFT run: the shared keys, its data file and optimisation, and SFT's own
    bookkeeping defaults."""

    TRL_CONFIG: ClassVar[str] = "SFTConfig"
    KIND: ClassVar[str] = "SFT"
    DATA_KEY: ClassVar[str] = "data"
    #: SFTConfig fields that our own keys (or the run directory layout) set; a ``trl:`` entry may not set them too
    OWNED_TRL: ClassVar[dict[str, str]] = {
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

    data: Path = Field(description="JSONL/JSON/Parquet/CSV rows: messages [user, assistant] or prompt/completion")
    epochs: float = Field(3.0, gt=0, description="passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    lr: float = Field(2e-5, gt=0, allow_inf_nan=False, description="peak learning rate (TRL's default 2e-5)")
    batch_size: int = Field(8, ge=1, description="examples per device per step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int | None = Field(1024, ge=2, description="tokens per example (prompt + target); longer are cut")
    # SFT logs and saves less often than the RL trainers, whose steps are far slower
    logging_steps: int = Field(10, ge=1, description="optimizer steps between train_log.jsonl entries")
    save_steps: int = Field(100, ge=1, description="optimizer steps between checkpoints")


def make_sft_config(**values: Any) -> SFTRunConfig:
    """Build an SFT config; errors are one ConfigError line."""
    return make_run_config(SFTRunConfig, **values)


def load_sft_config(path: str | Path | None, **overrides: Any) -> SFTRunConfig:
    """A YAML config (the same snake_case keys as the flags) with ``overrides`` (flags, None = unset) on top."""
    return load_run_config(SFTRunConfig, path, **overrides)


# -- the run directory -----------------------------------------------------------------------------

def check_run_dir(cfg: RunConfigBase, data_sha256: str) -> bool:
    """Refuse a run directory made with another config or other data (naming what differs); True when it
    was made by this config (a resume), False when it is new."""
    out, kind = cfg.out, cfg.KIND
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
                              f"{cfg.data_file()}); use a new --out directory")
    return True


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader (another process of the run, a re-run after a kill) sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
