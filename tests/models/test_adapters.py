"""Adapted aliases: a LoRA adapter merged with plain torch gives base + B @ A * alpha / r (as peft's own merge),
once per adapter into the cache, and the shipped ``smollm2-135m-think`` adapter is there and small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safereason.errors import ModelLoadError
from safereason.models import adapters
from safereason.models.adapters import ADAPTED, ADAPTER_CONFIG, ADAPTER_WEIGHTS, merge_lora


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peft LoRA adapter (r 4, alpha 8) on q_proj and down_proj of the tiny model, B made non-zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("lora")
    peft.save_pretrained(out)
    return out


def test_merge_is_base_plus_scaled_b_a(tiny_model_dir, lora_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    merged = merge_lora(tiny_model_dir, lora_dir, tmp_path / "merged")
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    got = load_file(str(merged / "model.safetensors"))
    lora = load_file(str(lora_dir / ADAPTER_WEIGHTS))
    changed = 0
    for name, w in base.items():
        a_key = "base_model.model." + name.replace(".weight", ".lora_A.weight")
        if a_key in lora:
            b = lora[a_key.replace("lora_A", "lora_B")]
            assert torch.allclose(got[name], w + b @ lora[a_key] * (8 / 4), atol=1e-6), name
            assert not torch.equal(got[name], w)
            changed += 1
        else:
            assert torch.equal(got[name], w), name
    assert changed == 2 * 2  # two modules in each of two layers
    # the same weights as peft's merge_and_unload, and a plain model directory transformers loads
    from peft import PeftModel

    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(lora_dir))
    ref_sd = ref.merge_and_unload().state_dict()
    loaded = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    assert all(torch.allclose(loaded[k], ref_sd[k], atol=1e-6) for k in ref_sd)
    assert (merged / "tokenizer_config.json").is_file() and "sha256" in (merged / "SOURCE").read_text()


def test_alias_merges_once_into_the_cache(tiny_model_dir, lora_dir, tmp_path, monkeypatch):
    from safereason.models.resolve import resolve_model

    monkeypatch.setenv("SAFEREASON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(ADAPTED, "tiny-think", adapters.AdaptedModel("tiny-think", str(tiny_model_dir), lora_dir,
                                                                      "test"))
    first = resolve_model("tiny-think")
    assert first.is_local and Path(first.path).parent == tmp_path / "cache" / "models"
    stamp = (Path(first.path) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny-think").path == first.path  # merged once, then reused
    assert (Path(first.path) / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list((tmp_path / "cache" / "models").glob("*.tmp*"))


def test_a_bad_adapter_is_one_clear_error(tiny_model_dir, lora_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(lora_dir, bad)
    cfg = json.loads((bad / ADAPTER_CONFIG).read_text())
    (bad / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ModelLoadError, match="plain LoRA"):
        merge_lora(tiny_model_dir, bad, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_shipped_think_adapter_is_small_and_documented():
    model = ADAPTED["smollm2-135m-think"]
    weights = model.adapter_dir / ADAPTER_WEIGHTS
    assert weights.is_file() and weights.stat().st_size <= 6_000_000
    cfg = json.loads((model.adapter_dir / ADAPTER_CONFIG).read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] >= 1
    card = (model.adapter_dir / "CARD.md").read_text()
    assert "recipe think" in card and "thought closes" in card


@pytest.mark.slow
def test_think_alias_resolves_to_the_merged_embedded_model(smollm2_dir):
    from safetensors.torch import load_file

    from safereason.models.resolve import resolve_model

    resolved = resolve_model("smollm2-135m-think")
    assert resolved.is_local and "smollm2-135m-think-" in resolved.path
    base = load_file(str(smollm2_dir / "model.safetensors"))
    merged = load_file(str(Path(resolved.path) / "model.safetensors"))
    deltas = adapters.lora_deltas(ADAPTED["smollm2-135m-think"].adapter_dir)
    assert deltas and set(merged) == set(base)
    for name, w in base.items():
        expected = w + deltas[name] if name in deltas else w
        assert torch.allclose(merged[name], expected, atol=1e-5), name


def test_list_shows_the_think_alias():
    from typer.testing import CliRunner

    from safereason.cli import app

    res = CliRunner().invoke(app, ["list"])
    assert res.exit_code == 0 and "smollm2-135m-think" in res.output
