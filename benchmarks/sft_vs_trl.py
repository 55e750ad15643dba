"""Wall time of ``safereason train sft`` vs a plain TRL ``SFTTrainer`` script on the same rows and settings.

Each run is a fresh process (imports, model load, data preparation, training, saving: what a user waits for),
alternating the two so that drift on a shared machine hits both alike; the ratios are of the medians of wall
time and of CPU time (target <= 1.05). The plain script is TRL's documented recipe: a conversational
prompt/completion dataset, ``SFTConfig`` with the same optimisation, checkpoint and precision settings,
``train()``, ``save_model()``. safereason does more (renders rows as eval does, writes train_log.jsonl, counts
tokens, checks the run directory), which is what is measured.

    python benchmarks/sft_vs_trl.py [--model smollm2-135m] [--rows 64] [--steps 10] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPICS = ["pick a lock", "bake bread", "write a phishing email", "sort a list in Python", "make a fake ID",
          "learn the guitar", "hack a wifi network", "solve 12 * 17"]


def write_rows(path: Path, n: int) -> None:
    """``n`` rows shaped as ``safereason data safechain`` writes them (thinking, then the answer)."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            thinking = f"The user asks how to {topic}. " + "Let me consider whether this is safe and helpful. " * 4
            answer = f"Here is what I can say about how to {topic}: " + "a careful, step by step reply. " * 3
            f.write(json.dumps({"messages": [{"role": "user", "content": f"How do I {topic}? (#{i})"},
                                             {"role": "assistant",
                                              "content": f"<think>\n{thinking}\n</think>\n\n{answer}"}],
                                "thinking": thinking, "answer": answer, "prompt_id": f"p{i}", "sample_index": 0,
                                "category": "bench"}) + "\n")


def plain_trl(model: str, data: Path, out: Path, steps: int, batch: int) -> None:
    """The plain TRL script (run in its own process with ``--plain``)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from safereason.models.resolve import resolve_model

    path = resolve_model(model).path
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": [r["messages"][0]], "completion": [r["messages"][1]]} for r in rows])
    args = SFTConfig(output_dir=str(out / "checkpoints"), learning_rate=1e-5, max_steps=steps,
                     per_device_train_batch_size=batch, max_length=1024, seed=0, data_seed=0, logging_steps=1,
                     save_steps=100, save_total_limit=2, use_cpu=True, bf16=False, fp16=False, report_to="none",
                     disable_tqdm=True, gradient_checkpointing=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=args,
                         train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(path))
    trainer.train()
    trainer.save_model(str(out / "model"))


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; CPU time is the steadier number on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--plain", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.plain:
        plain_trl(a.model, Path(a.plain[0]), Path(a.plain[1]), a.steps, a.batch)
        return
    tmp = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    data = tmp / "rows.jsonl"
    write_rows(data, a.rows)
    ours_t, plain_t = [], []
    try:
        for rep in range(a.reps):
            ours = [sys.executable, "-m", "safereason.train.sft", "--model", a.model, "--data", str(data),
                    "--out", str(tmp / f"ours{rep}"), "--max-steps", str(a.steps), "--batch-size", str(a.batch),
                    "--lr", "1e-5", "--logging-steps", "1", "--save-steps", "100", "--device", "cpu",
                    "--dtype", "float32", "--trl-opt", "gradient_checkpointing=false", "--no-progress"]
            plain = [sys.executable, __file__, "--model", a.model, "--steps", str(a.steps), "--batch", str(a.batch),
                     "--plain", str(data), str(tmp / f"plain{rep}")]
            for name, cmd, times in (("safereason", ours, ours_t), ("plain TRL", plain, plain_t))[::1 - 2 * (rep % 2)]:
                times.append(timed(cmd))
                print(f"rep {rep}: {name:10s} wall {times[-1][0]:7.1f} s, CPU {times[-1][1]:7.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    setting = f"{a.model}, {a.rows} rows, {a.steps} steps x batch {a.batch}, CPU"
    for i, what in enumerate(("wall", "CPU")):
        o, p = statistics.median(t[i] for t in ours_t), statistics.median(t[i] for t in plain_t)
        print(f"median {what}: safereason train sft {o:.1f} s, plain TRL {p:.1f} s, ratio {o / p:.3f} ({setting})")


if __name__ == "__main__":
    main()
