"""Model presets: SafeChain's system prompts and settings per model, chosen from the hub id, overridable,
listed by ``safereason list`` and recorded in the manifest."""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from safereason.config import make_config
from safereason.errors import ConfigError
from safereason.models.presets import (
    PRESETS,
    SAFECHAIN_GREEDY,
    SAFECHAIN_SAMPLED,
    find_preset,
    preset_record,
)
from safereason.reasoning import FORMATS

# sha256 of MODEL_CONFIG[...]["system_prompt"], uw-nsl/safechain config.py @ d9c0d79a58bb1180f42664610f01490d5062f0f7
SYSTEM_SHA256 = {
    "Qwen/QwQ-32B-Preview": "50795fcf7f4df9be65090ce980b63e8d82f51b5cbad9492fa504aefa3ad3c9a0",
    "NovaSky-AI/Sky-T1-32B-Flash": "c5ae4aa0b0d6fcadd6fa8977f5e55b1f2dccb7582bd05b80385e2f22650a9f8d",
    "Skywork/Skywork-o1-Open-Llama-3.1-8B": "acaa1205e5e7c10035880d5ecd423a7c26e8e5caeb5b1f6ff686fe994e2ab895",
}
# the local models whose MODEL_CONFIG entry has "system_prompt": False (same file), the base model excepted
NO_SYSTEM = [f"deepseek-ai/DeepSeek-R1-Distill-{s}" for s in
             ("Qwen-1.5B", "Qwen-7B", "Llama-8B", "Qwen-14B", "Qwen-32B", "Llama-70B")] + \
            ["meta-llama/Llama-3.3-70B-Instruct"]
R1 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def test_presets_are_safechains_models_and_prompts():
    assert sorted(p.model for p in PRESETS.values()) == sorted([*NO_SYSTEM, *SYSTEM_SHA256])
    for model, digest in SYSTEM_SHA256.items():
        prompt = PRESETS[model.lower()].system_prompt
        assert prompt is not None and hashlib.sha256(prompt.encode()).hexdigest() == digest
    assert all(PRESETS[m.lower()].system_prompt is None for m in NO_SYSTEM)
    for p in PRESETS.values():
        assert p.max_new_tokens == 16000 and p.reasoning_format in FORMATS.names()
        assert p.reasoning_format == ("r1" if "R1-Distill" in p.model else "skyt1" if "Sky-T1" in p.model else "none")


def test_safechain_generation_settings():
    assert SAFECHAIN_GREEDY == {"temperature": 0.0, "top_p": 1.0, "top_k": None, "k": 1, "max_new_tokens": 16000}
    assert SAFECHAIN_SAMPLED == {"temperature": 0.6, "top_p": 0.95, "top_k": None, "k": 5, "max_new_tokens": 16000}
    cfg = make_config(model=R1)  # the sampled setting is the default: Safe@K needs samples
    assert {k: getattr(cfg, k) for k in SAFECHAIN_SAMPLED} == SAFECHAIN_SAMPLED


@pytest.mark.parametrize("name", [R1, R1.lower(), R1 + "@main", R1 + "@0123abc"])
def test_chosen_from_the_hub_id(name):
    assert find_preset(name) is PRESETS[R1.lower()]
    cfg = make_config(model=name)
    assert (cfg.max_new_tokens, cfg.system_prompt, cfg.reasoning_format) == (16000, None, "r1")


def test_no_preset_for_other_models_or_local_paths(tmp_path):
    assert find_preset("smollm2-135m") is None and find_preset("Qwen/Qwen2.5-7B-Instruct") is None
    local = tmp_path / "DeepSeek-R1-Distill-Qwen-7B"
    assert find_preset(str(local)) is None
    cfg = make_config(model=str(local), preset="Qwen/QwQ-32B-Preview")  # named explicitly for a local copy
    assert cfg.reasoning_format == "none" and cfg.system_prompt.startswith("You are a helpful and harmless")
    off = make_config(model=R1, preset="none")
    assert (off.max_new_tokens, off.reasoning_format) == (512, "r1")
    with pytest.raises(ConfigError, match="unknown model preset 'deepseek-ai/DeepSeek-R1-Distill-Qwen-9B'.*Did you"):
        make_config(model="x", preset="deepseek-ai/DeepSeek-R1-Distill-Qwen-9B")


def test_explicit_keys_win():
    cfg = make_config(model="NovaSky-AI/Sky-T1-32B-Flash", max_new_tokens=2048, system_prompt=None,
                      reasoning_format="r1")
    assert (cfg.max_new_tokens, cfg.system_prompt, cfg.reasoning_format) == (2048, None, "r1")
    sky = make_config(model="NovaSky-AI/Sky-T1-32B-Flash", temperature=0.0, k=1)
    assert sky.reasoning_format == "skyt1" and "<|begin_of_thought|>" in sky.system_prompt
    assert (sky.temperature, sky.k, sky.max_new_tokens) == (0.0, 1, 16000)
    # a dumped config (a run dir's config.yaml) stays as it was
    again = make_config(**{**cfg.model_dump()})
    assert again.generation_identity() == cfg.generation_identity()


def test_thinking_controls_follow_the_preset_format():
    assert make_config(model=R1, thinking="more").max_new_tokens == 16000
    with pytest.raises(ConfigError, match="thinking=more needs a reasoning format with thinking markers"):
        make_config(model="Qwen/QwQ-32B-Preview", thinking="more")


def test_preset_record_names_overrides():
    cfg = make_config(model=R1, max_new_tokens=64)
    rec = preset_record(cfg.model, cfg.preset, cfg.model_dump())
    assert rec is not None and rec["model"] == R1 and rec["overridden"] == ["max_new_tokens"]
    assert rec["sets"] == {"system_prompt": None, "reasoning_format": "r1", "max_new_tokens": 16000}
    assert preset_record("smollm2-135m", None, {}) is None


def test_manifest_records_the_preset(tiny_backend, tmp_path):
    from safereason.runner import evaluate

    res = evaluate(dict(model=R1, benchmark="smoke", limit=1, k=1, max_new_tokens=4, n_bootstrap=10,
                        out=str(tmp_path / "r")), backend=tiny_backend, progress=False)
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["preset"]["model"] == R1 and manifest["preset"]["overridden"] == ["max_new_tokens"]
    assert f"model preset: `{R1}`" in (res.run_dir / "summary.md").read_text()


def test_list_shows_presets():
    from safereason.cli import app

    out = CliRunner().invoke(app, ["list"])
    assert out.exit_code == 0, out.output
    assert "model presets" in out.output
    assert f"{R1}: format r1, no system prompt, max_new_tokens 16000" in out.output
    assert "NovaSky-AI/Sky-T1-32B-Flash: format skyt1, system prompt 'Your role" in out.output
