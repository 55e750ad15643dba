"""steer-search's outputs: the JSON record, the judged rollouts, a SafeThink eval config, a terminal table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safereason.defenses.steer_results import CandidateResult, SteerSearchResult
from safereason.errors import ConfigError


def safethink_config(result: SteerSearchResult, judge_options: dict[str, Any] | None = None,
                     **eval_keys: Any) -> dict[str, Any]:
    """An eval config (validated) running SafeThink with the winning prefix, the search's judge as its scorer
    and the search's prompt rendering; ``eval_keys`` (model, benchmark, data_dir, ...) complete it."""
    from safereason.config import make_config

    best = result.best
    if best is None:
        raise ConfigError("no candidate was judged (every verdict was an error), so there is no prefix to pick")
    s = result.settings
    judge = s["judge"]
    out: dict[str, Any] = {k: v for k, v in eval_keys.items() if v is not None}
    out.setdefault("reasoning_format", s["reasoning_format"])
    if s["system_prompt"]:
        out.setdefault("system_prompt", s["system_prompt"])
    if s["think_prefill"]:
        out.setdefault("think_prefill", s["think_prefill"])
    out.setdefault("judges", [judge])
    if judge_options:
        out.setdefault("judge_options", {judge: dict(judge_options)})
    options: dict[str, Any] = {"prefix": best.prefix, "scorer": judge}
    if judge_options:
        options["scorer_options"] = dict(judge_options)
    out["defense"] = "safethink"
    out["defense_options"] = options
    make_config(**out)  # the file must load with `safereason eval --config`
    return out


def write_outputs(result: SteerSearchResult, out_dir: str | Path, judge_options: dict[str, Any] | None = None,
                  **eval_keys: Any) -> list[Path]:
    """``steer_search.json`` (every number, setting and seed), ``rollouts.jsonl`` (judged texts) and, when a
    candidate won, ``safethink.yaml`` (an eval config: ``safereason eval --config safethink.yaml``)."""
    import yaml

    from safereason.rundir import atomic_write_text

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "steer_search.json", out / "rollouts.jsonl"]
        atomic_write_text(written[0], json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(written[1], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.rollouts))
        if result.best is not None:
            cfg = safethink_config(result, judge_options, **eval_keys)
            head = ("# SafeThink with the prefix picked by `safereason steer-search` (see steer_search.json).\n"
                    "# Run: safereason eval --config safethink.yaml --out runs/safethink\n"
                    "# Flags override keys (e.g. --benchmark strongreject). Evaluate on prompts the search did not\n"
                    "# see, or the safety gain is overstated (the prefix was picked on them).\n")
            written.append(out / "safethink.yaml")
            atomic_write_text(written[2], head + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    except OSError as e:
        raise ConfigError(f"cannot write to {out}: {e.strerror}") from None
    return written


def _ci(ci: tuple[float, float] | None) -> str:
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def result_table(result: SteerSearchResult, title: str = "steer-search") -> Any:
    """A Rich table: ranked candidates, then the baseline (no prefix)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, justify in (("rank", "right"), ("prefix", "left"), ("safety [95% CI]", "left"),
                         ("Δ vs none", "left"), ("KL", "right"), ("score", "right"), ("errors", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]

    def row(r: CandidateResult, end: bool = False) -> None:
        table.add_row(
            str(r.rank) if r.rank is not None else "-", r.prefix or "(none: baseline)",
            "n/a" if r.safety is None else f"{r.safety:.3f}{_ci(r.safety_ci)}",
            "-" if r.index is None or r.delta is None else f"{r.delta:+.3f}{_ci(r.delta_ci)}",
            f"{r.kl:.4f}", "n/a" if r.score is None else f"{r.score:.3f}", str(r.n_errors), end_section=end)

    ranking = result.ranking
    for i, r in enumerate(ranking):
        row(r, end=i == len(ranking) - 1)
    row(result.baseline)
    return table
