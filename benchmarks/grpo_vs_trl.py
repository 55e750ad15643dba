"""Step time of ``safereason train grpo`` vs a plain TRL ``GRPOTrainer`` script, and the reward's share of a step.

Both run the same model, prompts (rendered to the same text: chat template + ``<think>\\n``), reward functions
(TARS's reward from :mod:`safereason.train.rewards` with CPU judges: rs-match for safety, the refusal proxy for
helpfulness) and GRPOConfig settings, each in a fresh process, alternating so that drift on a shared machine hits
both alike. The step time is TRL's own ``step_time`` metric (generation, reward, loss, optimizer step), median
over the steps after the first; the ratio of the medians is the number to hold under 1.05. safereason adds the
eval rendering check, per-label statistics (refusal string match, thinking and completion lengths) on every
reward call, the step log and the run-directory bookkeeping. The reward's share is the time spent inside the
reward function over the step time (its judges are called once per step, batched over all completions).

    python benchmarks/grpo_vs_trl.py [--model smollm2-135m] [--steps 6] [--reps 2] [--completion-length 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [("How do I pick a lock?", "harmful"), ("How do I bake bread?", "benign"),
           ("How do I kill a Python process?", "ambiguous"), ("Write a phishing email.", "harmful"),
           ("What is 12 times 17?", "benign"), ("Where can I shoot a good photo?", "ambiguous"),
           ("How do I make a fake ID?", "harmful"), ("Explain photosynthesis.", "benign")]
PREFILL = "<think>\n"


class TimedReward:
    """TARS's reward (string judges), timing every call."""

    __name__ = "tars"

    def __init__(self) -> None:
        from safereason.train.rewards import make_tars_reward

        self.inner = make_tars_reward("rs-match", "refusal-proxy")
        self.seconds: list[float] = []

    def __call__(self, prompts, completions, **kw):
        start = time.perf_counter()
        out = self.inner(prompts=prompts, completions=completions, **kw)
        self.seconds.append(time.perf_counter() - start)
        return out


def settings(a: argparse.Namespace) -> dict:
    return {"num_generations": a.generations, "max_completion_length": a.completion_length, "temperature": 0.6,
            "beta": 0.001, "learning_rate": 1e-6, "max_steps": a.steps, "seed": 0}


def run_ours(a: argparse.Namespace, out: Path) -> dict:
    from safereason.train.common import read_train_log
    from safereason.train.grpo import make_grpo_config, train_grpo

    mix = out.parent / "mix.jsonl"
    s = settings(a)
    cfg = make_grpo_config(model=a.model, prompts=mix, out=out, num_generations=s["num_generations"],
                           prompts_per_step=a.prompts_per_step, batch_size=a.prompts_per_step * a.generations,
                           max_completion_length=s["max_completion_length"], temperature=s["temperature"],
                           beta=s["beta"], lr=s["learning_rate"], max_steps=s["max_steps"], seed=s["seed"],
                           save_steps=10_000, think_prefill=PREFILL, device="cpu", dtype="float32",
                           trl={"gradient_checkpointing": False})
    reward = TimedReward()
    train_grpo(cfg, reward_funcs=[reward], progress=False)
    return {"step_time": [r["step_time"] for r in read_train_log(out / "train_log.jsonl")],
            "reward_time": reward.seconds}


def run_plain(a: argparse.Namespace, out: Path) -> dict:
    """TRL's documented recipe: a prompt dataset, GRPOConfig, GRPOTrainer(model, reward_funcs, ...).train()."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from safereason.models.resolve import resolve_model

    path = resolve_model(a.model).path
    tok = AutoTokenizer.from_pretrained(path)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             + PREFILL for p, _ in PROMPTS]
    data = Dataset.from_dict({"prompt": texts, "label": [lab for _, lab in PROMPTS],
                              "think_prefill": [PREFILL] * len(PROMPTS)})
    s = settings(a)
    args = GRPOConfig(output_dir=str(out / "checkpoints"), per_device_train_batch_size=a.prompts_per_step *
                      a.generations, gradient_accumulation_steps=1, data_seed=0, logging_steps=1, save_steps=10_000,
                      use_cpu=True, bf16=False, fp16=False, report_to="none", disable_tqdm=True,
                      gradient_checkpointing=False, **s)
    reward = TimedReward()
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=args,
                          reward_funcs=[reward], train_dataset=data, processing_class=tok)
    trainer.train()
    trainer.save_model(str(out / "model"))
    return {"step_time": [h["step_time"] for h in trainer.state.log_history if "step_time" in h],
            "reward_time": reward.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--completion-length", type=int, default=32)
    ap.add_argument("--run", choices=("ours", "plain"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:
        result = (run_ours if a.run == "ours" else run_plain)(a, a.out)
        (a.out.parent / f"{a.out.name}.json").write_text(json.dumps(result))
        return
    passed = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items() if k not in ("run", "out", "reps")]
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    shares: dict[str, list[float]] = {"ours": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        with (Path(tmp) / "mix.jsonl").open("w", encoding="utf-8") as f:
            for i, (p, lab) in enumerate(PROMPTS):
                f.write(json.dumps({"id": f"b{i}", "prompt": p, "label": lab, "source": "bench"}) + "\n")
        for rep in range(a.reps):
            for kind in ("plain", "ours"):
                out = Path(tmp) / f"{kind}{rep}"
                proc = subprocess.run([sys.executable, __file__, *passed, f"--run={kind}", f"--out={out}"],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
                r = json.loads((Path(tmp) / f"{kind}{rep}.json").read_text())
                steps, rewards = r["step_time"][1:], r["reward_time"][1:]  # the first step warms up
                times[kind] += steps
                shares[kind] += [rt / st for rt, st in zip(rewards, steps, strict=False)]
                print(f"{kind} rep {rep}: median step {statistics.median(steps):.2f} s, reward share "
                      f"{statistics.median(shares[kind][-len(steps):]):.1%}", flush=True)
    ours, plain = statistics.median(times["ours"]), statistics.median(times["plain"])
    print(f"step time: safereason {ours:.2f} s, plain TRL {plain:.2f} s, ratio {ours / plain:.3f} (target <= 1.05)")
    print(f"reward share of a step: safereason {statistics.median(shares['ours']):.1%}, plain TRL "
          f"{statistics.median(shares['plain']):.1%}")


if __name__ == "__main__":
    main()
