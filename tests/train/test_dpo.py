"""The DPO baseline on a tiny random model (CPU): pairs ranked from K samples by a reward, TRL's DPOTrainer,
checkpoints and logs, pairs reused and training resumed after a kill; config == flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from safereason.cli import app
from safereason.errors import ConfigError
from safereason.train.common import last_checkpoint, read_train_log
from safereason.train.dpo import load_dpo_config, make_dpo_config, rank_pairs

MIX = [("How do I pick a lock?", "harmful"), ("What is 2+2?", "benign"), ("Write ransomware", "harmful")]


def _mix(path: Path) -> Path:
    with path.open("w") as f:
        for i, (prompt, label) in enumerate(MIX):
            f.write(json.dumps({"id": f"m{i}", "prompt": prompt, "label": label, "source": "hand"}) + "\n")
    return path


def _row(i: int) -> SimpleNamespace:
    return SimpleNamespace(id=f"m{i}", label="benign", text=f"prompt {i}")


def test_pairs_are_best_against_worst_ties_and_failures_give_none():
    texts = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"], ["j", "k", "l"]]
    scores = [[0.2, 0.9, 0.1], [0.5, 0.5, 0.5], [None, 1.0, None], [1.0, None, 0.0]]
    pairs = rank_pairs([_row(i) for i in range(4)], texts, scores)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("m0", "b", "c"), ("m3", "j", "l")]
    assert pairs[0]["chosen_score"] == 0.9 and pairs[0]["prompt"] == "prompt 0"
    # among equals the first best and the last worst are taken: deterministic
    assert rank_pairs([_row(0)], [["x", "y", "z"]], [[1.0, 1.0, 0.0]])[0]["chosen"] == "x"


def test_yaml_config_equals_flags(tmp_path):
    flags = ["--model", "m", "--prompts", "mix.jsonl", "--out", "o", "--safety-judge", "rs-match", "--helpfulness",
             "proxy", "--samples-per-prompt", "4", "--max-completion-length", "32", "--temperature", "1.0", "--lr",
             "0.001", "--beta", "0.2", "--max-steps", "3", "--batch-size", "2", "--grad-accum", "2", "--lora",
             "--device", "cpu", "--trl-opt", "loss_type=ipo"]
    result = CliRunner().invoke(app, ["train", "dpo", *flags, "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["samples_per_prompt"] == 4 and printed["trl"] == {"loss_type": "ipo"} and printed["lora"]
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(printed))
    assert load_dpo_config(tmp_path / "d.yaml") == make_dpo_config(**printed)
    with pytest.raises(ConfigError, match="set beta through beta, not through trl"):
        make_dpo_config(prompts="m", out="o", trl={"beta": 1})
    with pytest.raises(ConfigError, match="not DPOConfig fields: bogus"):
        make_dpo_config(prompts="m", out="o", trl={"bogus": 1})


SCRIPT = """
import sys
from pathlib import Path
from safereason.train.dpo import make_dpo_config, train_dpo

calls = Path(sys.argv[3])

def reward(prompts, completions, **kw):  # text length: the samples of a prompt differ
    with calls.open("a") as f:
        f.write(f"{len(completions)}\\n")
    return [float(len(c)) for c in completions]

cfg = make_dpo_config(model=sys.argv[1], prompts=sys.argv[2], out=sys.argv[4], samples_per_prompt=3,
                      max_completion_length=8, max_steps=4, batch_size=1, save_steps=1, lr=1e-3, device="cpu",
                      think_prefill="<think>\\n", trl={"gradient_checkpointing": False})
r = train_dpo(cfg, reward=reward, progress=False)
print("RESULT", r.steps, r.pairs, r.resumed_from)
"""


def test_dpo_writes_pairs_checkpoints_and_resumes_after_a_kill(tiny_model_dir, tmp_path, cli_env):
    script = tmp_path / "run_dpo.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out, calls = tmp_path / "run", tmp_path / "calls.txt"
    cmd = [sys.executable, str(script), str(tiny_model_dir), str(_mix(tmp_path / "m.jsonl")), str(calls), str(out)]
    proc = subprocess.Popen(cmd, env=cli_env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while not list(out.glob("checkpoints/checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "result.json").exists()
    assert calls.read_text().split() == ["9"]  # one batched scoring call: 3 prompts × 3 samples
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 3 and all(len(p["chosen"]) > len(p["rejected"]) for p in pairs)
    assert all(p["prompt"].endswith("<think>\n") for p in pairs)
    found = last_checkpoint(out / "checkpoints")
    assert found is not None and 1 <= found[1] < 4
    done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"RESULT 4 3 {found[0]}" in done.stdout
    assert calls.read_text().split() == ["9"]  # the pairs were reused, not sampled again
    log = read_train_log(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all("rewards/margins" in r for r in log)
    assert (out / "model" / "config.json").exists()
    assert json.loads((out / "result.json").read_text())["pairs"] == 3
