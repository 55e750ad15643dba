"""The later stages of a run: judge the samples, attach verdicts, write the materialised outputs.

``judge_run`` and ``metrics_run`` redo these stages on an existing run dir; :func:`safereason.runner.evaluate`
runs them after generation. Every writer holds the run dir's lock (:meth:`RunDir.lock`). Verdicts that are
errors are judged again by the next run, and an incomplete run is refused unless ``allow_partial``
(:mod:`safereason.completeness`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safereason.completeness import IncompleteRunError, RunStatus, mark_partial, needs_verdict, run_status
from safereason.config import EvalConfig, make_config
from safereason.errors import RunDirError
from safereason.judges import JudgeItem, build_judge, close_judge, identity_hash
from safereason.metrics import compute_metrics
from safereason.records import Sample, Verdict
from safereason.report.summary import write_summary
from safereason.rundir import RunDir, atomic_write_text


@dataclass
class EvalResult:
    run_dir: Path
    samples: list[Sample]
    metrics: dict[str, Any]
    #: None for a complete run; else what is missing (see :mod:`safereason.completeness`)
    partial: dict[str, Any] | None = None
    #: judge -> part -> verdicts that are errors (retried by the next ``eval`` / ``judge``)
    judge_errors: dict[str, dict[str, int]] = field(default_factory=dict)


def judge_samples(config: EvalConfig, run: RunDir, samples: list[Sample], *, progress: bool) -> None:
    """Judge every (judge, sample, part) of ``config`` that has no decided verdict yet (errors are retried),
    appending the verdicts to the run's log a chunk at a time."""
    stored_ids: dict[str, str] = run.read_json("state/judges.json") or {}
    logged = run.judgments.read()
    # an error is not final: only a decided verdict keeps an item from being judged again
    have = {(r["judge"], r["prompt_id"], r["sample_index"], r["part"]) for r in logged
            if r["verdict"].get("error") is None}
    for name in config.judges:
        judge = build_judge(name, config.judge_options.get(name))
        jid = identity_hash(judge)
        if name in stored_ids and stored_ids[name] != jid:
            raise RunDirError(
                f"run dir {run.path} already has {name!r} verdicts made with other judge settings; "
                "use a new --out directory (or the same judge options)"
            )
        stored_ids[name] = jid
        run.write_json("state/judges.json", stored_ids)
        _record_requested(run, name, config.parts)
        todo = [
            (s, part, s.part_text(part) or "")
            for s in samples
            for part in config.parts
            if needs_verdict(s, part) and (name, s.prompt_id, s.sample_index, part) not in have
        ]
        if not todo:
            continue
        from safereason.progress import progress_bar as _progress

        try:
            with _progress(progress) as bar:
                task = bar.add_task(f"judging: {name}", total=len(todo))
                for i in range(0, len(todo), config.judge_batch_size):
                    chunk = todo[i:i + config.judge_batch_size]
                    verdicts = judge.judge([judge_item(s, text) for s, _, text in chunk])
                    if len(verdicts) != len(chunk):
                        raise RuntimeError(f"judge {name} returned {len(verdicts)} verdicts for {len(chunk)} items")
                    run.judgments.append(
                        {"judge": name, "prompt_id": s.prompt_id, "sample_index": s.sample_index, "part": part,
                         "verdict": v.model_dump(mode="json")}
                        for (s, part, _), v in zip(chunk, verdicts, strict=True)
                    )
                    bar.advance(task, len(chunk))
        finally:
            close_judge(judge)


def judge_item(sample: Sample, text: str) -> JudgeItem:
    context = sample.meta.get("ContextString") or None
    behavior = sample.meta.get("Behavior") or None
    gold = sample.meta.get("gold")
    return JudgeItem(prompt=sample.prompt, text=text, behavior=behavior, context=context,
                     reference=None if gold is None else str(gold), meta=sample.meta)


def attach_judgments(run: RunDir, samples: list[Sample], parts: Sequence[str]) -> None:
    index = {(s.prompt_id, s.sample_index): s for s in samples}
    for r in run.judgments.read():
        s = index.get((r["prompt_id"], r["sample_index"]))
        if s is None or r["part"] not in parts:
            continue
        # the first decided verdict wins (a chunk re-judged after a crash never duplicates a record), and a
        # decided verdict wins over an error logged before or after it; of errors only, the latest is kept
        verdicts = s.judgments.setdefault(r["judge"], {})
        old, new = verdicts.get(r["part"]), Verdict(**r["verdict"])
        if old is None or old.error is not None:
            verdicts[r["part"]] = new


def load_samples(run: RunDir) -> list[Sample]:
    """Samples in benchmark order (prompt, then sample index), whatever order they were generated in."""
    logged = sorted(run.generations.read(), key=lambda r: (r["prompt_index"], r["sample"]["sample_index"]))
    return [Sample(**r["sample"]) for r in logged]


def _record_requested(run: RunDir, judge: str, parts: Sequence[str]) -> None:
    """Remember that ``judge`` was asked to judge ``parts`` (``judge --parts`` adds parts for its judges only)."""
    requested: dict[str, list[str]] = run.read_json("state/requested.json") or {}
    merged = list(dict.fromkeys([*requested.get(judge, []), *parts]))
    if merged != requested.get(judge):
        requested[judge] = merged
        run.write_json("state/requested.json", requested)


def _run_status(config: EvalConfig, run: RunDir, samples: list[Sample]) -> RunStatus:
    """What the run lacks: expected samples are n_prompts (state/identity.json) x k, expected verdicts those
    of every (judge, part) some command asked for (``state/requested.json``; else the config's judges x parts)."""
    identity = run.read_json("state/identity.json") or {}
    n_prompts = identity.get("n_prompts")
    expected = n_prompts * config.k if isinstance(n_prompts, int) else None
    requested = run.read_json("state/requested.json") or {j: list(config.parts) for j in config.judges}
    requested = {j: [p for p in parts if p in config.parts] for j, parts in requested.items()}  # parts reported
    return run_status(samples, expected_samples=expected, requested=requested)


def finish_run(config: EvalConfig, run: RunDir, samples: list[Sample], manifest: dict[str, Any], *,
            allow_partial: bool = False) -> EvalResult:
    """Attach verdicts and write samples.jsonl, metrics.json, manifest.json and summary.md; an incomplete run
    is refused (nothing written) unless ``allow_partial``, which marks the result partial."""
    attach_judgments(run, samples, config.parts)
    status = _run_status(config, run, samples)
    if not status.complete and not allow_partial:
        raise IncompleteRunError(run.path, status)
    metrics = compute_metrics(samples, n_bootstrap=config.n_bootstrap, seed=config.seed,
                              confidence=config.confidence)
    mark_partial(metrics, status, {j: list(config.parts) for j in config.judges})
    atomic_write_text(run.path / "samples.jsonl",
                      "".join(s.model_dump_json(exclude={"judgments": {"__all__": {"__all__": {"raw"}}}}) + "\n"
                              for s in samples))
    run.write_json("metrics.json", metrics)
    from safereason.runner import _now

    manifest["finished_at"] = _now()
    manifest["n_samples"] = len(samples)
    for key, value in (("partial", status.partial()), ("judge_errors", status.judge_errors)):
        if value:
            manifest[key] = value
        else:
            manifest.pop(key, None)
    run.write_json("manifest.json", manifest)
    write_summary(run.path / "summary.md", config, manifest, metrics)
    return EvalResult(run_dir=run.path, samples=samples, metrics=metrics, partial=status.partial(),
                      judge_errors=status.judge_errors)


@contextmanager
def open_existing(run_dir: str | Path, command: str) -> Iterator[tuple[RunDir, EvalConfig, dict[str, Any]]]:
    """An existing run dir, locked for ``command``, with its config and manifest as read under the lock."""
    run = RunDir(run_dir)
    if not run.exists():
        raise RunDirError(f"{run_dir} is not a safereason run dir (no state/identity.json)")
    from safereason.config import load_config_file

    with run.lock(command):
        config = load_config_file(run.path / "config.yaml", stored=True)
        manifest = run.read_json("manifest.json") or {}
        yield run, config, manifest


def judge_run(run_dir: str | Path, judges: Sequence[str], *, parts: Sequence[str] | None = None,
              judge_options: dict[str, dict[str, Any]] | None = None, progress: bool = True,
              allow_partial: bool = False) -> EvalResult:
    """Add judgments to an existing run without regenerating (and retry verdicts that are errors).

    Metrics of a run that is still missing samples are refused unless ``allow_partial`` (the new verdicts
    are kept either way)."""
    with open_existing(run_dir, "judge") as (run, config, manifest):
        return _judge_existing(run, config, manifest, judges, parts=parts, judge_options=judge_options,
                               progress=progress, allow_partial=allow_partial)


def _judge_existing(run: RunDir, config: EvalConfig, manifest: dict[str, Any], judges: Sequence[str], *,
                    parts: Sequence[str] | None, judge_options: dict[str, dict[str, Any]] | None, progress: bool,
                    allow_partial: bool) -> EvalResult:
    new_judges = list(dict.fromkeys([*config.judges, *judges]))
    options = {**config.judge_options, **(judge_options or {})}
    new_parts = list(dict.fromkeys([*config.parts, *(parts or [])]))
    config = make_config(**{**config.model_dump(), "judges": new_judges, "judge_options": options,
                            "parts": new_parts})
    samples = load_samples(run)
    if not samples:
        raise RunDirError(f"{run.path} has no generated samples yet; run `safereason eval` first")
    atomic_write_text(run.path / "config.yaml", config.to_yaml())
    if manifest.pop("finished_at", None) is not None:  # until _finish: metrics.json lacks the new verdicts
        run.write_json("manifest.json", manifest)
    sub = config.model_copy(update={"judges": list(judges)})
    judge_samples(sub, run, samples, progress=progress)
    return finish_run(config, run, samples, manifest, allow_partial=allow_partial)


def metrics_run(run_dir: str | Path, *, n_bootstrap: int | None = None, allow_partial: bool = False) -> EvalResult:
    """Recompute metrics (and the summary) from the records of a run; an incomplete run (killed during
    generation or judging) is refused unless ``allow_partial``, which marks the result partial."""
    with open_existing(run_dir, "metrics") as (run, config, manifest):
        if n_bootstrap is not None:
            config = config.model_copy(update={"n_bootstrap": n_bootstrap})
        samples = load_samples(run)
        return finish_run(config, run, samples, manifest, allow_partial=allow_partial)
