"""One SFT config for flags and YAML; a run directory refuses another config."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from typer.testing import CliRunner

from safereason.cli import app, main
from safereason.errors import ConfigError, RunDirError
from safereason.train.config import check_run_dir, load_sft_config, make_sft_config

FLAGS = ["--model", "some/model", "--data", "rows.jsonl", "--out", "runs/sft", "--lora", "--epochs", "2",
         "--max-steps", "7", "--lr", "0.0003", "--seed", "5", "--batch-size", "4", "--grad-accum", "2",
         "--max-length", "512", "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0.1",
         "--lora-target", "q_proj,v_proj", "--reasoning-format", "qwen3", "--system-prompt", "Be safe.",
         "--think-prefill", "<think>\n", "--disable-thinking", "--logging-steps", "3", "--save-steps", "9",
         "--save-total-limit", "1", "--device", "cpu", "--dtype", "float32", "--trl-opt", "warmup_steps=0.1",
         "--trl-opt", "gradient_checkpointing=false"]
KEYS = {"model": "some/model", "data": "rows.jsonl", "out": "runs/sft", "lora": True, "epochs": 2, "max_steps": 7,
        "lr": 3e-4, "seed": 5, "batch_size": 4, "grad_accum": 2, "max_length": 512, "lora_r": 8, "lora_alpha": 16,
        "lora_dropout": 0.1, "lora_target_modules": ["q_proj", "v_proj"], "reasoning_format": "qwen3",
        "system_prompt": "Be safe.", "think_prefill": "<think>\n", "enable_thinking": False, "logging_steps": 3,
        "save_steps": 9, "save_total_limit": 1, "device": "cpu", "dtype": "float32",
        "trl": {"warmup_steps": 0.1, "gradient_checkpointing": False}}


def _printed(*args: str) -> dict:
    result = CliRunner().invoke(app, ["train", "sft", *args, "--print-config"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


def test_yaml_config_equals_flags(tmp_path):
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(KEYS))
    from_flags = _printed(*FLAGS)
    from_file = _printed("--config", str(tmp_path / "sft.yaml"))
    assert from_flags == from_file
    assert load_sft_config(tmp_path / "sft.yaml") == make_sft_config(**from_flags)
    # the printed config is itself a config file
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(from_flags))
    assert _printed("--config", str(tmp_path / "printed.yaml")) == from_flags


def test_flags_override_the_file(tmp_path):
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(KEYS))
    got = _printed("--config", str(tmp_path / "sft.yaml"), "--lr", "0.001", "--full")
    assert got["lr"] == 0.001 and got["lora"] is False and got["seed"] == 5


@pytest.mark.parametrize(("values", "message"), [
    ({}, "data: Field required"),
    ({"data": "d.jsonl", "out": "o", "device": "cuda:1"}, "unknown device 'cuda:1'"),
    ({"data": "d.jsonl", "out": "o", "reasoning_format": "r2"}, "reasoning format"),
    ({"data": "d.jsonl", "out": "o", "trl": {"learning_rate": 1.0}}, "set learning_rate through lr, not through trl"),
    ({"data": "d.jsonl", "out": "o", "trl": {"warmup_ratioo": 0.1}}, "not SFTConfig fields: warmup_ratioo"),
    ({"data": "d.jsonl", "out": "o", "lr": 0}, "lr: Input should be greater than 0"),
    ({"data": "d.jsonl", "out": "o", "bogus": 1}, "bogus: Extra inputs are not permitted"),
])
def test_bad_values(values, message):
    with pytest.raises(ConfigError) as e:
        make_sft_config(**values)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_error_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "d.jsonl").write_text('{"text": "no messages"}\n')
    monkeypatch.setattr(sys, "argv", ["safereason", "train", "sft", "--model", "smollm2-135m", "--data",
                                      str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "has neither a 'messages' column" in err
    assert not (tmp_path / "o").exists()  # nothing written before the data was checked


def test_run_dir_refuses_another_config(tmp_path):
    cfg = make_sft_config(data=tmp_path / "d.jsonl", out=tmp_path / "run", lr=1e-4)
    assert check_run_dir(cfg, "abc") is False
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(cfg.to_yaml())
    (tmp_path / "run" / "data.json").write_text(json.dumps({"sha256": "abc"}))
    assert check_run_dir(cfg, "abc") is True
    # where it runs may change on resume; what it learns may not
    assert check_run_dir(cfg.model_copy(update={"device": "cpu", "data": tmp_path / "copy.jsonl"}), "abc") is True
    other = cfg.model_copy(update={"lr": 2e-4, "lora": True})
    with pytest.raises(RunDirError, match=r"different config: lora \(False -> True\), lr \(0.0001 -> 0.0002\)"):
        check_run_dir(other, "abc")
    with pytest.raises(RunDirError, match="trained on other data"):
        check_run_dir(cfg, "def")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds no SFT run"):
        check_run_dir(cfg.model_copy(update={"out": foreign}), "abc")


def test_missing_train_extra_is_one_clear_error(monkeypatch):
    import importlib.util

    from safereason.train.config import require_train_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(ConfigError, match=r"training needs trl: pip install -e '\.\[train\]'"):
        require_train_extra()
    monkeypatch.setattr(importlib.util, "find_spec", real)
    require_train_extra()  # installed here: no error
