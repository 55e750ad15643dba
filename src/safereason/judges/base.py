"""The judge interface: a batch of (prompt, text) items in, one :class:`Verdict` per item out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from safereason.errors import ConfigError
from safereason.records import Verdict
from safereason.registry import Registry


@dataclass(frozen=True)
class JudgeItem:
    """What a judge sees: the user prompt and the text being judged (thinking, answer or full).

    ``behavior`` and ``context`` are set for benchmarks that keep them apart (HarmBench's contextual
    behaviours), for judges whose official prompt wants them separately; ``prompt`` is always the full
    user turn the model saw.
    """

    prompt: str
    text: str
    behavior: str | None = None
    context: str | None = None
    #: the reference answer, for utility judges (MATH-500, GSM8K)
    reference: str | None = None
    #: the prompt's ``meta``, for judges that need more than a reference (``code-exec``: HumanEval's tests)
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)


@runtime_checkable
class Judge(Protocol):
    """A batched judge. ``outputs`` says which decisions its verdicts carry: ``("unsafe",)`` for safety
    judges, ``("refused",)`` for refusal judges, both for judges like WildGuard."""

    name: str
    outputs: tuple[str, ...]

    def identity(self) -> dict[str, Any]:
        """Everything that determines the verdicts, so a run dir never mixes two judge settings."""
        ...

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in order. Failures are per-item ``Verdict(unsafe=None, error=...)``."""
        ...


JudgeFactory = Callable[..., Judge]
JUDGES: Registry[JudgeFactory] = Registry("judge")


def build_judge(name: str, options: dict[str, Any] | None = None) -> Judge:
    factory = JUDGES.get(name)
    try:
        judge = factory(**(options or {}))
    except TypeError as e:
        raise ConfigError(f"bad options for judge {name!r}: {e}") from None
    judge.name = name  # the registered name (one class may serve several names)
    return judge


def close_judge(judge: Judge) -> None:
    """Free a judge's resources (a loaded model, an HTTP client) if it holds any."""
    close = getattr(judge, "close", None)
    if callable(close):
        close()


def identity_hash(judge: Judge) -> str:
    blob = json.dumps(judge.identity(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
