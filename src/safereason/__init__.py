"""safereason: measure and improve the safety of large reasoning models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from safereason.config import EvalConfig
    from safereason.runner import EvalResult


def evaluate(config: EvalConfig | dict[str, Any] | None = None, **kw: Any) -> EvalResult:
    """Run or resume an evaluation; see :func:`safereason.runner.evaluate`."""
    from safereason.runner import evaluate as _evaluate

    return _evaluate(config, **kw)


def card(config: Any = None, **kw: Any) -> Any:
    """Run (or resume) a safety card; see :func:`safereason.card.card`."""
    from safereason.card import card as _card

    return _card(config, **kw)


def __getattr__(name: str) -> Any:
    # keep `import safereason` light: torch/transformers load only when a model is needed
    if name == "EvalConfig":
        from safereason.config import EvalConfig

        return EvalConfig
    raise AttributeError(name)


__all__ = ["EvalConfig", "__version__", "card", "evaluate"]
