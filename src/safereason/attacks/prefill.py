"""Prefilling: the model's answer (or its thought) is forced to start with the behaviour's target string.

On open weights this is the strongest cheap attack (Andriushchenko et al. 2024; Qi et al. 2024): no optimisation,
one forward pass. The attack itself only writes the adversarial file: each row keeps the behaviour's prompt and
carries ``prefill`` (the target) and ``prefill_where`` (``answer`` or ``thought``), which ``eval`` appends after
the rendered prompt (see :func:`safereason.reasoning.controls.prompt_prefill`). So the attack runs on any model
``eval`` can prefill: transformers and vLLM exactly, an OpenAI-compatible server through ``continue_final_message``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safereason.attacks.base import (
    AttackError,
    AttackResult,
    Behaviour,
    load_behaviours,
    result_for,
    run_attack,
)
from safereason.reasoning.controls import PREFILL_META, PREFILL_WHERE_META

WHERE = ("answer", "thought")


def prefill_result(b: Behaviour, where: str, config: dict[str, Any]) -> AttackResult:
    """The row for one behaviour: its prompt as it is, the target as the prompt's own prefill."""
    if where not in WHERE:
        raise AttackError(f"--where must be answer or thought, not {where!r}")
    return result_for(b, b.prompt.prompt, "prefill", config=config, steps=0,
                      meta={PREFILL_META: b.target, PREFILL_WHERE_META: where})


def attack_prefill(benchmark: str, out: str | Path, *, where: str = "answer", target_from: str = "auto",
                   target_column: str = "target", limit: int | None = None,
                   data_dir: str | Path | None = None) -> list[AttackResult]:
    """Write ``out/adversarial.jsonl``: every behaviour with its target as a prefill at ``where``."""
    if where not in WHERE:
        raise AttackError(f"--where must be answer or thought, not {where!r}")
    config = {"where": where, "target_from": target_from, "target_column": target_column}
    behaviours = load_behaviours(benchmark, limit, target_from=target_from, target_column=target_column,
                                 data_dir=data_dir)
    identity = {"attack": "prefill", "config": config, "benchmark": benchmark}
    return run_attack(out, identity, behaviours, lambda b: prefill_result(b, where, config))
