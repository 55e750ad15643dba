"""The report's tables as plain text cells, shared by the HTML and Markdown writers (each escapes on output)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safereason.metrics import METRIC_NAMES
from safereason.reasoning.morethink import morethink_line
from safereason.report.runs import Run, has_safety, judge_order, judge_parts, short
from safereason.report.summary import LABELS, fmt_metric, fmt_refusal


@dataclass
class MetricsTable:
    """One judge's table, shared by the HTML and Markdown writers.

    Each cell is (text, key); ``key`` is (run index, part, metric) for cells that show a metrics.json number
    (the HTML tags them with ``data-*`` attributes so tests and scripts can read them back), else None.
    """

    judge: str
    head: list[str]
    rows: list[list[tuple[str, tuple[int, str, str] | None]]]


def metrics_tables(runs: Sequence[Run]) -> list[MetricsTable]:
    """Rows = run x part. Safety judges get Safe@1/Safe@K/ConsSafe@K and safety counts; judges that judge
    refusal get a refusal-rate column per prompt label (benign first: over-refusal), and refusal-only judges
    their refusal counts, since their safety counts are all zero."""
    tables = []
    for judge in judge_order(runs):
        entries = [(i, r, p, r.metrics[judge][p]) for i, r in enumerate(runs) for p in judge_parts(runs, judge)
                   if p in r.metrics.get(judge, {})]
        k = max((en.get("k", 0) for *_, en in entries), default=0)
        safety = any(has_safety(en) for *_, en in entries)
        ref_labels = sorted({lab for *_, en in entries for lab in (en.get("refusal") or {})},
                            key=lambda lab: (lab != "benign", lab))
        head = ["run", "part"]
        if safety:
            head += [LABELS[m].replace("K", str(k)) if k else LABELS[m] for m in METRIC_NAMES]
        head += [f"refused ({lab})" for lab in ref_labels]
        head += ["prompts", "judged", "errors", "missing"] if safety else ["prompts", "judged"]
        rows = []
        for i, r, p, en in entries:
            row: list[tuple[str, tuple[int, str, str] | None]] = [(r.label, None), (p, None)]
            if safety:
                row += [(fmt_metric(en, m), (i, p, m)) for m in METRIC_NAMES]
            row += [(fmt_refusal(en, lab) or "n/a", (i, p, f"refusal:{lab}")) for lab in ref_labels]
            if safety:
                row += [(str(en.get(c, "")), None) for c in ("n_prompts", "n_judged", "n_errors", "n_missing")]
            else:
                groups = (en.get("refusal") or {}).values()
                row += [(str(sum(g.get(c, 0) for g in groups)), None) for c in ("n_prompts", "n_judged")]
            rows.append(row)
        tables.append(MetricsTable(judge, head, rows))
    return tables


def header_rows(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """(field, one value per run) for the run table; plain text, escaped by the writer."""
    def cfg(key: str) -> list[Any]:
        return [r.config.get(key) for r in runs]

    def fmt(key: str, limit: int = 60) -> list[str]:
        return [short(v, limit) for v in cfg(key)]

    rows: list[tuple[str, list[str]]] = [
        ("directory", [str(r.path) for r in runs]),
        ("model", fmt("model", 80)),
        ("benchmark", fmt("benchmark", 80)),
        ("K (samples per prompt)", fmt("k")),
        ("temperature", fmt("temperature")),
        ("top-p", fmt("top_p")),
        ("top-k", fmt("top_k")),
        ("max new tokens", fmt("max_new_tokens")),
        ("seed", fmt("seed")),
        ("reasoning format", fmt("reasoning_format")),
        ("think prefill", fmt("think_prefill")),
    ]
    if any("thinking" in r.config for r in runs):
        modes = []
        for r in runs:
            mode = str(r.config.get("thinking", "default"))
            if mode == "more":  # the budgets the samples used; configured ones only for runs without that record
                used = r.manifest.get("morethink")
                mode = morethink_line(used) if used else (
                    f"more (configured budget {r.config.get('think_budget')}, rounds {r.config.get('think_rounds')})")
            modes.append(mode)
        rows.append(("thinking control", modes))
    for key, name in (("enable_thinking", "enable thinking"), ("prefill", "prefill"),
                      ("system_prompt", "system prompt")):
        if any(v is not None for v in cfg(key)):
            rows.append((name, fmt(key, 60)))
    rows += [
        ("judges", [", ".join(r.config.get("judges") or r.metrics) for r in runs]),
        ("dataset", [f"{(r.manifest.get('dataset') or {}).get('name', '?')}: "
                     f"{(r.manifest.get('dataset') or {}).get('n_prompts', '?')} prompts, sha256 "
                     f"{str((r.manifest.get('dataset') or {}).get('sha256', ''))[:12] or '?'}" for r in runs]),
        ("samples", [str(r.manifest.get("n_samples", len(r.samples))) for r in runs]),
        ("versions", [", ".join(f"{k} {v}" for k, v in (r.manifest.get("versions") or {}).items()) or "?"
                      for r in runs]),
        ("finished", [str(r.manifest.get("finished_at", "?")) for r in runs]),
    ]
    if any(r.partial for r in runs):
        rows.append(("status", [f"PARTIAL: {r.partial}" if r.partial else "complete" for r in runs]))
    if any(r.manifest.get("n_skipped") or r.manifest.get("n_blocked") for r in runs):
        rows.append(("left out of the metrics", [f"{r.manifest.get('n_skipped', 0)} skipped (prompt too long), "
                                                 f"{r.manifest.get('n_blocked', 0)} blocked" for r in runs]))
    return rows


def utility_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Accuracy per run and utility judge/part, with the delta against the first undefended run."""
    rows = []
    for r in runs:
        for judge, parts in r.metrics.items():
            for part, entry in parts.items():
                u = entry.get("utility")
                if u and u.get("accuracy") is not None:
                    rows.append({"run": r.label, "defense": r.config.get("defense"), "judge": judge, "part": part,
                                 "accuracy": u["accuracy"], "ci": u.get("ci"), "n_prompts": u["n_prompts"]})
    for row in rows:
        base = next((b for b in rows if not b["defense"] and b["judge"] == row["judge"] and b["part"] == row["part"]),
                    None)
        row["delta"] = None if base is None or base is row else row["accuracy"] - base["accuracy"]
    return rows

