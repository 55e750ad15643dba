"""The defense interface: a defense changes what the model is shown, or how its trace is generated.

Prompt defenses (AdaShield-style system prompt, SafePath-style thinking prefix, ZeroThink / LessThink) only
change the rendered prompt, so their records are ordinary samples with the change visible in
``prompt_text``. Generation defenses (SafeThink) take over the generation of a batch and report, per
sample, what they did (``Sample.control``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from safereason.errors import ConfigError
from safereason.models.base import Backend, Completion, SamplingParams
from safereason.reasoning.formats import ReasoningFormat
from safereason.registry import Registry


@dataclass(frozen=True)
class DefenseOutput:
    completion: Completion
    control: dict[str, Any] = field(default_factory=dict)


class Defense:
    """Base class with no-op hooks; subclasses override what they change."""

    name = "none"
    #: a thinking control this defense stands for ("zero", "less"), applied by the runner
    thinking: str | None = None
    #: True when :meth:`generate` replaces the backend's generation
    generates = False

    def identity(self) -> dict[str, Any]:
        return {"name": self.name}

    def system_prompt(self, current: str | None) -> str | None:
        return current

    def prefill(self, fmt: ReasoningFormat, prompt_text: str) -> str:
        """Text appended after the rendered prompt (after think_prefill and any thinking control)."""
        return ""

    def generate(self, backend: Backend, prompt_texts: Sequence[str], user_prompts: Sequence[str],
                 params: SamplingParams, seed: int, *, fmt: ReasoningFormat, keys: Sequence[str],
                 images: Sequence[Sequence[str]] | None = None) -> list[DefenseOutput]:
        """Only generation defenses (``generates = True``, e.g. SafeThink) take over generation."""
        raise TypeError(f"defense {self.name!r} only changes the prompt; the runner generates for it")

    def close(self) -> None:
        """Free resources (a loaded scorer model)."""


DEFENSES: Registry[Callable[..., Defense]] = Registry("defense")


def build_defense(name: str, options: dict[str, Any] | None = None) -> Defense:
    factory = DEFENSES.get(name)
    check_options(f"bad options for defense {name!r}:", factory, options or {})
    try:
        return factory(**(options or {}))
    except TypeError as e:
        raise ConfigError(f"bad options for defense {name!r}: {e}") from None


_KINDS: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_options(prefix: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    """Unknown option names (with suggestions) and values of the wrong kind for the factory's annotated
    int / float / str / bool parameters, as one clear line: ``--defense-opt max_steps=abc`` names the option
    and the kind it needs instead of failing later inside a comparison."""
    import inspect
    import math
    import types
    import typing

    from safereason.errors import suggest

    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        params = inspect.signature(target).parameters
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key, value in options.items():
        if key not in known:
            raise ConfigError(f"{prefix} no option {key!r}.{suggest(key, known)} Options: {', '.join(known)}")
        hint = hints.get(key)
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        kinds = [a for a in args if a in _KINDS]
        if not kinds or len(kinds) != len([a for a in args if a is not type(None)]):
            continue  # not a plain scalar option: the factory checks it
        if value is None and type(None) in args:
            continue
        ok = any(isinstance(value, _KINDS[k]) and (k is bool or not isinstance(value, bool)) for k in kinds)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            need = " or ".join(_KIND_NAMES[k] for k in kinds) + (" or null" if type(None) in args else "")
            raise ConfigError(f"{prefix} option {key} must be {need}, got {value!r}")
