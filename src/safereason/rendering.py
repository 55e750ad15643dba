"""The one place a prompt becomes the exact text a model is fed: eval, training (SFT, GRPO, DPO), the attacks
(GCG, PAIR), steering search and ``serve`` all call :func:`render_prompt`.

A model tuned on text it never sees at inference learns the wrong thing, an attack optimised against another
rendering than eval's attacks another prompt, and a served model answering another text than eval measured is
another model: so the rule lives here once. In order:

1. the chat template (``backend.render_prompt``: the system prompt, which a defense may add to or replace,
   earlier turns, the user turn, template switches such as ``enable_thinking``);
2. ``think_prefill`` (e.g. ``<think>\\n``);
3. the thinking control (ZeroThink / LessThink; a defense's own overrides the config's), see
   :func:`safereason.reasoning.controls.control_prefill`;
4. a defense's prefix (SafePath's), see ``Defense.prefill``;
5. ``--prefill``, then the prompt's own prefill (``meta``, written by the prefilling attack).

The ids are ``backend.encode(text)``: no special tokens added, the template holds any BOS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from safereason.reasoning import get_format
from safereason.reasoning.controls import control_prefill, prompt_prefill

if TYPE_CHECKING:
    from safereason.config import EvalConfig
    from safereason.defenses.base import Defense


def template_kwargs(config: EvalConfig) -> dict[str, Any]:
    """The chat template's keyword arguments: the format's thinking switch, set from ``enable_thinking``."""
    if config.enable_thinking is None:
        return {}
    return {get_format(config.reasoning_format).template_switch or "enable_thinking": config.enable_thinking}


def effective_thinking(config: EvalConfig, defense: Defense | None) -> str:
    """The thinking mode in force: a defense that is a thinking control (zerothink, lessthink) wins."""
    return defense.thinking if defense is not None and defense.thinking else config.thinking


def system_prompt(config: EvalConfig, defense: Defense | None) -> str | None:
    """The system prompt the template gets: the config's, as a defense (AdaShield) changes it."""
    return defense.system_prompt(config.system_prompt) if defense is not None else config.system_prompt


def render_prompt(backend: Any, config: EvalConfig, prompt: str, *, defense: Defense | None = None,
                  images: Sequence[str] = (), meta: Mapping[str, Any] | None = None,
                  history: Sequence[dict[str, str]] = ()) -> str:
    """The exact prompt text for ``prompt`` (the last user turn; ``history``: earlier turns, for ``serve``).
    ``backend`` is anything with the backends' ``render_prompt`` (a loaded backend, or training's
    ``TemplateRenderer`` over a tokenizer alone)."""
    fmt = get_format(config.reasoning_format)
    extra: dict[str, Any] = {}
    if images:  # only multimodal backends take them
        extra["images"] = list(images)
    if history:  # only backends that render the chat template locally take earlier turns
        extra["history"] = list(history)
    text = backend.render_prompt(prompt, system_prompt=system_prompt(config, defense),
                                 prefill=config.think_prefill or "", template_kwargs=template_kwargs(config), **extra)
    text += control_prefill(effective_thinking(config, defense), fmt, text, config.less_think_text)
    if defense is not None:
        text += defense.prefill(fmt, text)
    text += config.prefill or ""
    return text + (prompt_prefill(fmt, text, dict(meta)) if meta else "")


def prompt_renderer(backend: Any, config: EvalConfig, defense: Defense | None = None) -> Callable[[str], str]:
    """:func:`render_prompt` bound to one backend, config and defense: a user turn -> its prompt text."""
    return lambda prompt: render_prompt(backend, config, prompt, defense=defense)


def check_rendering(backend: Any, config: EvalConfig, *, model: str, defense: Defense | None = None) -> None:
    """Refuse a chat template that drops the user turn or the system prompt (a probe rendered and looked for)."""
    from safereason.validation import PROBE, check_template_keeps_messages

    probe = render_prompt(backend, config, PROBE, defense=defense)
    check_template_keeps_messages(probe, sentinel=PROBE, model=model, system_prompt=system_prompt(config, defense))
