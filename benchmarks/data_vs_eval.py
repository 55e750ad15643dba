"""Wall time of ``safereason data safechain`` vs the ``safereason eval`` it runs (target <= 1.05x).

The recipe's teacher run *is* an eval; what it adds is the draw, the filter, the pick and the writes of the
dataset and its card. Each command runs in a fresh process (imports, model load, generation, judging, outputs:
what a user waits for) into a fresh directory, alternating the two so that drift on a shared machine hits both
alike; the eval runs on the very prompt file the recipe drew, with the same settings. Reported: the ratio of the
medians and of the minimums (on a shared machine the minimum is the least disturbed run), and the recipe's own
cost measured in-process: rebuilding the dataset from the finished teacher run minus resuming that run alone
(both generate nothing), i.e. the draw, the filter, the pick and the writes.

    python benchmarks/data_vs_eval.py [--model smollm2-135m] [--prompts smoke] [--n 6] [--k 2]
        [--max-new-tokens 64] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def recipe_overhead(data_dir: Path, args: argparse.Namespace, reps: int = 5) -> float:
    """Median of (rebuild the dataset from the finished teacher run) - (resume the teacher run alone)."""
    from safereason.config import load_config_file
    from safereason.data.safechain import SafeChainRecipe, build_safechain
    from safereason.runner import evaluate

    teacher = load_config_file(data_dir / "teacher" / "config.yaml", stored=True)
    teacher = teacher.model_copy(update={"judges": [args.judge]})  # the judges asked for (eval may add others)
    recipe = SafeChainRecipe(prompts=args.prompts, out=data_dir, n=args.n, seed=0)
    diffs = []
    for _ in range(reps):
        start = time.perf_counter()
        evaluate(teacher, progress=False)
        mid = time.perf_counter()
        build_safechain(teacher, recipe, progress=False)
        diffs.append((time.perf_counter() - mid) - (mid - start))
    return statistics.median(diffs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", default="smoke")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--judge", default="rs-match")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    cli = [sys.executable, "-m", "safereason.cli"]
    common = ["--k", str(args.k), "--max-new-tokens", str(args.max_new_tokens), "--judge", args.judge,
              "--think-prefill", "<think>\n", "--seed", "0", "--device", "cpu", "--no-progress"]
    root = Path(tempfile.mkdtemp(prefix="data_vs_eval_"))
    try:
        # the prompt file the recipe draws, for the eval to run on (and a warm-up of the model files)
        warm = root / "warm"
        subprocess.run([*cli, "data", "safechain", "--prompts", args.prompts, "--n", str(args.n), "--teacher",
                        args.model, "--out", str(warm), *common], check=True, stdout=subprocess.DEVNULL)
        prompts = root / "prompts.jsonl"
        shutil.copy(warm / "prompts.jsonl", prompts)
        data_t, eval_t = [], []
        for rep in range(args.reps):
            data_cmd = [*cli, "data", "safechain", "--prompts", args.prompts, "--n", str(args.n), "--teacher",
                        args.model, "--out", str(root / f"data{rep}"), *common]
            eval_cmd = [*cli, "eval", "--benchmark", str(prompts), "--id-column", "id", "--prompt-column", "prompt",
                        "--parts", "full", "--model", args.model, "--out", str(root / f"eval{rep}"), *common]
            pair = [("data", data_cmd), ("eval", eval_cmd)]
            for name, cmd in pair if rep % 2 == 0 else reversed(pair):
                (data_t if name == "data" else eval_t).append(timed(cmd))
        card = json.loads((root / "data0" / "card.json").read_text())
        overhead = recipe_overhead(root / "data0", args)
        print(json.dumps({"model": args.model, "prompts": args.prompts, "n": args.n, "k": args.k,
                          "max_new_tokens": args.max_new_tokens, "data_s": [round(t, 2) for t in data_t],
                          "eval_s": [round(t, 2) for t in eval_t], "kept": card["counts"]["kept"],
                          "ratio_of_medians": round(statistics.median(data_t) / statistics.median(eval_t), 3),
                          "ratio_of_minimums": round(min(data_t) / min(eval_t), 3),
                          "recipe_overhead_s": round(overhead, 3),
                          "overhead_over_min_eval": round(overhead / min(eval_t), 4), "target": 1.05}, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
