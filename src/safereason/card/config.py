"""The card's settings: one pydantic model for the Python API, ``card.yaml`` and the flags, plus the presets.

A preset fixes the battery's sizes (prompts per set, samples per prompt, token budgets, attack budgets); any of
them can be overridden with ``sizes: {key: value}``. ``DIR/card.yaml`` ties a card dir to its settings: a re-run
with other settings is refused, naming what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safereason.config import format_validation_error
from safereason.recipes.common import RecipeConfigBase, load_config, make_config, none_if_blank

#: keys that say where the card runs or reads from, not what it measures: they may change between re-runs
NON_IDENTITY_KEYS = ("out", "data_dir", "device", "references", "price_per_mtok", "backend_options")


class PresetSizes(BaseModel):
    """The battery's sizes; ``None`` as a count means the whole set."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(ge=1, description="samples per prompt (harmful, over-refusal, robustness)")
    max_new_tokens: int = Field(ge=1)
    harmful_set: str = "strongreject-small"
    n_harmful: int | None = Field(None, ge=1)
    n_xstest: int | None = Field(None, ge=1, description="XSTest safe prompts (over-refusal)")
    benign_sets: list[str] = Field(default_factory=list, description="further benign sets for over-refusal")
    n_benign: int | None = Field(None, ge=1)
    n_prefill: int | None = Field(None, ge=1, description="HarmBench behaviours with their targets prefilled")
    n_static: int | None = Field(None, ge=1, description="prompts drawn from tars-adversarial and rainbow-teaming")
    math_set: str = "gsm8k"
    n_math: int | None = Field(None, ge=1)
    n_code: int | None = Field(None, ge=0, description="HumanEval problems (0 turns the code stage off)")
    utility_k: int = Field(1, ge=1)
    utility_max_new_tokens: int = Field(ge=1)
    n_agreement: int | None = Field(None, ge=1, description="human-labelled items per judge-agreement set")
    gcg: bool = Field(False, description="run GCG (local models only)")
    n_gcg: int = Field(10, ge=1)
    gcg_steps: int = Field(250, ge=1)
    pair: bool = Field(False, description="run PAIR (the model attacks itself unless pair_attacker is given)")
    n_pair: int = Field(10, ge=1)
    pair_streams: int = Field(5, ge=1)
    pair_iterations: int = Field(3, ge=1)
    pair_attacker: str | None = None
    batch_size: int = Field(32, ge=1)


#: quick: the embedded model on 2 CPU cores in minutes, CIs honestly wide; standard: a GPU afternoon;
#: full: SafeChain's sizes (K = 5, whole sets)
PRESETS: dict[str, PresetSizes] = {
    "quick": PresetSizes(k=2, max_new_tokens=128, n_harmful=12, n_xstest=10, n_prefill=6, n_static=6,
                         math_set="gsm8k", n_math=5, n_code=3, utility_max_new_tokens=192, n_agreement=60),
    "standard": PresetSizes(k=3, max_new_tokens=4096, harmful_set="strongreject", n_xstest=None,
                            benign_sets=["jbb-benign"], n_prefill=100, n_static=200, math_set="math500", n_math=100,
                            n_code=None, utility_max_new_tokens=4096, n_agreement=None, gcg=True, n_gcg=10,
                            gcg_steps=100),
    "full": PresetSizes(k=5, max_new_tokens=16000, harmful_set="strongreject", benign_sets=["jbb-benign"],
                        math_set="math500", utility_max_new_tokens=16000, gcg=True, n_gcg=50, gcg_steps=250,
                        pair=True, n_pair=50, pair_streams=20, pair_iterations=3),
}


def default_judges() -> list[str]:
    """``smol-guard`` when it is registered (the offline judge with a continuous score), else ``rs-match``."""
    from safereason.judges import JUDGES

    return ["smol-guard"] if "smol-guard" in JUDGES.names() else ["rs-match"]


class CardConfig(RecipeConfigBase):
    """Everything that defines a card: what is measured, on which model or endpoint, at which sizes."""

    config_label = "card"
    non_identity_keys = NON_IDENTITY_KEYS

    out: Path = Field(description="card dir: a run dir per stage, card.{html,md,json}")
    model: str | None = Field(None, description="alias, local path or hub id (or the served name at --endpoint)")
    endpoint: str | None = Field(None, description="an OpenAI-compatible base URL (e.g. `safereason serve`)")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="KEY=VALUE backend options")
    preset: str = Field("quick", description="quick, standard or full")
    sizes: dict[str, Any] = Field(default_factory=dict, description="overrides of the preset's sizes")
    defense: str | None = Field(None, description="run the battery with and without this defense")
    defense_options: dict[str, Any] = Field(default_factory=dict)
    judges: list[str] = Field(default_factory=default_judges, min_length=1, description="safety judges")
    judge_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    eval_options: dict[str, Any] = Field(default_factory=dict, description="further eval keys for every stage "
                                                                          "(system_prompt, think_prefill, ...)")
    references: list[Path] = Field(default_factory=list, description="other card dirs shown side by side")
    price_per_mtok: float | None = Field(None, ge=0, allow_inf_nan=False, description="money per 1M tokens")
    seed: int = 0
    temperature: float = Field(0.6, ge=0.0, allow_inf_nan=False)
    top_p: float = Field(0.95, gt=0.0, le=1.0, allow_inf_nan=False)
    n_bootstrap: int = Field(1000, ge=0)
    data_dir: Path | None = None
    device: str | None = None
    dtype: str | None = None

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}: use {', '.join(PRESETS)}")
        return v

    _none = field_validator("defense", "endpoint", mode="before")(none_if_blank)

    @model_validator(mode="after")
    def _target(self) -> CardConfig:
        if self.model is None and self.endpoint is None:
            raise ValueError("give --model or --endpoint")
        self.resolved_sizes()  # a bad size override fails here
        return self

    def resolved_sizes(self) -> PresetSizes:
        """The preset's sizes with ``sizes`` on top."""
        try:
            return PresetSizes(**{**PRESETS[self.preset].model_dump(), **self.sizes})
        except ValidationError as e:
            raise ValueError(format_validation_error(e).replace("invalid config", "invalid sizes")) from None

    @property
    def target(self) -> str:
        """What the card is about: the model, or the endpoint (with its served model name)."""
        if self.endpoint is None:
            return str(self.model)
        return f"{self.model or 'default'} at {self.endpoint}"


def make_card_config(**values: Any) -> CardConfig:
    """Build a config, turning pydantic's multi-line errors into one ConfigError line."""
    return make_config(CardConfig, **values)


def load_card_config(path: str | Path | None, **overrides: Any) -> CardConfig:
    """A ``card.yaml`` (the same keys as the flags) with ``overrides`` (flags, None = unset) on top."""
    return load_config(CardConfig, path, **{k: v for k, v in overrides.items() if v != [] and v != {}})
