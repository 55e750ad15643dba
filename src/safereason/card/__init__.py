"""``safereason card``: one command, a complete safety card for a model or an endpoint.

Modules: :mod:`~safereason.card.config` (settings, presets), :mod:`~safereason.card.stages` and
:mod:`~safereason.card.battery` (the run dirs), :mod:`~safereason.card.aggregate` and :mod:`~safereason.card.build`
(the numbers), :mod:`~safereason.card.taxonomy` (Llama Guard 3 hazards), :mod:`~safereason.card.grades`
(references), :mod:`~safereason.card.render` and ``templates/`` (the page and the Markdown).
"""

from __future__ import annotations

from safereason.card.api import CardResult, card, card_from_runs
from safereason.card.config import PRESETS, CardConfig, load_card_config, make_card_config

__all__ = ["PRESETS", "CardConfig", "CardResult", "card", "card_from_runs", "load_card_config", "make_card_config"]


class _CallableModule(__import__("types").ModuleType):
    """Importing this package rebinds ``safereason.card`` from the function to the module; calling the module
    keeps ``safereason.card(...)`` working either way."""

    def __call__(self, *args: object, **kwargs: object) -> CardResult:
        return card(*args, **kwargs)  # type: ignore[arg-type]


__import__("sys").modules[__name__].__class__ = _CallableModule
