"""MoreThink's cost vs plain generation of the same number of tokens, same backend and prompts.

MoreThink runs its rounds (each one batched call over the samples still thinking, extending their exact
token ids) and the answer call; plain generation then produces, in one call, as many tokens per row as
the longest MoreThink row used (EOS ignored, greedy). Target: ratio <= 1.25. ``--budget-mode`` picks
SafeChain's accounting (default; the answer gets max-new-tokens - budget) or the shared variant.

    .venv/bin/python benchmarks/morethink.py [--model smollm2-135m] [--rounds 3] [--budget 96] \
        [--budget-mode safechain|shared]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=96)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget-mode", choices=("safechain", "shared"), default="safechain")
    args = ap.parse_args()

    from safereason.data import load_benchmark
    from safereason.models.base import SamplingParams
    from safereason.models.transformers_backend import TransformersBackend
    from safereason.reasoning import get_format
    from safereason.reasoning.controls import more_think

    backend = TransformersBackend(args.model, device="cpu", dtype="float32")
    prompts = [p.prompt for p in load_benchmark("smoke").prompts[: args.n_prompts]]
    texts = [backend.render_prompt(p, prefill="<think>\n") for p in prompts]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    fmt = get_format("r1")
    t_more, t_plain = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = more_think(backend, texts, params, 0, fmt=fmt, keys=[str(i) for i in range(len(texts))],
                         rounds=args.rounds, budget=args.budget, budget_mode=args.budget_mode)
        t_more.append(time.perf_counter() - t0)
        longest = max(r.completion.n_tokens for r in res)
        t0 = time.perf_counter()
        backend.generate(texts, replace(params, max_new_tokens=longest, ignore_eos=True), 0)
        t_plain.append(time.perf_counter() - t0)
    rounds = [r.rounds for r in res]
    thought = [r.thinking_tokens for r in res]
    print(f"{len(texts)} prompts, greedy, budget mode {args.budget_mode}; MoreThink rounds used: mean "
          f"{sum(rounds) / len(rounds):.1f}, max {max(rounds)}; thinking tokens mean "
          f"{sum(thought) / len(thought):.0f}; answer budget {res[0].answer_budget}; longest row {longest} tokens")
    print(f"MoreThink:        {min(t_more):.2f}s")
    print(f"plain generation: {min(t_plain):.2f}s ({longest} tokens per row)")
    print(f"ratio:            {min(t_more) / min(t_plain):.3f}x  (target <= 1.25x)")


if __name__ == "__main__":
    main()
