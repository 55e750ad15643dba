"""PAIR over a benchmark: load the models and the judge, attack each behaviour in turn, append each result to
``DIR/adversarial.jsonl`` as soon as it is done (a re-run resumes after the last finished behaviour).

The target's prompt is rendered exactly as ``safereason eval`` renders it for the same model (its preset's system
prompt, reasoning prefill and thinking switch), so the prompt PAIR found is the prompt the eval of the adversarial
file sends. The attack runs against the undefended model; evaluate the file with ``--defense`` for the defended
numbers (and with another ``--model`` for transfer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safereason.attacks.base import AdversarialFile, AttackResult, config_dict, load_behaviours
from safereason.attacks.pair import PAIRConfig, run_pair


@dataclass
class PairRun:
    """What ``safereason attack pair`` asks for (the CLI flags), as one object for the Python API."""

    target_model: str
    attacker_model: str
    judge: str
    benchmark: str
    out: Path
    limit: int | None = None
    cfg: PAIRConfig = field(default_factory=PAIRConfig)
    target_backend: str = "transformers"
    attacker_backend: str | None = None  # default: the target's
    target_options: dict[str, Any] = field(default_factory=dict)
    attacker_options: dict[str, Any] = field(default_factory=dict)
    judge_options: dict[str, Any] = field(default_factory=dict)
    target_from: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    data_dir: str | None = None


def _target_renderer(run: PairRun, backend: Any) -> Callable[[str], str]:
    """``eval``'s rendering of a prompt for the target model (no defense: PAIR attacks the plain model)."""
    from safereason.config import make_config
    from safereason.rendering import prompt_renderer

    config = make_config(model=run.target_model, benchmark=run.benchmark, backend=run.target_backend,
                         backend_options=run.target_options, device=run.device, dtype=run.dtype)
    return prompt_renderer(backend, config)


def identity(run: PairRun, judge: Any) -> dict[str, Any]:
    """What decides the results: a re-run with other settings into the same dir is refused."""
    return {"attack": "pair", "config": config_dict(run.cfg), "benchmark": run.benchmark,
            "target_from": run.target_from, "target_model": run.target_model, "target_backend": run.target_backend,
            "attacker_model": run.attacker_model, "attacker_backend": run.attacker_backend or run.target_backend,
            "judge": run.judge, "judge_identity": judge.identity()}


def attack_pair(run: PairRun, *, attacker: Any = None, target: Any = None, judge: Any = None,
                progress: Callable[[AttackResult, int, int], None] | None = None) -> list[AttackResult]:
    """Run (or resume) PAIR on the benchmark's behaviours; returns every behaviour's result in the file.

    ``attacker``, ``target`` and ``judge`` inject already-built objects (tests, notebooks); by default they are
    built from ``run``, the models only when behaviours are left."""
    from safereason.judges import build_judge, close_judge
    from safereason.models import build_backend

    behaviours = load_behaviours(run.benchmark, run.limit, target_from=run.target_from, data_dir=run.data_dir)
    own_judge = judge is None
    judge = judge if judge is not None else build_judge(run.judge, run.judge_options)
    adv = AdversarialFile(run.out)
    try:
        with adv.lock("attack pair"):
            done = adv.open(identity(run, judge))
            left = [b for b in behaviours if b.prompt.id not in done]
            if left:
                if target is None:
                    target = build_backend(run.target_backend, run.target_model, device=run.device,
                                           dtype=run.dtype, **run.target_options)
                if attacker is None:
                    same = ((run.attacker_backend or run.target_backend) == run.target_backend
                            and run.attacker_model == run.target_model and run.attacker_options == run.target_options)
                    attacker = target if same else build_backend(
                        run.attacker_backend or run.target_backend, run.attacker_model, device=run.device,
                        dtype=run.dtype, **run.attacker_options)
                render = _target_renderer(run, target)
                for n, b in enumerate(left, 1):
                    result = run_pair(attacker, target, judge, b.prompt.prompt, b.target, run.cfg, behaviour=b,
                                      render_target=render)
                    adv.append(result)
                    if progress is not None:
                        progress(result, n, len(left))
            return adv.results()
    finally:
        if own_judge:
            close_judge(judge)
