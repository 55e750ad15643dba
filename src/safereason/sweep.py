"""Sweeps: one resumable run dir per point of a grid over config keys, and one combined report.

A sweep file is an eval config (the same snake_case keys) plus ``grid`` and ``out``::

    model: smollm2-135m
    benchmark: smoke
    k: 4
    max_new_tokens: 128
    think_budget: 96      # MoreThink answers with max_new_tokens - think_budget
    think_prefill: "<think>\\n"
    grid:
      thinking: [default, zero, less, more]
      temperature: [0.6, 1.0]
    out: runs/sweep-thinking

Each point runs in ``out/<key=value,...>/`` exactly as ``safereason eval`` would (so re-running the sweep
resumes every point), the model is loaded once for all points that share it, and ``out/sweep.json`` +
``out/summary.md`` + ``out/report.html`` compare the points.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safereason.config import EvalConfig, make_config
from safereason.errors import ConfigError
from safereason.rundir import atomic_write_text

#: keys whose change needs another loaded model
BACKEND_KEYS = ("model", "backend", "backend_options", "device", "dtype", "chat_template")


@dataclass
class SweepResult:
    out: Path
    points: list[dict[str, Any]]  # {"point": {...}, "run_dir": str, "metrics": {...}}
    report: Path | None


def _slug(point: dict[str, Any]) -> str:
    text = ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in point.items())
    return "".join(c if c.isalnum() or c in "-_.=," else "-" for c in text)[:120] or "base"


def load_sweep(path: str | Path) -> tuple[dict[str, Any], dict[str, list[Any]], Path]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read sweep file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep file {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must be a mapping of keys to values")
    return split_sweep(data)


def split_sweep(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]], Path]:
    """(base config, grid, out) from a sweep mapping, validated."""
    data = dict(data)
    grid = data.pop("grid", None)
    out = data.pop("out", None)
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("a sweep needs a non-empty `grid:` mapping of config keys to lists of values")
    if out is None:
        raise ConfigError("a sweep needs `out:`, the folder for its run dirs")
    fields = EvalConfig.model_fields
    for key, values in grid.items():
        if key not in fields or key == "out":
            from safereason.errors import suggest

            raise ConfigError(f"grid key {key!r} is not a config key.{suggest(key, fields)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key {key!r} needs a non-empty list of values")
        if key in data:
            raise ConfigError(f"{key!r} is both a config key and a grid key; keep one")
    # validate every point before running any, so a typo in the last value fails at once
    for point in grid_points(grid):
        make_config(**{**data, **point})
    return data, grid, Path(out)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def sweep(base: dict[str, Any], grid: dict[str, list[Any]], out: str | Path, *, progress: bool = True,
          on_point: Callable[[int, int, dict[str, Any]], None] | None = None) -> SweepResult:
    """Run (or resume) every grid point, then write ``sweep.json``, ``summary.md`` and ``report.html``."""
    from safereason.models import build_backend
    from safereason.runner import evaluate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = grid_points(grid)
    cache: dict[str, Any] = {}
    done: list[dict[str, Any]] = []
    for i, point in enumerate(points):
        cfg = make_config(**{**base, **point, "out": out / _slug(point)})
        if on_point is not None:
            on_point(i, len(points), point)
        key = json.dumps({k: getattr(cfg, k) for k in BACKEND_KEYS}, sort_keys=True, default=str)

        def factory(cfg: EvalConfig = cfg, key: str = key) -> Any:
            if key not in cache:
                cache.clear()  # one model in memory at a time
                cache[key] = build_backend(cfg.backend, cfg.model, device=cfg.device, dtype=cfg.dtype,
                                           chat_template=cfg.chat_template, **cfg.backend_options)
            return cache[key]

        result = evaluate(cfg, backend=factory, progress=progress)
        done.append({"point": point, "run_dir": str(result.run_dir), "metrics": result.metrics})
    atomic_write_text(out / "sweep.json", json.dumps({"grid": grid, "base": base, "points": done}, indent=2,
                                                     default=str) + "\n")
    atomic_write_text(out / "summary.md", sweep_markdown(grid, done))
    report = None
    try:
        from safereason.report.html import build_report
    except ImportError:  # pragma: no cover - the HTML report is optional
        build_report = None
    if build_report is not None:
        report = build_report([Path(d["run_dir"]) for d in done], out / "report.html")
    return SweepResult(out=out, points=done, report=report)


def sweep_markdown(grid: dict[str, list[Any]], done: list[dict[str, Any]]) -> str:
    from safereason.report.summary import fmt_metric

    keys = list(grid)
    lines = ["# safereason sweep", "", f"Grid: {', '.join(f'{k} in {v}' for k, v in grid.items())}", ""]
    header = [*keys, "judge", "part", "Safe@1", "Safe@K", "ConsSafe@K", "run dir"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in done:
        for judge, parts in d["metrics"].items():
            for part, e in parts.items():
                if e.get("safe@1") is None and e.get("refusal"):
                    continue
                cells = [str(d["point"][k]) for k in keys] + [judge, part]
                cells += [fmt_metric(e, m) for m in ("safe@1", "safe@k", "conssafe@k")] + [f"`{d['run_dir']}`"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
