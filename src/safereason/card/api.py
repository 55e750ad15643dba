"""``safereason.card(...)``: run (or resume) the battery and build the card; ``card_from_runs``: a card from
finished run dirs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safereason.card.aggregate import StageRun
from safereason.card.config import CardConfig, make_card_config
from safereason.card.stages import Echo
from safereason.errors import ConfigError, RunDirError, SafereasonError

OUT_FILES = ("card.html", "card.md", "card.json")


@dataclass
class CardResult:
    out: Path
    html: Path
    card: dict[str, Any]
    #: stage -> done or failed (this invocation)
    stages: dict[str, str]


def check_card_dir(cfg: CardConfig) -> None:
    """Tie ``OUT`` to its settings (``OUT/card.yaml``): refuse a dir made with other settings, naming them."""
    from safereason.rundir import atomic_write_text

    path = cfg.out / "card.yaml"
    if path.is_file():
        try:
            stored = CardConfig(**(yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
        except (OSError, yaml.YAMLError, ValueError, TypeError) as e:
            raise RunDirError(f"cannot read {path} ({type(e).__name__}); use a new --out directory") from None
        old, new = stored.identity(), cfg.identity()
        differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if differ:
            raise RunDirError(f"{cfg.out} holds a card made with other settings ({', '.join(differ)}); re-run with "
                              f"the same settings (safereason card --config {path}) or use a new --out directory")
        return
    if cfg.out.exists() and any(cfg.out.iterdir()):
        raise RunDirError(f"{cfg.out} is not empty and holds no card (no card.yaml); use a new --out directory")
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, cfg.to_yaml())
    except OSError as e:
        raise SafereasonError(f"cannot write {path}: {e.strerror}") from None


def _preflight(cfg: CardConfig) -> None:
    """Names that would fail every stage fail now, before any model is loaded."""
    from safereason.defenses import DEFENSES
    from safereason.errors import suggest
    from safereason.judges import JUDGES

    for j in cfg.judges:
        if j not in JUDGES.names():
            raise ConfigError(f"unknown judge {j!r}{suggest(j, JUDGES.names())}; see `safereason list`")
    if cfg.defense is not None and cfg.defense not in DEFENSES.names():
        raise ConfigError(f"unknown defense {cfg.defense!r}{suggest(cfg.defense, DEFENSES.names())}")
    from types import SimpleNamespace

    from safereason.validation import preflight_judges

    # eval's own check (constructors only: bad options, a judge without its files, a missing API key)
    preflight_judges(SimpleNamespace(judges=list(cfg.judges), judge_options=cfg.judge_options, defense=cfg.defense,
                                     defense_options=cfg.defense_options))


def card(config: CardConfig | dict[str, Any] | None = None, *, backend: Any = None, progress: bool = True,
         echo: Echo = print, **values: Any) -> CardResult:
    """Run (or resume) every stage of the card into ``out`` and write card.{html,md,json}.

    ``backend`` injects a loaded backend (tests, notebooks) for every eval stage."""
    from safereason.card.battery import plan
    from safereason.card.build import build_card, read_agreement
    from safereason.card.stages import read_state, resume_command, run_stages

    if config is None or isinstance(config, dict):
        config = make_card_config(**{**(config or {}), **values})
    cfg = config
    _preflight(cfg)
    for ref in cfg.references:  # a bad reference fails before hours of generation, not after
        from safereason.card.grades import load_reference

        load_reference(Path(ref))
    check_card_dir(cfg)
    stages = plan(cfg, backend=backend, progress=progress, echo=echo)
    status = run_stages(stages, cfg.out, echo)
    state = read_state(cfg.out)["stages"]
    resume = resume_command(cfg)
    runs = [StageRun(s.name, s.section, s.variant, s.path, s.source_set, status=status.get(s.name, "failed"),
                     error=(state.get(s.name) or {}).get("error"), seconds=(state.get(s.name) or {}).get("seconds"))
            for s in stages if s.kind == "eval"]
    agreement_missing = [{"stage": s.name, "reason": (state.get(s.name) or {}).get("error"), "resume": resume}
                         for s in stages if s.kind == "agreement" and status.get(s.name) != "done"]
    prompts_failed = [s for s in stages if s.kind == "prompts" and status.get(s.name) != "done"]
    info = {"title": f"Safety card: {cfg.target}", "target": cfg.target, "model": cfg.model,
            "endpoint": cfg.endpoint, "preset": cfg.preset, "sizes": cfg.resolved_sizes().model_dump(),
            "defense": cfg.defense, "judges": list(cfg.judges), "primary_judge": cfg.judges[0], "seed": cfg.seed,
            "notes": [f"prompts: {(state.get(s.name) or {}).get('error')}" for s in prompts_failed]}
    built = build_card(runs, info=info, agreement=read_agreement(cfg.out / "agreement"), references=cfg.references,
                       price_per_mtok=cfg.price_per_mtok, seed=cfg.seed, n_bootstrap=cfg.n_bootstrap, resume=resume,
                       agreement_missing=agreement_missing)
    return _write(cfg.out, built, status)


def classify(path: Path) -> tuple[str, str, str, str | None]:
    """(stage, section, variant, source set) of a finished run dir, from what it holds."""
    from safereason.compare import load_run

    run = load_run(path)
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    variant = "defended" if config.get("defense") else "base"
    samples = run.samples or []
    attack = next((((s.get("meta") or {}).get("attack") or {}).get("name") for s in samples
                   if isinstance((s.get("meta") or {}).get("attack"), dict)), None)
    judges = set(run.metrics)
    if attack:
        return str(attack), "robustness", variant, "harmbench"
    if judges & {"math-verify", "code-exec", "exact-match"} and any(
            isinstance(e, dict) and "utility" in e for parts in run.metrics.values() if isinstance(parts, dict)
            for e in parts.values()):
        return ("code" if "code-exec" in judges else "math"), "utility", variant, run.benchmark
    if samples and all(s.get("label") == "benign" for s in samples):
        name = "xstest" if run.benchmark == "xstest" else f"benign-{run.benchmark}"
        return name, "overrefusal", variant, run.benchmark
    if run.benchmark in ("tars-adversarial", "rainbow-teaming"):
        return run.benchmark, "robustness", variant, run.benchmark
    return "harmful", "harmful", variant, run.benchmark


def card_from_runs(run_dirs: Sequence[str | Path], out: str | Path, *, references: Sequence[str | Path] = (),
                   agreement: Sequence[str | Path] = (), price_per_mtok: float | None = None, seed: int = 0,
                   n_bootstrap: int = 1000) -> CardResult:
    """A card from finished eval run dirs (each placed by what it holds: harmful, benign, attack, utility;
    defended when its config has a defense); ``agreement`` adds ``judge-agreement`` JSON files of the card's."""
    from safereason.card.build import build_card

    if not run_dirs:
        raise ConfigError("give at least one run dir with --from")
    runs: list[StageRun] = []
    for d in run_dirs:
        stage, section, variant, source = classify(Path(d))
        name = f"{variant}/{stage}"
        if any(r.name == name for r in runs):
            raise ConfigError(f"two run dirs are both {name}: {next(r.path for r in runs if r.name == name)} and {d}")
        runs.append(StageRun(name, section, variant, Path(d), source))
    from safereason.compare import load_run

    first = load_run(runs[0].path)
    judges = sorted({j for r in runs if r.section == "harmful" for j in load_run(r.path).metrics})
    model = str(first.label)
    info = {"title": f"Safety card: {model}", "target": model, "model": model, "endpoint": None, "preset": None,
            "sizes": None,
            "defense": _defense_of(runs), "judges": judges, "primary_judge": judges[0] if judges else None,
            "seed": seed,
            "notes": [f"rebuilt from {len(runs)} run dir(s) with --from"]}
    built = build_card(runs, info=info, agreement=[_read_json(Path(a)) for a in agreement],
                       references=[Path(r) for r in references], price_per_mtok=price_per_mtok, seed=seed,
                       n_bootstrap=n_bootstrap)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SafereasonError(f"cannot create {out}: {e.strerror}") from None
    return _write(out, built, {r.name: r.status for r in runs})


def _defense_of(runs: list[StageRun]) -> str | None:
    for r in runs:
        if r.variant == "defended":
            config = yaml.safe_load((r.path / "config.yaml").read_text(encoding="utf-8")) or {}
            return config.get("defense")
    return None


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--agreement {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(data, dict) or "judge" not in data or "metrics" not in data:
        raise ConfigError(f"--agreement {path}: not a judge-agreement result of a card (judge, metrics)")
    return data


def _write(out: Path, built: dict[str, Any], status: dict[str, str]) -> CardResult:
    import json

    from safereason.card.render import render_html, render_markdown
    from safereason.rundir import atomic_write_text

    atomic_write_text(out / "card.json", json.dumps(built, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "card.md", render_markdown(built))
    atomic_write_text(out / "card.html", render_html(built))
    return CardResult(out, out / "card.html", built, status)
