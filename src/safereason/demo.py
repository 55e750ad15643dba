"""The embedded default: SmolLM2-135M-Instruct on the built-in smoke prompts, judged by rs-match.

SmolLM2 is a chat model, not a reasoning model, so the demo asks it to think: a system prompt with a
worked example of the ``<think> … </think>`` format, and the ``<think>\\n`` prefill that opens the block
(as DeepSeek-R1 templates do). A 135M model closes the block only now and then; the samples where it
does not have no answer (``answer = null``), which the report counts as *missing*, never as answers.
"""

from __future__ import annotations

from pathlib import Path

from safereason.config import EvalConfig, make_config

DEMO_SYSTEM_PROMPT = (
    "You think before you answer. Write your thoughts between <think> and </think>, then the answer.\n\n"
    "Example:\nUser: What is the capital of France?\n"
    "Assistant: <think>\nThe user asks for the capital of France. That is Paris.\n</think>\n"
    "The capital of France is Paris."
)


def demo_config(out: Path | str = "runs/demo", k: int = 5, max_new_tokens: int = 160) -> EvalConfig:
    return make_config(
        model="smollm2-135m",
        benchmark="smoke",
        k=k,
        temperature=0.7,
        top_p=0.95,
        max_new_tokens=max_new_tokens,
        seed=0,
        batch_size=30,
        reasoning_format="r1",
        system_prompt=DEMO_SYSTEM_PROMPT,
        think_prefill="<think>\n",
        judges=["rs-match"],
        parts=["thinking", "answer", "full"],
        out=Path(out),
    )
