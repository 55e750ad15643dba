"""SafeChain end to end on one machine: baseline eval -> safe traces from a teacher -> LoRA SFT -> tuned eval ->
the before/after table.

Every stage is an ordinary run dir of the command it stands for (``eval``, ``data safechain``, ``train sft``)
under ``OUT``; a stage whose outputs are complete is skipped on a re-run, and a stage cut short resumes as its
command does. ``OUT/recipe.yaml`` ties the dir to its config: a re-run with other settings is refused.

Held-out prompts are never trained on: the training pool is the ``train_prompts`` set with every prompt of the
whole held-out set removed (same id, or the same text once case, punctuation and spacing are ignored), and
``OUT/prompts/`` keeps the drawn held-out, utility and training-pool files, whose sha256 lands in each run's
manifest.

    safereason recipe safechain --out runs/safechain
    safereason recipe safechain --config examples/safechain-embedded.yaml --out runs/safechain
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safereason.data.safechain import draw, prompt_row
from safereason.errors import ConfigError, RunDirError, SafereasonError
from safereason.recipes.common import write_if_changed
from safereason.recipes.config import SafeChainRecipeConfig
from safereason.records import Prompt

STAGES = ("baseline", "data", "sft", "tuned", "table")
BASE_LABEL, TUNED_LABEL = "base", "tuned"
Echo = Callable[[str], None]


@dataclass
class RecipeResult:
    out: Path
    table_md: Path
    #: stage -> "ran" or "skipped"
    stages: dict[str, str] = field(default_factory=dict)
    #: stage -> wall seconds of this invocation
    seconds: dict[str, float] = field(default_factory=dict)
    kept: int = 0
    drawn: int = 0


# -- prompts -----------------------------------------------------------------------------------------

def normalize(text: str) -> str:
    """The text a prompt is compared by: lower case, runs of non-word characters as one space."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def disjoint_pool(pool: Sequence[Prompt], heldout: Sequence[Prompt]) -> tuple[list[Prompt], list[str]]:
    """``pool`` without any prompt of ``heldout`` (same id or same normalised text), and the ids removed."""
    ids = {p.id for p in heldout}
    texts = {normalize(p.prompt) for p in heldout}
    kept = [p for p in pool if p.id not in ids and normalize(p.prompt) not in texts]
    removed = [p.id for p in pool if p.id in ids or normalize(p.prompt) in texts]
    return kept, removed


def _write_prompts(path: Path, prompts: Sequence[Prompt]) -> Path:
    text = "".join(json.dumps(prompt_row(p), ensure_ascii=False, sort_keys=True) + "\n" for p in prompts)
    return write_if_changed(path, text)


@dataclass(frozen=True)
class PromptFiles:
    heldout: Path
    utility: Path | None
    pool: Path
    removed: list[str]  #: pool ids removed because the held-out set holds them


def prepare_prompts(cfg: SafeChainRecipeConfig) -> PromptFiles:
    """Draw the held-out and utility prompts, build the disjoint training pool; write them to ``OUT/prompts``."""
    folder = cfg.out / "prompts"
    heldout_all = _load("held-out set", cfg.heldout, cfg)
    if cfg.n_heldout is not None and cfg.n_heldout > len(heldout_all):
        raise ConfigError(f"n_heldout {cfg.n_heldout} is more than the {len(heldout_all)} prompts of {cfg.heldout}")
    heldout = _write_prompts(folder / f"{_stem(cfg.heldout)}.jsonl", draw(heldout_all, cfg.n_heldout, cfg.seed))
    utility = None
    if cfg.utility is not None:
        util_all = _load("utility set", cfg.utility, cfg, hint="; or leave utility out with --utility none")
        if not any("gold" in p.meta for p in util_all):
            raise ConfigError(f"utility set {cfg.utility} has no reference answers (meta 'gold') to grade")
        if cfg.n_utility is not None and cfg.n_utility > len(util_all):
            raise ConfigError(f"n_utility {cfg.n_utility} is more than the {len(util_all)} prompts of {cfg.utility}")
        utility = _write_prompts(folder / f"{_stem(cfg.utility)}.jsonl", draw(util_all, cfg.n_utility, cfg.seed))
    pool, removed = disjoint_pool(_load("training pool", cfg.train_prompts, cfg), heldout_all)
    if cfg.n_train > len(pool):
        raise ConfigError(f"n_train {cfg.n_train} is more than the {len(pool)} prompts of {cfg.train_prompts} "
                          f"outside the held-out set")
    return PromptFiles(heldout, utility, _write_prompts(folder / "train-pool.jsonl", pool), removed)


def _load(role: str, name: str, cfg: SafeChainRecipeConfig, hint: str = "") -> list[Prompt]:
    """The prompts of ``name``; a set whose data is missing is one error naming its role in the recipe."""
    from safereason.data import load_benchmark
    from safereason.errors import DataError

    try:
        return load_benchmark(name, data_dir=cfg.data_dir).prompts
    except DataError as e:
        raise DataError(f"{role} {name}: {e}{hint}") from None


def _stem(name: str) -> str:
    """A registered name as it is, a file by its stem (the table's column header)."""
    path = Path(name)
    return path.stem if path.suffix else name


# -- stage configs -----------------------------------------------------------------------------------

def _common(cfg: SafeChainRecipeConfig) -> dict[str, Any]:
    return {"reasoning_format": "r1", "think_prefill": cfg.think_prefill, "temperature": cfg.temperature,
            "top_p": cfg.top_p, "seed": cfg.seed, "batch_size": cfg.batch_size, "device": cfg.device,
            "dtype": cfg.dtype, "preset": "none"}


def eval_configs(cfg: SafeChainRecipeConfig, model: str, files: PromptFiles, where: Path) -> list[dict[str, Any]]:
    """The held-out safety eval and the utility eval of ``model``: the same for the student before and after."""
    base = {**_common(cfg), "model": model, "k": cfg.k, "system_prompt": cfg.system_prompt}
    runs = [{**base, "benchmark": str(files.heldout), "max_new_tokens": cfg.max_new_tokens,
             "judges": list(cfg.judges), "parts": ["full"], "out": str(where / "heldout")}]
    if files.utility is not None:
        # graded on the full response: a thought that never closes still counts (as whatever it holds), so both
        # models are scored over the same samples
        runs.append({**base, "benchmark": str(files.utility), "max_new_tokens": cfg.utility_max_new_tokens,
                     "judges": ["math-verify"], "parts": ["full"], "out": str(where / "utility")})
    return runs


def teacher_values(cfg: SafeChainRecipeConfig) -> dict[str, Any]:
    values = {**_common(cfg), "model": cfg.teacher or cfg.student, "k": cfg.teacher_k,
              "system_prompt": cfg.teacher_system_prompt, "prefill": cfg.teacher_prefill,
              "max_new_tokens": cfg.max_new_tokens,
              "judges": list(cfg.filter_judges or cfg.judges), "parts": ["full"]}
    if cfg.teacher_defense is not None:
        values.update(defense=cfg.teacher_defense, defense_options=dict(cfg.teacher_defense_options))
    return values


def sft_values(cfg: SafeChainRecipeConfig, data: Path) -> dict[str, Any]:
    return {"model": cfg.student, "data": data, "out": cfg.out / "sft", "lora": True, "epochs": cfg.epochs,
            "lr": cfg.lr, "batch_size": cfg.train_batch_size, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
            "max_length": cfg.max_length, "seed": cfg.seed, "reasoning_format": "r1", "preset": "none",
            "system_prompt": cfg.system_prompt, "think_prefill": cfg.think_prefill, "logging_steps": 1,
            "save_steps": 10, "device": cfg.device, "dtype": cfg.dtype,
            "trl": {"gradient_checkpointing": False}}  # a 135M model needs no activation savings


# -- the run directory --------------------------------------------------------------------------------

def check_recipe_dir(cfg: Any) -> None:
    """Tie ``OUT`` to this config (any recipe config with ``out``, ``identity`` and ``to_yaml``): refuse a dir made
    with other settings, naming what differs."""
    from safereason.rundir import atomic_write_text

    path = cfg.out / "recipe.yaml"
    if path.is_file():
        try:
            stored = type(cfg)(**(yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
        except (OSError, yaml.YAMLError, ValueError, TypeError) as e:
            raise RunDirError(f"cannot read {path} ({type(e).__name__}); use a new --out directory") from None
        old, new = stored.identity(), cfg.identity()
        differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if differ:
            raise RunDirError(f"{cfg.out} holds a recipe run with other settings ({', '.join(differ)}); re-run with "
                              "the same settings to resume, or use a new --out directory")
        return
    if cfg.out.exists() and any(cfg.out.iterdir()):
        raise RunDirError(f"{cfg.out} is not empty and holds no recipe run (no recipe.yaml); use a new --out directory")
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, cfg.to_yaml())
    except OSError as e:
        raise SafereasonError(f"cannot write {path}: {e.strerror}") from None


def eval_done(run_dir: Path) -> bool:
    """A finished eval: metrics.json written and the manifest's finished_at set (the runner sets it last)."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (run_dir / "metrics.json").is_file() and bool(manifest.get("finished_at"))


def _state(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record(out: Path, stage: str, seconds: float) -> None:
    from safereason.rundir import atomic_write_text

    state = _state(out)
    entry = state.setdefault("stages", {}).setdefault(stage, {"seconds": 0.0})
    entry["seconds"] = round(entry["seconds"] + seconds, 1)
    entry["load_average"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_text(out / "state.json", json.dumps(state, indent=2) + "\n")


# -- the stages ---------------------------------------------------------------------------------------

class _Backends:
    """One loaded backend per model, shared by the stages that generate with it (the student's baseline evals
    and, when it is also the teacher, the data stage); ``given`` maps a role to an injected backend."""

    def __init__(self, cfg: SafeChainRecipeConfig, given: Mapping[str, Any] | None) -> None:
        self.cfg, self.given, self.loaded = cfg, dict(given or {}), {}

    def factory(self, role: str, model: str) -> Any:
        if role in self.given:
            return self.given[role]

        def build() -> Any:
            if model not in self.loaded:
                from safereason.models import build_backend

                self.loaded[model] = build_backend("transformers", model, device=self.cfg.device,
                                                   dtype=self.cfg.dtype)
            return self.loaded[model]

        return build


def _evaluate_all(configs: list[dict[str, Any]], backend: Any, progress: bool, echo: Echo) -> None:
    from safereason.runner import evaluate

    for values in configs:
        where = Path(values["out"])
        if eval_done(where):
            echo(f"  {where}: finished before, skipped")
            continue
        echo(f"  {where}: {Path(values['benchmark']).stem}, K = {values['k']}, {values['max_new_tokens']} new tokens")
        evaluate(values, backend=backend, progress=progress)


def run_recipe(cfg: SafeChainRecipeConfig, *, backends: Mapping[str, Any] | None = None, progress: bool = True,
               echo: Echo = print) -> RecipeResult:
    """Run (or resume) the recipe; ``backends`` injects a backend (or factory) per role: student, teacher, tuned."""
    from safereason.data.safechain import DATASET_FILE, SafeChainRecipe, build_safechain
    from safereason.train.config import make_sft_config, require_train_extra
    from safereason.train.sft import train_sft

    require_train_extra()
    check_recipe_dir(cfg)
    files = prepare_prompts(cfg)
    echo(f"held-out prompts: {files.heldout}; training pool: {files.pool} ({cfg.train_prompts} without the "
         f"{len(files.removed)} prompt(s) it shares with {cfg.heldout})")
    pool = _Backends(cfg, backends)
    result = RecipeResult(cfg.out, cfg.out / "table.md")
    data_dir = cfg.out / "data"
    sft = make_sft_config(**sft_values(cfg, data_dir / DATASET_FILE))

    def stage(i: int, name: str, title: str, done: bool, work: Callable[[], None]) -> None:
        if done:
            echo(f"[{i}/{len(STAGES)}] {title}: finished before, skipped")
            result.stages[name] = "skipped"
            return
        echo(f"[{i}/{len(STAGES)}] {title}")
        started = time.monotonic()
        work()
        result.seconds[name] = round(time.monotonic() - started, 1)
        result.stages[name] = "ran"
        _record(cfg.out, name, result.seconds[name])

    base_runs = eval_configs(cfg, cfg.student, files, cfg.out / "baseline")
    stage(1, "baseline", f"baseline eval of {cfg.student} (held-out harmful{' + utility' if files.utility else ''})",
          all(eval_done(Path(v["out"])) for v in base_runs),
          lambda: _evaluate_all(base_runs, pool.factory("student", cfg.student), progress, echo))

    recipe = SafeChainRecipe(prompts=str(files.pool), out=data_dir, n=cfg.n_train, seed=cfg.seed)
    teacher = teacher_values(cfg)

    def data() -> None:
        role = "teacher" if cfg.teacher else "student"
        built = build_safechain(teacher, recipe, backend=pool.factory(role, teacher["model"]), progress=progress)
        counts = built.card["counts"]
        echo(f"  kept {counts['kept']} of {counts['instructions']} instructions; dropped: "
             + ", ".join(f"{r} {n}" for r, n in counts["dropped_by_reason"].items() if n))

    stage(2, "data", f"SafeChain data: {cfg.n_train} instructions x {cfg.teacher_k} teacher samples",
          (data_dir / "card.json").is_file() and eval_done(data_dir / "teacher"), data)
    card = json.loads((data_dir / "card.json").read_text(encoding="utf-8"))
    result.kept, result.drawn = card["counts"]["kept"], card["counts"]["instructions"]
    if result.kept == 0:
        raise SafereasonError(f"the teacher produced no trace judged safe in all {cfg.teacher_k} samples (see "
                              f"{data_dir / 'README.md'}); steer it harder (teacher_system_prompt, teacher_defense) "
                              "or draw more instructions (n_train)")
    pool.loaded.clear()  # the base model is not needed while training
    stage(3, "sft", f"LoRA SFT of {cfg.student} on {result.kept} rows", (sft.out / "result.json").is_file(),
          lambda: echo(f"  {_sft_summary(train_sft(sft, progress=progress))}"))

    tuned_model = str(sft.out / "model")
    tuned_runs = eval_configs(cfg, tuned_model, files, cfg.out / "tuned")
    stage(4, "tuned", "eval of the tuned model (same prompts, seeds and settings)",
          all(eval_done(Path(v["out"])) for v in tuned_runs),
          lambda: _evaluate_all(tuned_runs, pool.factory("tuned", tuned_model), progress, echo))
    stage(5, "table", "before/after table (rebuilt on every run)", False,
          lambda: write_table(cfg, base_runs, tuned_runs))
    return result


def _sft_summary(r: Any) -> str:
    loss = f", last logged loss {r.final_loss:.4f}" if r.final_loss is not None else ""
    return f"trained {r.steps} steps{loss}; model: {r.model_dir}"


# -- the table ----------------------------------------------------------------------------------------

def closed_share(run_dir: Path) -> tuple[int, int]:
    """(samples whose thought closed, samples generated) in a run's samples.jsonl."""
    closed = total = 0
    with open(run_dir / "samples.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip() and (s := json.loads(line)).get("status", "ok") == "ok":
                total += 1
                closed += bool(s.get("thinking_closed"))
    return closed, total


def write_table(cfg: SafeChainRecipeConfig, base_runs: list[dict[str, Any]],
                tuned_runs: list[dict[str, Any]]) -> str:
    """``OUT/table.md`` and ``OUT/table.json``: compare's table of the four runs, the share of samples whose
    thought closes, and what the data and training stages did."""
    from safereason.compare import compare_runs, to_markdown
    from safereason.rundir import atomic_write_text

    dirs = [Path(v["out"]) for v in base_runs + tuned_runs]
    labels = [BASE_LABEL] * len(base_runs) + [TUNED_LABEL] * len(tuned_runs)
    cmp = compare_runs(dirs, labels=labels, baseline=BASE_LABEL, seed=cfg.seed)
    closing = {lb: {Path(v["benchmark"]).stem: closed_share(Path(v["out"])) for v in runs}
               for lb, runs in ((BASE_LABEL, base_runs), (TUNED_LABEL, tuned_runs))}
    card = json.loads((cfg.out / "data" / "card.json").read_text(encoding="utf-8"))
    sft = json.loads((cfg.out / "sft" / "result.json").read_text(encoding="utf-8"))
    sets = list(closing[BASE_LABEL])
    rows = "\n".join(f"| {lb} | " + " | ".join(f"{c / n:.3f} ({c}/{n})" if n else "n/a"
                                             for c, n in (closing[lb][s] for s in sets)) + " |" for lb in closing)
    counts = card["counts"]
    card_judges = cfg.filter_judges or cfg.judges
    stages = _state(cfg.out).get("stages", {})
    timing = ", ".join(f"{s} {v['seconds']:.0f} s" for s, v in stages.items())
    text = (to_markdown(cmp) + "\n## Share of samples whose thought closes\n\n| model | " + " | ".join(sets)
            + " |\n|" + "---|" * (len(sets) + 1) + "\n" + rows + "\n\n## Data and training\n\n"
            f"- teacher `{card['teacher']['model']}`: kept {counts['kept']} of {counts['instructions']} instructions "
            f"from `{cfg.train_prompts}` (K = {card['k']}, judges {', '.join(card_judges)}); dropped: "
            + ", ".join(f"{r} {n}" for r, n in counts["dropped_by_reason"].items() if n)
            + f"\n- LoRA SFT of `{cfg.student}`: {sft['steps']} steps, last logged loss {sft['final_loss']}"
            + f"\n- held-out prompts: `{cfg.heldout}` ({cfg.n_heldout or 'all'} drawn, seed {cfg.seed}), never in "
            "the training pool\n" + (f"- wall time: {timing}\n" if timing else ""))
    atomic_write_text(cfg.out / "table.md", text)
    payload = {"compare": cmp.to_json(), "closed": {lb: {s: {"closed": c, "samples": n} for s, (c, n) in per.items()}
                                                    for lb, per in closing.items()},
               "data": counts, "sft": sft, "stages": stages}
    atomic_write_text(cfg.out / "table.json", json.dumps(payload, indent=2) + "\n")
    return text
