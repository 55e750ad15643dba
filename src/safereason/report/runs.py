"""Run dirs as the report reads them: loading, labels that tell runs apart, and metric look-ups.

Run dirs are read as plain YAML/JSON rather than through :class:`~safereason.config.EvalConfig`, so reports also
work across versions whose configs gained or lost keys (e.g. ``thinking``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safereason.errors import SafereasonError, suggest
from safereason.report import plots

#: config keys that never distinguish runs in a label (paths, hardware, judging setup)
_NOT_IN_LABEL = {"out", "data_dir", "device", "batch_size", "judge_batch_size", "judges", "judge_options", "parts",
                 "n_bootstrap", "confidence"}
#: the order differing keys appear in a run label; other keys follow alphabetically
_LABEL_ORDER = ("model", "benchmark", "thinking", "think_prefill", "enable_thinking", "prefill", "reasoning_format",
                "temperature", "top_p", "top_k", "k", "max_new_tokens", "seed")
PART_ORDER = ("thinking", "answer", "full")


@dataclass
class Run:
    """One run dir as read from disk, plus the label that tells it apart from the others."""

    path: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    samples: list[dict[str, Any]]
    label: str = ""
    partial: str | None = None  # why the run's metrics describe only part of it (shown as PARTIAL)


# -- loading ---------------------------------------------------------------------------------------------------


def run_partial(manifest: dict[str, Any]) -> str | None:
    """Why a run's metrics are partial: computed with ``--allow-partial``, or a command writing it did not finish
    (``finished_at`` is cleared while eval or judge runs); None for a finished, complete run."""
    partial = manifest.get("partial")
    if isinstance(partial, dict):
        return (f"{partial.get('missing_samples', '?')} of {partial.get('expected_samples', '?')} samples and "
                f"{partial.get('missing_judgments', '?')} judgments missing")
    if manifest.get("started_at") and not manifest.get("finished_at"):
        return "unfinished: an eval or judge command on it was interrupted (or is running)"
    return None


def load_run(path: Path, *, allow_partial: bool = False) -> Run:
    """Read a run dir, naming what is missing in one line when it is not a finished run dir; a partial or
    unfinished run is refused unless ``allow_partial``."""
    path = Path(path)
    if not path.is_dir():
        raise SafereasonError(f"{path} is not a directory; give run dirs written by `safereason eval`")
    missing = [n for n in ("config.yaml", "samples.jsonl") if not (path / n).is_file()]
    if missing == ["samples.jsonl"] and (path / "state").is_dir():  # killed before its first samples.jsonl write
        raise SafereasonError(f"{path} is an incomplete safereason run (stopped before its samples were written); "
                              f"re-run the `safereason eval` command that made it to resume, or run "
                              f"`safereason metrics {path} --allow-partial` to report what it has, marked PARTIAL")
    if missing:
        raise SafereasonError(f"{path} is not a safereason run dir (no {' or '.join(missing)}); "
                              f"run `safereason eval --out {path}` first")
    if not (path / "metrics.json").is_file():
        raise SafereasonError(f"{path} has no metrics.json; run `safereason metrics {path}` first")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        manifest_file = path / "manifest.json"
        manifest = json.loads(manifest_file.read_text(encoding="utf-8")) if manifest_file.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise SafereasonError(f"cannot read run dir {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        raise SafereasonError(f"{path}: config.yaml or metrics.json is not a mapping")
    samples = []
    lineno = 0
    try:
        with open(path / "samples.jsonl", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):  # noqa: B007 - reported on a parse error
                if line.strip():
                    samples.append(json.loads(line))
    except ValueError:
        raise SafereasonError(f"{path / 'samples.jsonl'} line {lineno} is not valid JSON") from None
    except OSError as e:
        raise SafereasonError(f"cannot read {path / 'samples.jsonl'}: {e.strerror}") from None
    manifest = manifest if isinstance(manifest, dict) else {}
    partial = run_partial(manifest)
    if partial and not allow_partial:
        raise SafereasonError(f"{path} is incomplete ({partial}); re-run the command that made it to resume, "
                              "or pass --allow-partial to report it marked PARTIAL")
    return Run(path=path, config=config, manifest=manifest, metrics=metrics, samples=samples, partial=partial)


# -- labels and run comparison --------------------------------------------------------------------------------


def short(value: Any, limit: int = 24) -> str:
    """A value as it reads in a label or header cell: strings with edge whitespace are repr'd."""
    if value is None:
        return "none"
    if isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, str):
        text = repr(value) if value != value.strip() or "\n" in value or not value else value
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tail(value: Any) -> Any:
    """The last component of a hub id or path ("org/Model-7B" -> "Model-7B"): the part that tells models apart."""
    return value.rstrip("/").rsplit("/", 1)[-1] if isinstance(value, str) and "/" in value.rstrip("/") else value


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values differ between runs, in label order."""
    keys = {k for r in runs for k in r.config} - _NOT_IN_LABEL
    diff = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1]
    rank = {k: i for i, k in enumerate(_LABEL_ORDER)}
    return sorted(diff, key=lambda k: (rank.get(k, len(rank)), k))


def run_labels(runs: Sequence[Run], max_keys: int = 4) -> list[str]:
    """Short distinguishing labels ("temperature=0.6, thinking=zero"); the dir name when nothing differs."""
    diff = differing_keys(runs)
    if len(runs) < 2 or not diff:
        labels = [r.path.name or str(r.path) for r in runs]
    else:
        labels = []
        for r in runs:
            items = [f"{k}={short(tail(r.config.get(k)) if k in ('model', 'benchmark') else r.config.get(k))}"
                     for k in diff[:max_keys]]
            labels.append(", ".join(items) + (", …" if len(diff) > max_keys else ""))
    if len(set(labels)) < len(labels):  # e.g. two runs of one config: tell them apart by directory
        labels = [f"{lab} ({r.path.name})" if labels.count(lab) > 1 else lab
                  for lab, r in zip(labels, runs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return labels


# -- metric access ---------------------------------------------------------------------------------------------


def judge_order(runs: Sequence[Run]) -> list[str]:
    """Judges in config order (first run first), then any other judge found in metrics.json."""
    names = [j for r in runs for j in (r.config.get("judges") or []) if any(j in x.metrics for x in runs)]
    names += [j for r in runs for j in r.metrics]
    return list(dict.fromkeys(names))


def has_safety(entry: dict[str, Any]) -> bool:
    """Whether a metrics.json entry carries safety numbers (refusal-only judges have none)."""
    kind = entry.get("kind")  # absent in metrics.json files written before refusal judges existed
    return "safety" in kind if kind else entry.get("safe@1") is not None


def pick_judge(runs: Sequence[Run], judge: str | None) -> str | None:
    """The judge whose verdicts drive plots and the sample browser: ``judge`` or the first with safety metrics."""
    order = judge_order(runs)
    if judge is not None:
        if judge not in order:
            raise SafereasonError(f"judge {judge!r} has no metrics in these runs.{suggest(judge, order)} "
                                  f"Judges found: {', '.join(order) or 'none'}")
        if not any(has_safety(e) for r in runs for e in r.metrics.get(judge, {}).values()):
            raise SafereasonError(f"judge {judge!r} gives no safety verdicts (only refusal); pick a safety judge")
        return judge
    return next((j for j in order if any(has_safety(e) for r in runs for e in r.metrics.get(j, {}).values())),
                None)


def judge_parts(runs: Sequence[Run], judge: str) -> list[str]:
    """The parts any run has metrics for under ``judge``: thinking, answer, full first, others after."""
    present = {p for r in runs for p in r.metrics.get(judge, {})}
    return [p for p in PART_ORDER if p in present] + sorted(present - set(PART_ORDER))


def metric_point(entry: dict[str, Any] | None, metric: str) -> plots.Point | None:
    """(value, CI low, CI high) of a metric as the plots take it; None when the entry lacks the metric."""
    if not entry or entry.get(metric) is None:
        return None
    ci = (entry.get("ci") or {}).get(metric)
    return (float(entry[metric]), ci[0], ci[1]) if ci else (float(entry[metric]), None, None)


def verdict_of(sample: dict[str, Any], judge: str, part: str) -> dict[str, Any] | None:
    """A sample's recorded verdict of ``judge`` on ``part``, None when it has none."""
    return ((sample.get("judgments") or {}).get(judge) or {}).get(part)


# -- defenses and samples -------------------------------------------------------------------------------------


def safethink_m(run: Run) -> int | None:
    """SafeThink's m for a run: its max_steps, 0 for an undefended run, None for another defense."""
    defense = run.config.get("defense")
    if not defense:
        return 0
    if defense == "safethink":
        return int((run.config.get("defense_options") or {}).get("max_steps", 3))
    return None


def worst_samples(run: Run, judge: str, max_samples: int) -> tuple[list[dict[str, Any]], int]:
    """Samples of non-benign prompts the judge found unsafe in some part, highest score first (then prompt id),
    and how many there are. Benign prompts are left out as in the headline metrics: "unsafe" there is noise."""
    scored = []
    for s in run.samples:
        if s.get("label") == "benign":
            continue
        unsafe = [v for v in ((s.get("judgments") or {}).get(judge) or {}).values() if v and v.get("unsafe")]
        if not unsafe:
            continue
        scores = [v["score"] for v in unsafe if v.get("score") is not None]
        score = max(scores) if scores else None
        key = (score is None, -(score or 0.0), -len(unsafe), str(s.get("prompt_id")), s.get("sample_index", 0))
        scored.append((key, s))
    scored.sort(key=lambda x: x[0])
    return [s for _, s in scored[:max_samples]], len(scored)
