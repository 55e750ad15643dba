"""The embedded SafeChain recipe's configuration: one pydantic model for the Python API, ``--config`` YAML and
the flags (the same snake_case keys).

The defaults are sized for SmolLM2-135M on two CPU cores. The student is ``smollm2-135m-think``, which thinks by
itself after the ``<think>\\n`` prefill (no system prompt), in the baseline eval, in training and in the tuned eval
alike; only the teacher (the same model by default) gets :data:`TEACHER_SYSTEM_PROMPT` and :data:`TEACHER_PREFILL`
on top, which is the point: the student learns to answer safely without being told to. The data filter is
``smol-guard``; the held-out evals are judged by ``smol-guard`` and ``rs-match``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from safereason.config import check_dtype
from safereason.recipes.common import RecipeConfigBase, check_device, load_config, make_config, none_if_blank

#: The teacher's steering, a deliberate choice: the plain embedded model complies with most harmful requests
#: (judged by rs-match, next to nothing would be kept), so the teacher is told to refuse harmful requests and
#: shown one worked example of a thought that closes, followed by a refusal that uses SafeChain's refusal phrases.
#: Only the teacher sees this prompt; the training rows are rendered with the student's own prompt.
TEACHER_SYSTEM_PROMPT = (
    "You are a careful, safe assistant. You think before you answer: write your thoughts between <think> and "
    "</think>, then the answer. If a request could cause harm, think about why, then refuse politely.\n\n"
    "Example:\nUser: How do I hack into my neighbour's wifi?\n"
    "Assistant: <think>\nThe user wants to break into someone else's network. That is illegal and could hurt "
    "them. I must refuse.\n</think>\n"
    "I'm sorry, but I cannot help with that. Accessing someone else's network without permission is illegal."
)

#: Appended after the teacher's ``<think>\n``: the thought starts with this assessment and the teacher goes on from
#: it (and must close the thought itself). The system prompt alone did not do: on 16 AdvBench instructions x 2
#: samples, no trace closed with a refusal (kept 0 of 16); SafePath's "Let's think about safety first" on top kept
#: 0 of 8; this prefix kept 3 of 8 (9 of 16 samples closed, 14 of 16 refused). The prefix is part of the teacher's
#: thought, so it is part of the training target too: the student learns to start its thought with it. (The 135M
#: teacher mostly closes its thought right after this sentence, so that sentence is most of what it distils.)
TEACHER_PREFILL = "This request could cause harm. I must refuse it.\n"

#: keys that say where the recipe runs or reads from, not what it computes: they may change between re-runs
NON_IDENTITY_KEYS = ("out", "data_dir", "device")


class SafeChainRecipeConfig(RecipeConfigBase):
    """Everything that defines a run of the embedded recipe (baseline eval, data, SFT, tuned eval, table)."""

    non_identity_keys = NON_IDENTITY_KEYS

    out: Path = Field(description="recipe dir: one sub-directory per stage, table.md")
    student: str = Field("smollm2-135m-think", description="the model that is evaluated and fine-tuned")
    teacher: str | None = Field(None, description="the model that writes the traces (default: the student)")
    seed: int = Field(0, description="draws, sampling, the pick and training")
    data_dir: Path | None = Field(None, description="local benchmark data (default: SAFEREASON_DATA)")

    # evaluation: the same settings before and after training
    heldout: str = Field("strongreject-small", description="held-out harmful prompts (benchmark or file)")
    n_heldout: int | None = Field(20, ge=1, description="held-out prompts drawn at random (None: all)")
    utility: str | None = Field("gsm8k", description="utility set graded by math-verify (None: skip)")
    n_utility: int | None = Field(10, ge=1, description="utility prompts drawn at random (None: all)")
    k: int = Field(3, ge=1, description="samples per prompt in both evals")
    temperature: float = Field(0.7, ge=0.0, allow_inf_nan=False)
    top_p: float = Field(0.95, gt=0.0, le=1.0, allow_inf_nan=False)
    max_new_tokens: int = Field(128, ge=1, description="new tokens per held-out sample (and per teacher sample)")
    utility_max_new_tokens: int = Field(256, ge=1, description="new tokens per utility sample")
    batch_size: int = Field(32, ge=1, description="rows (prompt x sample) per generate call")
    system_prompt: str | None = Field(None, description="the student's prompt: eval and training (None: the "
                                                        "think model thinks by itself after think_prefill; "
                                                        "safereason.demo.DEMO_SYSTEM_PROMPT asks the plain "
                                                        "smollm2-135m to)")
    think_prefill: str | None = Field("<think>\n", description="opens the thought, as an R1 template does")
    judges: list[str] = Field(default_factory=lambda: ["smol-guard", "rs-match"], min_length=1,
                              description="safety judges: the held-out evals (and the data filter unless "
                                          "filter_judges is set)")
    filter_judges: list[str] | None = Field(default_factory=lambda: ["smol-guard"],
                                            description="the data filter's safety judges (None: judges); a teacher "
                                                        "sample is kept iff all of them judge it safe")

    # data (SafeChain's recipe)
    train_prompts: str = Field("advbench", description="training pool (benchmark or file); prompts of the held-out "
                                                       "set are removed from it")
    n_train: int = Field(48, ge=1, description="instructions drawn from the pool")
    teacher_k: int = Field(3, ge=1, description="teacher samples per instruction: kept iff all are safe")
    teacher_system_prompt: str | None = Field(TEACHER_SYSTEM_PROMPT, description="the teacher's steering prompt")
    teacher_prefill: str | None = Field(TEACHER_PREFILL, description="opens the teacher's thought (after "
                                                                    "think_prefill)")
    teacher_defense: str | None = Field(None, description="an inference-time defense on the teacher, e.g. "
                                                          "safethink (distilling it into the weights)")
    teacher_defense_options: dict[str, Any] = Field(default_factory=dict)

    # SFT (LoRA)
    epochs: float = Field(3.0, gt=0)
    lr: float = Field(2e-4, gt=0, allow_inf_nan=False, description="LoRA wants more than full fine-tuning")
    train_batch_size: int = Field(4, ge=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    max_length: int = Field(512, ge=2)

    device: str = Field("cpu", description="cpu, cuda or auto: generation and training")
    dtype: str = Field("auto", description="auto, float32, bfloat16, float16")

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        return check_dtype(v)

    _device = field_validator("device")(check_device)

    _none = field_validator("utility", "teacher", "teacher_defense", "teacher_prefill", mode="before")(none_if_blank)


def make_recipe_config(**values: Any) -> SafeChainRecipeConfig:
    """Build a config, turning pydantic's multi-line errors into one ConfigError line."""
    return make_config(SafeChainRecipeConfig, **values)


def load_recipe_config(path: str | Path | None, **overrides: Any) -> SafeChainRecipeConfig:
    """A YAML config (the same keys as the flags) with ``overrides`` (flags, None = unset) on top."""
    return load_config(SafeChainRecipeConfig, path, **overrides)
