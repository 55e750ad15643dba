"""``recipe think``'s configuration: one pydantic model for the Python API, ``--config`` YAML and the flags.

Defaults are sized for SmolLM2-135M on two CPU cores: about 180 built-in prompts, teacher replies of at most 64
new tokens, three epochs of rank-8 LoRA, an adapter of about 5 MB in float16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from safereason.recipes.common import RecipeConfigBase, check_device, load_config, make_config, none_if_blank

BUILTIN = "builtin"
#: keys that say where the recipe runs or reads from, not what it computes
NON_IDENTITY_KEYS = ("out", "data_dir", "device")
#: the projections of a Llama block
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ThinkRecipeConfig(RecipeConfigBase):
    """Everything that defines a run of ``recipe think`` (prompts, teacher, data, LoRA SFT, adapter, measure)."""

    non_identity_keys = NON_IDENTITY_KEYS

    out: Path = Field(description="recipe dir: prompts, teacher/, data/, sft/, adapter/, measure/, CARD.md")
    base: str = Field("smollm2-135m", description="the model that is taught to think (and its own teacher)")
    teacher: str | None = Field(None, description="the model that writes the answers (default: the base)")
    prompts: str = Field(BUILTIN, description="'builtin' or a JSONL file: prompt, label (benign/harmful), "
                                              "optional id, category, thought, answer")
    n_math: int = Field(40, ge=0, description="math word problems in the built-in set")
    seed: int = Field(0, description="thought wording, math numbers, teacher sampling, training, measuring")
    data_dir: Path | None = Field(None, description="local benchmark data for the XSTest measure")

    teacher_max_new_tokens: int = Field(64, ge=8, description="tokens per teacher reply (cut replies are trimmed "
                                                              "to their last full sentence)")
    teacher_temperature: float = Field(0.7, ge=0.0, allow_inf_nan=False)
    batch_size: int = Field(32, ge=1, description="rows per generate call (teacher and measure)")

    epochs: float = Field(3.0, gt=0)
    lr: float = Field(3e-4, gt=0, allow_inf_nan=False)
    train_batch_size: int = Field(8, ge=1)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_PROJECTIONS), min_length=1)
    max_length: int = Field(384, ge=16)
    adapter_dtype: str = Field("float16", description="dtype of the exported adapter: float16 or float32")

    # the measure: the demo's settings (smoke, K 5, 128 new tokens, temperature 0.7, seed 0) without its system
    # prompt, with and without the <think>\n prefill, and XSTest's safe prompts
    measure_k: int = Field(5, ge=1)
    measure_max_new_tokens: int = Field(128, ge=1)
    measure_temperature: float = Field(0.7, ge=0.0, allow_inf_nan=False)
    measure_no_prefill: bool = Field(True, description="also measure smoke without the <think>\\n prefill")
    n_xstest: int | None = Field(50, ge=0, description="XSTest safe prompts measured (the first N; 0: skip; "
                                                        "None: all 250)")

    device: str = Field("cpu", description="cpu, cuda or auto")

    _device = field_validator("device")(check_device)

    @field_validator("adapter_dtype")
    @classmethod
    def _adapter_dtype(cls, v: str) -> str:
        if v not in ("float16", "float32"):
            raise ValueError(f"adapter_dtype {v!r}: use float16 or float32")
        return v

    _none = field_validator("teacher", mode="before")(none_if_blank)


def make_think_config(**values: Any) -> ThinkRecipeConfig:
    """Build a config, turning pydantic's multi-line errors into one ConfigError line."""
    return make_config(ThinkRecipeConfig, **values)


def load_think_config(path: str | Path | None, **overrides: Any) -> ThinkRecipeConfig:
    """A YAML config (the same keys as the flags) with ``overrides`` (flags, None = unset) on top."""
    return load_config(ThinkRecipeConfig, path, **overrides)
