"""``recipe think``: teach a chat model to think, close its thought, then answer (``smollm2-135m-think``).

Stages, each an ordinary run dir or file under ``OUT``, skipped on a re-run once complete (a stage cut short
resumes as its command does): ``prompts.jsonl`` (the built-in set or a file, validated before any work) ->
``teacher/`` (an eval run: the teacher's plain chat answers, no system prompt, no thinking) -> ``data/`` (rows
``<think>\\n{rule-built thought}\\n</think>\\n{answer}``, degenerate answers dropped and counted) -> ``sft/``
(``train sft``: LoRA, rendered as eval renders, no system prompt, no prefill) -> ``adapter/`` (the LoRA weights,
float16) -> ``measure/`` (evals of the base merged with *that* adapter, exactly as the alias loads it) ->
``CARD.md`` / ``card.json``. ``OUT/recipe.yaml`` ties the dir to its config: a re-run with other settings is refused.

    safereason recipe think --out runs/think
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safereason.errors import ConfigError, DataError, RunDirError, SafereasonError
from safereason.recipes.common import write_if_changed
from safereason.recipes.safechain import _record, check_recipe_dir, eval_done
from safereason.recipes.think_config import BUILTIN, ThinkRecipeConfig
from safereason.recipes.think_data import build_rows, check_prompt_rows, jsonl, read_prompt_rows

Echo = Callable[[str], None]
STAGES = ("teacher", "data", "sft", "adapter", "measure", "card")
PREFILL = "<think>\n"


@dataclass
class ThinkResult:
    out: Path
    card: Path
    stages: dict[str, str] = field(default_factory=dict)  #: stage -> "ran" or "skipped"
    measures: dict[str, Any] = field(default_factory=dict)


# -- prompts and the XSTest measure set --------------------------------------------------------------

def load_prompts(cfg: ThinkRecipeConfig) -> list[dict[str, Any]]:
    """The recipe's prompt rows (built in, or the file ``cfg.prompts``), checked before any work."""
    if cfg.prompts == BUILTIN:
        from safereason.recipes.think_prompts import builtin_prompts

        return check_prompt_rows(builtin_prompts(cfg.seed, cfg.n_math), "the built-in prompt set")
    path = Path(cfg.prompts).expanduser()
    if not path.is_file():
        raise DataError(f"prompt file {cfg.prompts} not found (use 'builtin' or a JSONL file with prompt and label)")
    if path.suffix.lower() != ".jsonl":
        raise DataError(f"prompt file {cfg.prompts}: use a .jsonl file (one JSON object per line)")
    return read_prompt_rows(path)


def xstest_safe(cfg: ThinkRecipeConfig) -> str | None:
    """XSTest's safe prompts (the first ``n_xstest``) as the text of ``OUT/measure/xstest-safe.jsonl``; None if 0."""
    if cfg.n_xstest == 0:
        return None
    from safereason.data import load_benchmark
    from safereason.data.safechain import prompt_row

    try:
        safe = [p for p in load_benchmark("xstest", data_dir=cfg.data_dir).prompts if p.label == "benign"]
    except DataError as e:
        raise DataError(f"XSTest (the over-refusal measure): {e}; or skip it with --n-xstest 0") from None
    if cfg.n_xstest is not None and cfg.n_xstest > len(safe):
        raise ConfigError(f"n_xstest {cfg.n_xstest} is more than XSTest's {len(safe)} safe prompts")
    return jsonl(prompt_row(p) for p in safe[: cfg.n_xstest])


def write_prompts(cfg: ThinkRecipeConfig, rows: list[dict[str, Any]]) -> Path:
    """``OUT/prompts.jsonl``; refuse to replace other prompts once the teacher ran on them (a changed file)."""
    path, text = cfg.out / "prompts.jsonl", jsonl(rows)
    if path.is_file() and path.read_text(encoding="utf-8") != text and (cfg.out / "teacher").exists():
        raise RunDirError(f"{cfg.out} was built from other prompts ({cfg.prompts} changed since); use a new --out "
                          "directory")
    return write_if_changed(path, text)


# -- stage settings ----------------------------------------------------------------------------------

def teacher_values(cfg: ThinkRecipeConfig, prompts_file: Path) -> dict[str, Any]:
    """The teacher's eval run: plain chat (no system prompt, no thinking format), one reply per prompt."""
    return {"model": cfg.teacher or cfg.base, "benchmark": str(prompts_file), "k": 1, "preset": "none",
            "reasoning_format": "none", "temperature": cfg.teacher_temperature, "top_p": 0.95,
            "max_new_tokens": cfg.teacher_max_new_tokens, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "judges": ["rs-match"], "parts": ["full"], "device": cfg.device, "dtype": "float32",
            "out": str(cfg.out / "teacher")}


def sft_values(cfg: ThinkRecipeConfig, data: Path) -> dict[str, Any]:
    """``train sft`` on the rows, rendered as eval renders the alias: chat template, no system prompt or prefill."""
    return {"model": cfg.base, "data": data, "out": cfg.out / "sft", "lora": True, "epochs": cfg.epochs,
            "lr": cfg.lr, "batch_size": cfg.train_batch_size, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
            "lora_dropout": 0.0, "lora_target_modules": list(cfg.lora_target_modules), "max_length": cfg.max_length,
            "seed": cfg.seed, "reasoning_format": "r1", "preset": "none", "system_prompt": None,
            "think_prefill": None, "logging_steps": 1, "save_steps": 10, "device": cfg.device, "dtype": "float32",
            "trl": {"gradient_checkpointing": False}}


def measure_values(cfg: ThinkRecipeConfig, model: str, xstest: Path | None) -> list[dict[str, Any]]:
    """The demo's settings (smoke, K, 128 new tokens, temperature 0.7, seed) with no system prompt: with the
    ``<think>\\n`` prefill, without it (one sample per prompt: a check, not the headline), and XSTest's safe prompts
    (with the prefill, one sample each)."""
    base = {"model": model, "preset": "none", "reasoning_format": "r1", "system_prompt": None, "top_p": 0.95,
            "temperature": cfg.measure_temperature, "max_new_tokens": cfg.measure_max_new_tokens, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "judges": ["rs-match", "refusal-string"], "parts": ["answer", "full"],
            "device": cfg.device, "dtype": "float32"}
    where = cfg.out / "measure"
    runs = [{**base, "benchmark": "smoke", "k": cfg.measure_k, "think_prefill": PREFILL, "out": str(where / "smoke")}]
    if cfg.measure_no_prefill:
        runs.append({**base, "benchmark": "smoke", "k": 1, "out": str(where / "smoke-no-prefill")})
    if xstest is not None:
        runs.append({**base, "benchmark": str(xstest), "k": 1, "think_prefill": PREFILL, "out": str(where / "xstest")})
    return runs


# -- the run -----------------------------------------------------------------------------------------

def _factory(given: Mapping[str, Any], role: str, model: str, device: str) -> Any:
    if role in given:
        return given[role]

    def build() -> Any:
        from safereason.models import build_backend

        return build_backend("transformers", model, device=device, dtype="float32")

    return build


def run_think(cfg: ThinkRecipeConfig, *, backends: Mapping[str, Any] | None = None, progress: bool = True,
              echo: Echo = print) -> ThinkResult:
    """Run (or resume) the recipe; ``backends`` injects a backend (or factory) for ``teacher`` or ``tuned``."""
    from safereason.models.resolve import resolve_model
    from safereason.recipes.think_measure import export_adapter, measure_all, write_card
    from safereason.runner import evaluate
    from safereason.train.config import make_sft_config, require_train_extra
    from safereason.train.sft import train_sft

    require_train_extra()
    rows = load_prompts(cfg)  # every input check comes before the first write
    resolve_model(cfg.base)
    xstest_text = xstest_safe(cfg)
    check_recipe_dir(cfg)
    xstest = None if xstest_text is None else write_if_changed(cfg.out / "measure" / "xstest-safe.jsonl", xstest_text)
    prompts_file = write_prompts(cfg, rows)
    given, result = dict(backends or {}), ThinkResult(cfg.out, cfg.out / "CARD.md")
    data_file = cfg.out / "data" / "dataset.jsonl"
    sft = make_sft_config(**sft_values(cfg, data_file))
    merged = cfg.out / "measure" / "model"
    runs = measure_values(cfg, str(merged), xstest)

    def stage(name: str, title: str, done: bool, work: Callable[[], None]) -> None:
        i = STAGES.index(name) + 1
        if done:
            echo(f"[{i}/{len(STAGES)}] {title}: finished before, skipped")
            result.stages[name] = "skipped"
            return
        echo(f"[{i}/{len(STAGES)}] {title}")
        started = time.monotonic()
        work()
        result.stages[name] = "ran"
        _record(cfg.out, name, time.monotonic() - started)

    asked = [r for r in rows if "answer" not in r]
    teacher = teacher_values(cfg, write_if_changed(cfg.out / "teacher-prompts.jsonl", jsonl(
        {"id": r["id"], "prompt": r["prompt"], "label": r["label"]} for r in asked)))
    stage("teacher", f"teacher answers: {len(asked)} prompts x 1 ({teacher['model']}, plain chat)",
          not asked or eval_done(cfg.out / "teacher"),
          lambda: evaluate(teacher, backend=_factory(given, "teacher", teacher["model"], cfg.device),
                           progress=progress))
    stage("data", "training rows: thought + answer", (cfg.out / "data" / "card.json").is_file(),
          lambda: build_data(cfg, rows, prompts_file, echo))
    stage("sft", f"LoRA SFT of {cfg.base} (r {cfg.lora_r}, {cfg.epochs:g} epochs)",
          (sft.out / "result.json").is_file(),
          lambda: echo(f"  trained {train_sft(sft, progress=progress).steps} steps"))
    stage("adapter", f"adapter export ({cfg.adapter_dtype})",
          (cfg.out / "adapter" / "adapter_config.json").is_file(),
          lambda: export_adapter(sft.out / "adapter", cfg.out / "adapter", cfg.adapter_dtype))
    stage("measure", "measure: smoke (demo settings) and XSTest safe prompts", all(eval_done(Path(v["out"]))
                                                                                 for v in runs),
          lambda: measure_all(cfg, runs, merged, given, progress, echo))
    stage("card", "CARD.md (rebuilt on every run)", False, lambda: result.measures.update(write_card(cfg, runs)))
    return result


def build_data(cfg: ThinkRecipeConfig, rows: list[dict[str, Any]], prompts_file: Path, echo: Echo) -> None:
    """``OUT/data/dataset.jsonl`` and ``card.json``: rows, drop counts and how often the kept answers refuse."""
    replies: dict[str, tuple[str | None, bool]] = {}
    refused: dict[str, bool] = {}
    samples = cfg.out / "teacher" / "samples.jsonl"
    for line in samples.read_text(encoding="utf-8").splitlines() if samples.is_file() else []:
        if line.strip():
            s = json.loads(line)
            replies[s["prompt_id"]] = (s.get("response") if s.get("status") == "ok" else None,
                                       s.get("finish_reason") == "length")
            v = s.get("judgments", {}).get("rs-match", {}).get("full") or {}
            refused[s["prompt_id"]] = v.get("unsafe") is False
    train, dropped = build_rows(rows, replies)
    if not train:
        raise SafereasonError(f"no training row left: every teacher answer was dropped ({dict(dropped)}); raise "
                              "teacher_max_new_tokens or check the teacher")
    text = jsonl(train)
    write_if_changed(cfg.out / "data" / "dataset.jsonl", text)
    by_label = {lb: sum(r["label"] == lb for r in train) for lb in ("benign", "harmful")}
    harmful_refused = sum(refused.get(r["id"], False) for r in train if r["label"] == "harmful")
    card = {"prompts": {"source": cfg.prompts, "rows": len(rows),
                        "sha256": hashlib.sha256(prompts_file.read_bytes()).hexdigest()},
            "rows": len(train), "by_label": by_label,
            "by_answer_source": {s: sum(r["answer_source"] == s for r in train) for s in ("teacher", "rule")},
            "dropped": dict(dropped), "harmful_answers_refusing_rs_match": harmful_refused,
            "sha256": hashlib.sha256(text.encode()).hexdigest()}
    write_if_changed(cfg.out / "data" / "card.json", json.dumps(card, indent=2) + "\n")
    echo(f"  {len(train)} rows ({by_label['harmful']} harmful, {harmful_refused} of them refused by the teacher); "
         f"dropped: {dict(dropped) or 'none'}")
