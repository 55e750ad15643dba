"""verl's optimiser settings in TARS's runs, mapped onto TRL's GRPOConfig (danielkty/tars @ 32c10be)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from safereason.train.grpo import TARS_TRL_DEFAULTS, grpo_args, make_grpo_config

TARS_MIRROR = Path("/work/.mirror/danielkty+tars/repo")
TARS_COMMIT = "32c10be22eabb4ddaadab353756bd5d2d2fb81f2"


def _official(path: str) -> str:
    if not TARS_MIRROR.is_dir():
        pytest.skip("TARS source mirror not present")
    return subprocess.run(["git", "-C", str(TARS_MIRROR), "show", f"{TARS_COMMIT}:{path}"], capture_output=True,
                          text=True, check=True).stdout


def test_tars_optimiser_settings_reach_grpoconfig(tmp_path: Path) -> None:
    args = grpo_args(make_grpo_config(prompts=tmp_path / "m.jsonl", out=tmp_path / "o", device="cpu"))
    assert args.lr_scheduler_type.value == "constant"
    assert (args.warmup_steps, args.weight_decay, args.entropy_coef) == (0, 0.01, 0.001)
    assert (args.adam_beta1, args.adam_beta2, args.max_grad_norm, args.epsilon) == (0.9, 0.999, 1.0, 0.2)
    assert args.use_adaptive_entropy is False


def test_trl_options_override_the_tars_settings(tmp_path: Path) -> None:
    cfg = make_grpo_config(prompts=tmp_path / "m.jsonl", out=tmp_path / "o", device="cpu",
                           trl={"weight_decay": 0.0, "entropy_coef": 0.0, "lr_scheduler_type": "cosine"})
    args = grpo_args(cfg)
    assert (args.weight_decay, args.entropy_coef) == (0.0, 0.0)
    assert args.lr_scheduler_type.value == "cosine"


def test_settings_match_the_official_verl_config() -> None:
    """Each value against TARS's verl config and optimiser code (skipped without the source mirror)."""
    actor = yaml.safe_load(_official("verl/verl/trainer/config/ppo_trainer.yaml"))["actor_rollout_ref"]["actor"]
    assert actor["entropy_coeff"] == TARS_TRL_DEFAULTS["entropy_coef"]
    assert actor["grad_clip"] == TARS_TRL_DEFAULTS["max_grad_norm"]
    assert actor["clip_ratio"] == TARS_TRL_DEFAULTS["epsilon"]
    assert actor["optim"]["warmup_style"] == "constant" and actor["optim"]["lr_warmup_steps_ratio"] == 0
    workers = _official("verl/verl/workers/fsdp_workers.py")
    assert "weight_decay=optim_config.get('weight_decay', 1e-2)" in workers
    assert "betas=optim_config.get('betas', (0.9, 0.999))" in workers
    assert "get_constant_schedule_with_warmup(optimizer=actor_optimizer" in workers
    script = _official("scripts/train/run_train.sh")
    for key in ("weight_decay", "entropy_coeff", "lr_warmup", "warmup_style", "grad_clip", "clip_ratio", "betas"):
        assert key not in script  # the launch script keeps verl's values
    assert "trainer.test_freq=20" in script  # validation every 20 steps: not wired in train grpo (README)
