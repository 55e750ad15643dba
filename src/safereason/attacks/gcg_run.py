"""GCG over a benchmark: load the model once, render each behaviour as ``eval`` would, attack, append the row.

The rendering settings (system prompt, think_prefill, thinking control, prefill, template switches, a model
preset) are those of an :class:`~safereason.config.EvalConfig` for the same model, so the optimised input is the
text ``safereason eval`` feeds the model when it runs the adversarial file with the same settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safereason.attacks.base import AttackResult, Behaviour, config_dict, load_behaviours, run_attack
from safereason.attacks.gcg import GCG, GCGAttackConfig, check_backend
from safereason.hashing import sha256_text

#: the eval settings that change the rendered prompt (and so what GCG optimises)
RENDER_KEYS = ("system_prompt", "think_prefill", "enable_thinking", "thinking", "prefill", "reasoning_format",
               "less_think_text", "preset")


def eval_renderer(backend: Any, model: str, **settings: Any) -> tuple[Callable[[str], str], dict[str, Any]]:
    """``eval``'s rendering of a user turn for ``model`` with ``settings`` (unset ones from its preset), and the
    resolved settings, recorded with each row."""
    from safereason.config import make_config
    from safereason.rendering import prompt_renderer

    config = make_config(model=model, **{k: v for k, v in settings.items() if v is not None})
    resolved = {k: getattr(config, k) for k in RENDER_KEYS}
    return prompt_renderer(backend, config), resolved


def attack_gcg(model: str, benchmark: str, out: str | Path, cfg: GCGAttackConfig, *, limit: int | None = None,
               target_from: str = "auto", target_column: str = "target", data_dir: str | Path | None = None,
               device: str = "auto", dtype: str = "auto", chat_template: str | None = None, backend: Any = None,
               render_settings: dict[str, Any] | None = None,
               on_step: Callable[[str, dict[str, Any]], None] | None = None,
               on_result: Callable[[AttackResult, int, int], None] | None = None) -> list[AttackResult]:
    """Run (or resume) GCG on the first ``limit`` behaviours of ``benchmark``; write ``out/adversarial.jsonl``.

    ``backend`` injects a loaded transformers backend (tests, notebooks); else ``model`` is loaded, and only when
    a behaviour is left to attack."""
    cfg.check()
    behaviours = load_behaviours(benchmark, limit, target_from=target_from, target_column=target_column,
                                 data_dir=data_dir)
    settings = dict(render_settings or {})
    identity = {"attack": "gcg", "config": config_dict(cfg), "model": model, "benchmark": benchmark,
                "render": {k: v for k, v in settings.items() if v is not None},
                "chat_template": None if chat_template is None else sha256_text(chat_template)}
    state: dict[str, Any] = {}

    def attack_one(b: Behaviour) -> AttackResult:
        if "gcg" not in state:
            be = backend
            if be is None:
                from safereason.models import build_backend

                be = build_backend("transformers", model, device=device, dtype=dtype, chat_template=chat_template)
            check_backend(be)
            render, state["render"] = eval_renderer(be, model, **settings)
            state["gcg"] = GCG(be, cfg, render)
        step = (lambda rec: on_step(b.prompt.id, rec)) if on_step is not None else None
        result = state["gcg"].run(b.prompt, b.target, on_step=step)
        result.config = {**result.config, "model": model, "render": state["render"]}
        return result

    if backend is not None:
        check_backend(backend)
    return run_attack(out, identity, behaviours, attack_one, on_result=on_result)
