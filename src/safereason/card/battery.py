"""The battery a preset runs: which prompts, evals, attacks and judge checks, in order."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safereason.card.config import CardConfig, PresetSizes
from safereason.card.stages import (
    AGREEMENT_SETS,
    VARIANTS,
    Backends,
    Echo,
    Stage,
    draw_prompts,
    eval_done,
    eval_values,
    section_of,
)


def _evaluate(values: dict[str, Any], backends: Backends, progress: bool) -> Callable[[], None]:
    def run() -> None:
        from safereason.runner import evaluate

        if not eval_done(Path(values["out"])):
            evaluate(values, backend=backends.factory(), progress=progress)

    return run


def _eval_stages(cfg: CardConfig, sizes: PresetSizes, inputs: dict[str, tuple[Path, str, str | None]],
                 backends: Backends, progress: bool) -> list[Stage]:
    """An eval stage per input (name -> prompts file, source set, prerequisite) and variant."""
    variants = VARIANTS if cfg.defense is not None else VARIANTS[:1]
    stages = []
    for variant in variants:
        for name, (path, source, need) in inputs.items():
            section = section_of(name)
            util = section == "utility"
            judges = (["math-verify"] if name == "math" else ["code-exec"]) if util else list(cfg.judges)
            # refusal phrases are matched at the start of the text: the answer (after the thought) first
            parts = ["thinking", "answer", "full"] if name == "harmful" else (["full"] if util else ["answer", "full"])
            out = cfg.out / variant / name
            values = eval_values(cfg, sizes, path, out, judges=judges, parts=parts,
                                 k=sizes.utility_k if util else sizes.k,
                                 max_new_tokens=sizes.utility_max_new_tokens if util else sizes.max_new_tokens,
                                 defended=variant == "defended")
            stages.append(Stage(f"{variant}/{name}", "eval", section, _evaluate(values, backends, progress), out,
                                needs=[need] if need else [], source_set=source, variant=variant))
    return stages


def _prompt_stage(cfg: CardConfig, sizes: PresetSizes) -> tuple[Stage, dict[str, tuple[Path, str, str | None]]]:
    """Drawing every set's prompts (one stage: a missing data file fails it, naming the set)."""
    draws: dict[str, tuple[str, int | None, str | None]] = {
        "harmful": (sizes.harmful_set, sizes.n_harmful, None), "xstest": ("xstest", sizes.n_xstest, "benign"),
        **{f"benign-{s}": (s, sizes.n_benign, "benign") for s in sizes.benign_sets},
        "tars-adversarial": ("tars-adversarial", sizes.n_static, None),
        "rainbow-teaming": ("rainbow-teaming", sizes.n_static, None),
        "math": (sizes.math_set, sizes.n_math, None),
    }
    if sizes.n_code != 0:
        draws["code"] = ("humaneval", sizes.n_code, None)
    folder = cfg.out / "prompts"
    inputs = {name: (folder / f"{src}.jsonl", src, "prompts") for name, (src, _, _) in draws.items()}

    def run() -> None:
        missing = []
        for src, n, label in draws.values():
            try:
                draw_prompts(cfg, src, n, label=label)
            except Exception as e:
                missing.append(f"{src}: {str(e).splitlines()[0]}")
        if missing:
            from safereason.errors import DataError

            raise DataError("; ".join(missing))

    return Stage("prompts", "prompts", "provenance", run, folder), inputs


def _attack_stages(cfg: CardConfig, sizes: PresetSizes, progress: bool, echo: Echo,
                   inputs: dict[str, tuple[Path, str, str | None]]) -> list[Stage]:
    from safereason.attacks.prefill import attack_prefill

    stages = []
    folder = cfg.out / "attacks"
    pre = folder / "prefill"

    def prefill() -> None:
        behaviours = draw_prompts(cfg, "harmbench", sizes.n_prefill)
        attack_prefill(str(behaviours), pre, target_from="harmbench", data_dir=cfg.data_dir)

    stages.append(Stage("attack/prefill", "attack", "robustness", prefill, pre))
    inputs["prefill"] = (pre / "adversarial.jsonl", "harmbench", "attack/prefill")
    if sizes.gcg:
        stages.append(Stage("attack/gcg", "attack", "robustness", _gcg(cfg, sizes, folder / "gcg", echo),
                            folder / "gcg"))
        inputs["gcg"] = (folder / "gcg" / "adversarial.jsonl", "harmbench", "attack/gcg")
    if sizes.pair:
        stages.append(Stage("attack/pair", "attack", "robustness", _pair(cfg, sizes, folder / "pair"),
                            folder / "pair"))
        inputs["pair"] = (folder / "pair" / "adversarial.jsonl", "harmbench", "attack/pair")
    return stages


def _gcg(cfg: CardConfig, sizes: PresetSizes, out: Path, echo: Echo) -> Callable[[], None]:
    def run() -> None:
        from safereason.attacks.gcg import GCGAttackConfig
        from safereason.attacks.gcg_run import RENDER_KEYS, attack_gcg
        from safereason.card.stages import embedded_eval_options
        from safereason.errors import ConfigError

        if cfg.endpoint is not None:
            raise ConfigError("GCG needs the model's weights (gradients); an endpoint card has no GCG stage")
        opts = {**embedded_eval_options(cfg.model), **cfg.eval_options}
        attack_gcg(str(cfg.model), "harmbench", out, GCGAttackConfig(steps=sizes.gcg_steps, seed=cfg.seed),
                   limit=sizes.n_gcg, target_from="harmbench", data_dir=cfg.data_dir, device=cfg.device or "auto",
                   dtype=cfg.dtype or "auto", render_settings={k: v for k, v in opts.items() if k in RENDER_KEYS})

    return run


def _pair(cfg: CardConfig, sizes: PresetSizes, out: Path) -> Callable[[], None]:
    def run() -> None:
        from safereason.attacks.pair import PAIRConfig
        from safereason.attacks.pair_run import PairRun, attack_pair

        target_options = {"base_url": cfg.endpoint, **cfg.backend_options} if cfg.endpoint else {}
        run_ = PairRun(target_model=cfg.model or "default", attacker_model=sizes.pair_attacker or str(cfg.model),
                       judge=cfg.judges[0], benchmark="harmbench", out=out, limit=sizes.n_pair,
                       cfg=PAIRConfig(n_streams=sizes.pair_streams, n_iterations=sizes.pair_iterations,
                                      seed=cfg.seed),
                       target_backend="openai" if cfg.endpoint else "transformers", target_options=target_options,
                       judge_options=cfg.judge_options.get(cfg.judges[0], {}), target_from="harmbench",
                       device=cfg.device or "auto", dtype=cfg.dtype or "auto",
                       data_dir=str(cfg.data_dir) if cfg.data_dir else None)
        attack_pair(run_)

    return run


def _agreement_stages(cfg: CardConfig, sizes: PresetSizes, progress: bool) -> list[Stage]:
    """Each judge the card uses, measured against the human labels of the shipped set for what it judges."""
    from safereason.judges import JUDGES

    stages = []
    for judge in [*cfg.judges, "refusal-string"]:
        outputs = set(getattr(JUDGES.get(judge), "outputs", ()) or ("unsafe",)) if judge in JUDGES.names() else set()
        for output, dataset in AGREEMENT_SETS.items():
            if output not in outputs:
                continue
            path = cfg.out / "agreement" / f"{judge}.{dataset}.json"
            stages.append(Stage(f"agreement/{judge}/{dataset}", "agreement", "validity",
                                _agreement(cfg, judge, dataset, sizes.n_agreement, path, progress), path))
    return stages


def _agreement(cfg: CardConfig, judge: str, dataset: str, limit: int | None, path: Path,
               progress: bool) -> Callable[[], None]:
    def run() -> None:
        import random
        from dataclasses import replace

        from safereason.agreement import agreement_metrics, run_judge
        from safereason.data.labelled import load_labelled
        from safereason.rundir import atomic_write_text

        if path.is_file():
            return
        ls = load_labelled(dataset, data_dir=cfg.data_dir)
        if limit is not None and limit < len(ls.items):  # a seeded draw: the first items may hold one label only
            keep = set(random.Random(f"safereason-card:{cfg.seed}").sample(range(len(ls.items)), limit))
            ls = replace(ls, items=[it for i, it in enumerate(ls.items) if i in keep])
        metrics = agreement_metrics(run_judge(judge, ls, options=cfg.judge_options.get(judge), progress=progress))
        payload = {"judge": judge, "dataset": ls.name, "kind": ls.kind, "positive": ls.positive,
                   "source": ls.source, "limit": limit, "metrics": metrics}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")

    return run


def plan(cfg: CardConfig, *, backend: Any = None, progress: bool = True, echo: Echo = print) -> list[Stage]:
    """Every stage of the card, in the order they run: prompts, attacks, evals (undefended, then defended),
    judge agreement."""
    sizes = cfg.resolved_sizes()
    prompts, inputs = _prompt_stage(cfg, sizes)
    attacks = _attack_stages(cfg, sizes, progress, echo, inputs)
    order = ["harmful", "xstest", *(n for n in inputs if n.startswith("benign-")), "prefill", "tars-adversarial",
             "rainbow-teaming", "gcg", "pair", "math", "code"]
    ordered = {n: inputs[n] for n in order if n in inputs}
    evals = _eval_stages(cfg, sizes, ordered, Backends(cfg, backend), progress)
    return [prompts, *attacks, *evals, *_agreement_stages(cfg, sizes, progress)]
