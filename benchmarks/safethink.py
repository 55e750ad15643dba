"""SafeThink's overhead vs undefended generation: same prompts, backend, seed and token budget.

Two scripted scorers isolate the mechanism's own cost from any judge's cost: ``never`` finds every step
safe (no step triggers; the cost is the monitoring), ``once`` finds the first step unsafe until the steering
prefix is in it (one step triggers once per sample). Targets: <= 1.3x with no trigger, <= 1.6x with one.

One trigger costs what it must: the failing step is generated, scored and thrown away, so a row spends its
first step's tokens twice (plus the prefix). The ratio is therefore about 1 + (first step) / (whole output);
the defaults (512 new tokens, steps of at most 64) are the proportions of a reasoning trace. With a budget
hardly longer than a step (``--max-new-tokens 128 --max-step-tokens 128``) no implementation can get far
below 2x. ``--mode`` compares the implementations (auto: session on transformers, chunked on vLLM).

    .venv/bin/python benchmarks/safethink.py [--model smollm2-135m] [--n-prompts 8] [--max-new-tokens 512]
"""

from __future__ import annotations

import argparse
import time

from safereason.judges import JUDGES
from safereason.records import Verdict


class _Never:
    outputs = ("unsafe",)

    def identity(self) -> dict:
        return {"name": "never"}

    def judge(self, items):
        return [Verdict(unsafe=False, score=0.0) for _ in items]


class _Once(_Never):
    def identity(self) -> dict:
        return {"name": "once"}

    def judge(self, items):
        return [Verdict(unsafe=(u := "think safely" not in i.text), score=float(u)) for i in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm"],
                    help="vllm needs the vLLM environment (.venv-vllm, see scripts/test-vllm.sh)")
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-step-tokens", type=int, default=64)
    ap.add_argument("--mode", default="auto",
                    help="safethink mode: auto, session, chunked, speculative, stepwise")
    args = ap.parse_args()

    from safereason.data import load_benchmark
    from safereason.defenses import build_defense
    from safereason.models.base import SamplingParams
    from safereason.models.transformers_backend import TransformersBackend
    from safereason.reasoning import get_format

    JUDGES.add("bench-never", _Never)
    JUDGES.add("bench-once", _Once)
    if args.backend == "vllm":
        from safereason.models.vllm_backend import VLLMBackend

        backend = VLLMBackend(args.model, dtype="float32")
    else:
        backend = TransformersBackend(args.model, device="cpu", dtype="float32")
    prompts = [p.prompt for p in load_benchmark("smoke").prompts[: args.n_prompts]]
    texts = [backend.render_prompt(p, prefill="<think>\n") for p in prompts]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    fmt = get_format("r1")
    keys = [str(i) for i in range(len(texts))]
    timings: dict[str, list[float]] = {"none": [], "never": [], "once": []}
    tokens: dict[str, int] = {}
    triggered = 0
    backend.generate(texts, SamplingParams(temperature=0.0, max_new_tokens=16), 0)  # warm-up, not timed
    for _ in range(args.repeats):  # alternate the three, so load changes hit all of them alike
        t0 = time.perf_counter()
        plain = backend.generate(texts, params, 0)
        timings["none"].append(time.perf_counter() - t0)
        tokens["none"] = sum(c.n_tokens for c in plain)
        for name in ("never", "once"):
            d = build_defense("safethink", {"scorer": f"bench-{name}", "mode": args.mode,
                                              "max_step_tokens": args.max_step_tokens})
            t0 = time.perf_counter()
            outs = d.generate(backend, texts, prompts, params, 0, fmt=fmt, keys=keys)
            timings[name].append(time.perf_counter() - t0)
            tokens[name] = sum(o.completion.n_tokens for o in outs)
            if name == "once":
                triggered = sum(len(o.control["interventions"]) for o in outs)
            else:  # the first step 'once' throws away is the one 'never' keeps (greedy)
                first = [o.control["steps"][0].get("tokens", 0) for o in outs if o.control["steps"]]
    base = min(timings["none"])
    mode = build_defense("safethink", {"mode": args.mode}).resolve_mode(backend)
    print(f"{args.backend}, {len(texts)} prompts, greedy, {args.max_new_tokens} new tokens max, m=3, "
          f"step = up to a blank line or {args.max_step_tokens} tokens, mode {mode}")
    print(f"undefended:             {base:.2f}s, {tokens['none']} tokens")
    for name, what, target in (("never", "no trigger", 1.3), ("once", "one trigger", 1.6)):
        t = min(timings[name])
        per_token = (t / tokens[name]) / (base / tokens["none"])
        print(f"SafeThink, {what + ':':13s} {t:.2f}s, {tokens[name]} tokens; wall ratio {t / base:.3f}x, "
              f"per-token ratio {per_token:.3f}x (target <= {target}x)")
    print(f"({triggered} interventions over {len(texts)} samples with the 'once' scorer; the discarded first "
          f"step is {sum(first) / max(1, len(first)):.0f} tokens on average (longest {max(first, default=0)}), out of "
          f"{tokens['none'] / len(texts):.0f} per undefended sample)")


if __name__ == "__main__":
    main()
