"""What ``safereason serve`` adds to the eval machinery, as pure functions and constants (no model, no HTTP):

- **On-unsafe policy.** SafeThink reports per sample, in its ``control`` record, every intervention with
  ``accepted`` (whether a steered attempt reached the threshold). An intervention left unaccepted means the
  monitored reasoning is still scored unsafe after its B attempts. ``on_unsafe="refuse"`` (the default)
  answers it with ``finish_reason: "content_filter"`` (OpenAI's convention for withheld output) and a short
  refusal as content, withholding the reasoning; ``"return"`` keeps the paper's satisficing rule and returns
  the last attempt. The verdict is in ``safereason.verdict`` either way.
- **The steering prefix is reasoning.** Where the defense injected its prefix into what the reasoning format
  calls the answer (the model had not opened a thought, or the prompt closed it), the text through the prefix
  is returned as reasoning: the prefix is never part of ``content``.
- **finish_reason** is the model's: ``stop`` when it stopped (EOS or a stop string), ``length`` only when the
  token budget ran out. A thought that never closed has ``content: null`` either way.
- **Scorer check.** SafeThink's threshold needs a continuous P(unsafe): a refusal-string scorer (rs-match) says
  "unsafe" for every trace that does not refuse, so every benign request would be steered and, under the
  refuse policy, refused. Such a scorer is refused at start unless forced; guard models fit.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from safereason.defenses import Defense
from safereason.reasoning.formats import ReasoningFormat, Split
from safereason.serve.schema import ServeError

log = logging.getLogger("safereason.serve")

#: backends whose prompt text is the local tokenizer's chat template, so earlier turns can be rendered too
LOCAL_TEMPLATE_BACKENDS = ("transformers", "vllm")
OnUnsafe = Literal["refuse", "return"]
ON_UNSAFE = ("refuse", "return")
#: the content of a withheld answer (``finish_reason: "content_filter"``)
REFUSAL = "I'm sorry, but I can't help with that."
#: guard models whose verdict is a probability: the SafeThink scorers that fit a served endpoint
GUARD_SCORERS = (
    "smol-guard", "llama-guard-3-1b", "llama-guard-3-8b", "llama-guard-4-12b", "wildguard", "harmbench-cls",
)
#: scorers known to give a continuous P(unsafe) (harm-rubric: from the judge's logprobs, unless turned off)
CONTINUOUS_SCORERS = (*GUARD_SCORERS, "llama-guard", "harmbench-cls-mistral", "openai-moderation", "harm-rubric")
#: scorers whose score is 0 or 1 (a string match): unfit to steer live traffic
BINARY_SCORERS = ("rs-match", "advbench-prefixes", "refusal-string", "exact-match")


def check_scorer(defense: Defense | None, *, allow_binary: bool = False, warn: bool = True) -> None:
    """Refuse (unless ``allow_binary``) a SafeThink scorer with no continuous score; warn (with ``warn``) when
    serving with one anyway, or with a scorer not known to give a continuous score."""
    name = getattr(defense, "scorer_name", None)
    if name is None:
        return
    options = getattr(defense, "scorer_options", None) or {}
    fit = ", ".join(GUARD_SCORERS)
    if name in BINARY_SCORERS or (name == "harm-rubric" and options.get("logprobs") is False):
        msg = (f"SafeThink's scorer {name!r} gives no continuous score (a string match scores every trace that "
               "does not refuse as unsafe), so it flags every benign request as unsafe at the first steps; use a "
               f"guard model with --judge: {fit}")
        if not allow_binary:
            raise ServeError(msg + " (or --allow-binary-scorer to serve with it anyway)")
        if warn:
            log.warning("%s", msg)
    elif name not in CONTINUOUS_SCORERS and warn:
        log.warning("SafeThink's scorer %r is not known to give a continuous P(unsafe); a binary scorer flags "
                    "benign requests as unsafe. Guard models that fit: %s", name, fit)


def final_verdict(control: Any) -> str | None:
    """``unsafe`` when the defense left a monitored step below its threshold after its attempts (SafeThink: an
    intervention not ``accepted``), ``safe`` when none, None when the defense reports no such record."""
    interventions = control.get("interventions") if isinstance(control, dict) else None
    if not isinstance(interventions, list):
        return None
    return "unsafe" if any(not iv.get("accepted") for iv in interventions) else "safe"


def split_guarded(fmt: ReasoningFormat, response: str, prompt_text: str, prefix: str | None) -> Split:
    """``fmt.split``, except that a steering ``prefix`` the defense injected where the format sees answer text
    moves, with everything before it, into the reasoning. ``prefix`` is None when the defense did not steer."""
    split = fmt.split(response, prompt_text)
    if not prefix or prefix not in (split.answer or ""):
        return split
    cut = response.rfind(prefix) + len(prefix)
    head, tail = fmt.split(response[:cut], prompt_text), fmt.split(response[cut:], prompt_text + response[:cut])
    parts = [head.thinking, head.answer, tail.thinking if tail.status != "no_thinking" else None]
    reasoning = "\n\n".join(p for p in parts if p)
    status = tail.status if tail.status != "no_thinking" else split.status
    return Split(thinking=reasoning, answer=tail.answer, thinking_closed=status == "closed", status=status)

