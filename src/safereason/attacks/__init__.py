"""Jailbreak attacks: each turns benchmark behaviours into attacked prompts and writes an adversarial benchmark
file (``DIR/adversarial.jsonl``) that ``safereason eval`` runs against any model and defense.

The registry :data:`ATTACKS` names them; the attacks' code is imported lazily (GCG needs torch)."""

from safereason.attacks.base import (
    ADVERSARIAL_FILE,
    ATTACKS,
    AdversarialFile,
    AttackError,
    AttackInfo,
    AttackResult,
    Behaviour,
    load_behaviours,
    result_for,
)

ATTACKS.add("gcg", AttackInfo(
    "gcg", "Greedy Coordinate Gradient: an adversarial suffix optimised on the model's gradients toward the "
    "target string (white-box, transformers models)", "steps",
    "Zou et al., Universal and Transferable Adversarial Attacks on Aligned Language Models, 2023 (arXiv:2307.15043)"))
ATTACKS.add("prefill", AttackInfo(
    "prefill", "Prefilling: the answer (or the thought) is forced to start with the target string", "none",
    "Andriushchenko et al., Jailbreaking Leading Safety-Aligned LLMs with Simple Adaptive Attacks, 2024 "
    "(arXiv:2404.02151); Qi et al., Safety Alignment Should Be Made More Than Just a Few Tokens Deep, 2024"))
ATTACKS.add("pair", AttackInfo(
    "pair", "Prompt Automatic Iterative Refinement: an attacker LLM refines jailbreaks from the target's replies and "
    "a judge's score (black-box, any backend)", "queries",
    "Chao et al., Jailbreaking Black Box Large Language Models in Twenty Queries, 2023 (arXiv:2310.08419)"))

__all__ = ["ADVERSARIAL_FILE", "ATTACKS", "AdversarialFile", "AttackError", "AttackInfo", "AttackResult",
           "Behaviour", "load_behaviours", "result_for"]
