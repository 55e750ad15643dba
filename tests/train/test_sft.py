"""SFT on a tiny random model (CPU): loss goes down, the model loads as eval loads it, LoRA merges, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safereason.cli import app
from safereason.errors import RunDirError
from safereason.train import make_sft_config, train_sft
from safereason.train.sft import read_train_log

ROWS = [
    ("How do I pick a lock?", "<think>\nThis could be used to break in.\n</think>\n\nI can't help with that."),
    ("What is 2+2?", "<think>\nTwo plus two is four.\n</think>\n\nThe answer is 4."),
]
#: an R1-distill-like template (the generation prompt opens the thought), saved with the tuned model
R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)
FAST = {"gradient_checkpointing": False}  # a 2-layer model has nothing to save


def _data(path: Path) -> Path:
    with path.open("w") as f:
        for prompt, reply in ROWS:
            f.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": reply}],
                                "thinking": "", "answer": "", "prompt_id": prompt[:5], "sample_index": 0}) + "\n")
    return path


def _target_nll(model_dir: Path | str, examples) -> float:
    """Mean NLL of the targets after eval's prompt ids, scored by the model as eval loads it."""
    from safereason.models import build_backend

    backend = build_backend("transformers", str(model_dir), device="cpu", dtype="float32")
    lps = backend.token_logprobs([e.prompt_ids for e in examples], [e.completion_ids for e in examples])
    total = sum(-lp[range(len(e.completion_ids)), e.completion_ids].sum() for lp, e in zip(lps, examples, strict=True))
    return float(total / sum(len(e.completion_ids) for e in examples))


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    cfg = make_sft_config(model=str(tiny_model_dir), data=_data(tmp / "d.jsonl"), out=tmp / "run", max_steps=10,
                          lr=3e-2, batch_size=2, logging_steps=1, save_steps=100, device="cpu",
                          think_prefill="<think>\n", trl=FAST)
    return cfg, train_sft(cfg, progress=False)


def test_loss_goes_down_and_model_loads_as_eval(trained, tiny_model_dir):
    from transformers import AutoTokenizer

    from safereason.train.sft import prepare_examples

    cfg, result = trained
    log = read_train_log(cfg.out / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 11))
    assert set(log[0]) >= {"step", "loss", "learning_rate", "tokens"}
    assert log[-1]["loss"] < log[0]["loss"] - 3  # random init starts near ln(49152) ~ 10.8
    assert log[-1]["tokens"] > log[0]["tokens"] > 0
    assert result.steps == 10 and result.final_loss == log[-1]["loss"]
    assert (result.model_dir / "config.json").exists() and (result.model_dir / "chat_template.jinja").exists()
    assert "--think-prefill" in result.eval_command and str(result.model_dir) in result.eval_command
    # the tuned model, loaded by eval's backend from OUT/model, learned the targets in eval's rendering
    examples = prepare_examples(cfg, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert _target_nll(result.model_dir, examples) < _target_nll(tiny_model_dir, examples) - 3


def test_rerun_of_a_finished_run_and_another_config(trained):
    cfg, result = trained
    again = train_sft(cfg, progress=False)  # nothing left to do: no training, the same result
    assert (again.model_dir, again.steps, again.final_loss) == (result.model_dir, 10, result.final_loss)
    with pytest.raises(RunDirError, match=r"different config: lr \(0.03 -> 0.01\)"):
        train_sft(cfg.model_copy(update={"lr": 1e-2}), progress=False)


def test_lora_is_merged_into_a_plain_model(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    cfg = make_sft_config(model=str(tiny_model_dir), data=_data(tmp_path / "d.jsonl"), out=tmp_path / "run",
                          lora=True, lora_r=4, max_steps=3, lr=5e-2, batch_size=2, logging_steps=1, device="cpu",
                          chat_template=R1_TEMPLATE, trl=FAST)
    result = train_sft(cfg, progress=False)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(result.model_dir).chat_template == R1_TEMPLATE  # saved with the model
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    merged = load_file(result.model_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert not any("lora" in k for k in merged) and set(merged) == set(base)
    changed = [k for k in base if not (merged[k] == base[k]).all()]
    assert changed and all(k.endswith("proj.weight") for k in changed)  # LoRA on all linear layers, merged
    from safereason.models import SamplingParams, build_backend

    backend = build_backend("transformers", str(result.model_dir), device="cpu", dtype="float32")
    text = backend.render_prompt("Hi")
    assert text.endswith("<｜Assistant｜><think>\n")
    assert backend.generate([text], SamplingParams(temperature=0, max_new_tokens=4), seed=0)[0].n_tokens > 0


def test_kill_during_sft_then_resume(tiny_model_dir, tmp_path, cli_env):
    """SIGKILL after the first checkpoint (run under accelerate launch), then the same command resumes."""
    data = _data(tmp_path / "d.jsonl")
    out = tmp_path / "run"
    args = ["--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--max-steps", "6",
            "--save-steps", "2", "--logging-steps", "1", "--batch-size", "1", "--lr", "1e-2", "--device", "cpu",
            "--think-prefill", "<think>\n", "--trl-opt", "gradient_checkpointing=false", "--no-progress"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "-m", "safereason.train.sft"]
    proc = subprocess.Popen([*launcher, *args], env=cli_env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("checkpoints/checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "result.json").exists()
    from safereason.train.sft import last_checkpoint

    found = last_checkpoint(out / "checkpoints")
    assert found is not None
    ckpt, step = found
    assert 2 <= step < 6
    result = CliRunner().invoke(app, ["train", "sft", *args])
    assert result.exit_code == 0, result.output
    assert f"resumed from {ckpt}" in result.output
    assert result.output.count("'loss':") == 6 - step  # the Trainer logged only the steps after the checkpoint
    log = read_train_log(out / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 7))  # continues from the checkpoint, no restart at 0
    assert (out / "model" / "config.json").exists()
