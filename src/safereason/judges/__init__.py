"""Safety judges, registered by name."""

from safereason.judges import code_exec as _code_exec  # noqa: F401  (registers the judges)
from safereason.judges import ensemble as _ensemble  # noqa: F401
from safereason.judges import exact_match as _exact_match  # noqa: F401
from safereason.judges import harmbench_cls as _harmbench_cls  # noqa: F401
from safereason.judges import llama_guard as _llama_guard  # noqa: F401
from safereason.judges import llm_judge as _llm_judge  # noqa: F401
from safereason.judges import math_verify as _math_verify  # noqa: F401
from safereason.judges import openai_moderation as _openai_moderation  # noqa: F401
from safereason.judges import pair_judges as _pair_judges  # noqa: F401
from safereason.judges import refusal as _refusal  # noqa: F401
from safereason.judges import rs_match as _rs_match  # noqa: F401
from safereason.judges import smol_guard as _smol_guard  # noqa: F401
from safereason.judges import wildguard as _wildguard  # noqa: F401
from safereason.judges.base import JUDGES, Judge, JudgeItem, build_judge, close_judge, identity_hash

__all__ = ["JUDGES", "Judge", "JudgeItem", "build_judge", "close_judge", "identity_hash"]
