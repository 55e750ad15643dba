"""The embedded default: ``smollm2-135m-think`` on the built-in smoke prompts, undefended and under SafeThink.

Two ordinary run dirs under ``out``: ``undefended`` and ``safethink`` (SafeThink with the offline guard
``smol-guard`` as its scorer), each judged by ``smol-guard`` (P(unsafe), agreement with human labels in the
README) and ``rs-match`` (SafeChain's refusal strings), with ``refusal-string`` added on the benign prompts
for over-refusal. The demo prints Safe@1 / Safe@K / ConsSafe@K per part, then SafeThink's change per metric
with a paired bootstrap CI over prompts (``compare``). Both runs resume after a kill.

``smollm2-135m-think`` is SmolLM2-135M-Instruct with a LoRA adapter made by ``safereason recipe think``; it
opens its thought itself after the ``<think>\\n`` prefill and closes it within a few dozen tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safereason.config import EvalConfig, make_config

DEMO_MODEL = "smollm2-135m-think"
#: what asks the plain chat model (``smollm2-135m``) to think: a worked example of the ``<think>`` format; the
#: recipes that start from the plain model use it (the thinking model needs none)
DEMO_SYSTEM_PROMPT = (
    "You think before you answer. Write your thoughts between <think> and </think>, then the answer.\n\n"
    "Example:\nUser: What is the capital of France?\n"
    "Assistant: <think>\nThe user asks for the capital of France. That is Paris.\n</think>\n"
    "The capital of France is Paris."
)
DEMO_JUDGES = ["smol-guard", "rs-match"]
#: SafeThink's scorer in the demo: the offline guard (a continuous P(unsafe), as the threshold needs)
DEMO_DEFENSE_OPTIONS: dict[str, Any] = {"scorer": "smol-guard"}


def demo_config(out: Path | str = "runs/demo", k: int = 2, max_new_tokens: int = 128,
                defense: str | None = None) -> EvalConfig:
    return make_config(
        model=DEMO_MODEL,
        benchmark="smoke",
        k=k,
        temperature=0.7,
        top_p=0.95,
        max_new_tokens=max_new_tokens,
        seed=0,
        batch_size=36,  # one batch per run at the default K (18 prompts x 2)
        reasoning_format="r1",
        think_prefill="<think>\n",
        judges=list(DEMO_JUDGES),
        parts=["thinking", "answer", "full"],
        defense=defense,
        defense_options=dict(DEMO_DEFENSE_OPTIONS) if defense else {},
        out=Path(out),
    )


@dataclass
class DemoResult:
    undefended: Any
    safethink: Any
    comparison: Any


def run_demo(out: Path | str = "runs/demo", *, k: int = 2, max_new_tokens: int = 128,
             progress: bool = True) -> DemoResult:
    from safereason.compare import compare_runs
    from safereason.runner import evaluate

    out = Path(out)
    plain = evaluate(demo_config(out / "undefended", k, max_new_tokens), progress=progress)
    guarded = evaluate(demo_config(out / "safethink", k, max_new_tokens, defense="safethink"), progress=progress)
    cmp = compare_runs([out / "undefended", out / "safethink"], labels=["undefended", "safethink"],
                       baseline="undefended", part="full")
    return DemoResult(plain, guarded, cmp)
