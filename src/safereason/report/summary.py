"""Human-readable views of ``metrics.json``: a Rich table for the terminal and ``summary.md``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from safereason.metrics import METRIC_NAMES
from safereason.rundir import atomic_write_text

if TYPE_CHECKING:
    from safereason.config import EvalConfig

LABELS = {"safe@1": "Safe@1", "safe@k": "Safe@K", "conssafe@k": "ConsSafe@K"}


def fmt_metric(entry: dict[str, Any], name: str) -> str:
    value = entry.get(name)
    if value is None:
        return "n/a"
    ci = (entry.get("ci") or {}).get(name)
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def fmt_refusal(entry: dict[str, Any], label: str = "benign") -> str:
    """The refusal rate of a refusal-capable judge on prompts with ``label`` (over-refusal for benign)."""
    group = (entry.get("refusal") or {}).get(label)
    if group is None:
        return "" if not entry.get("refusal") else "n/a"
    ci = group.get("ci")
    rate = group["refusal_rate"]
    return f"{rate:.3f}" if ci is None else f"{rate:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _has_refusal(metrics: dict[str, Any]) -> bool:
    return any(e.get("refusal") for parts in metrics.values() for e in parts.values())


def _counts(entry: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(entry["n_prompts"]), str(entry["n_judged"]), str(entry["n_errors"]), str(entry["n_missing"]))


def _is_safety(entry: dict[str, Any]) -> bool:
    return "safety" in entry.get("kind", "safety")


def metrics_table(metrics: dict[str, Any], title: str | None = None) -> Table:
    """Safety metrics of the judges that decide safety (refusal and utility judges have their own tables)."""
    k = max((e.get("k", 0) for parts in metrics.values() for e in parts.values()), default=0)
    table = Table(title=title, title_justify="left")
    table.add_column("judge")
    table.add_column("part")
    for name in METRIC_NAMES:
        table.add_column(LABELS[name].replace("K", str(k)) if k else LABELS[name], justify="right")
    for col in ("prompts", "judged", "errors", "missing"):
        table.add_column(col, justify="right")
    for judge, parts in metrics.items():
        for part, entry in parts.items():
            if _is_safety(entry):
                table.add_row(judge, part, *(fmt_metric(entry, m) for m in METRIC_NAMES), *_counts(entry))
    return table


def extra_tables(metrics: dict[str, Any]) -> list[Table]:
    """Refusal rates per prompt label and utility accuracy, when a run has them."""
    tables = []
    labels = sorted({lab for parts in metrics.values() for e in parts.values() for lab in (e.get("refusal") or {})})
    if labels:
        t = Table(title="refusal rate (benign = over-refusal)", title_justify="left")
        for col in ("judge", "part", *labels, "judged"):
            t.add_column(col, justify="left" if col in ("judge", "part") else "right")
        for judge, parts in metrics.items():
            for part, e in parts.items():
                if e.get("refusal"):
                    cells = [fmt_refusal(e, lab) if lab in e["refusal"] else "" for lab in labels]
                    t.add_row(judge, part, *cells, str(sum(g["n_judged"] for g in e["refusal"].values())))
        tables.append(t)
    rows = [(j, p, e["utility"]) for j, parts in metrics.items() for p, e in parts.items() if e.get("utility")]
    if rows:
        t = Table(title="utility (accuracy@1, exact match)", title_justify="left")
        for col in ("judge", "part", "accuracy", "prompts", "errors"):
            t.add_column(col, justify="left" if col in ("judge", "part") else "right")
        for j, p, u in rows:
            acc = "n/a" if u["accuracy"] is None else f"{u['accuracy']:.3f}" + (
                f" [{u['ci'][0]:.2f}, {u['ci'][1]:.2f}]" if u.get("ci") else "")
            t.add_row(j, p, acc, str(u["n_prompts"]), str(u["n_errors"]))
        tables.append(t)
    return tables


def summary_markdown(config: EvalConfig, manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    ds = manifest.get("dataset", {})
    partial = manifest.get("partial")
    lines = [
        f"# safereason run: {config.model} on {config.benchmark}" + (" (PARTIAL)" if partial else ""),
        "",
        *([f"**PARTIAL**: computed with --allow-partial from an incomplete run: {partial['missing_samples']} of "
           f"{partial['expected_samples']} samples and {partial['missing_judgments']} judgments are missing. "
           "Re-run the eval command to resume.", ""] if partial else []),
        f"- prompts: {ds.get('n_prompts')} (dataset sha256 `{str(ds.get('sha256', ''))[:12]}`), "
        f"K = {config.k}, samples: {manifest.get('n_samples')}",
        f"- sampling: temperature {config.temperature}, top-p {config.top_p}, top-k {config.top_k}, "
        f"max new tokens {config.max_new_tokens}, seed {config.seed}",
        f"- reasoning format: `{config.reasoning_format}`"
        + (f", think prefill `{config.think_prefill!r}`" if config.think_prefill else ""),
        *_control_lines(config, manifest),
        f"- judges: {', '.join(config.judges)}; parts: {', '.join(config.parts)}",
        *(["- judge errors (left out of the metrics; a re-run of eval or judge retries them): "
           + ", ".join(f"{j} x {p}: {n}" for j, ps in manifest["judge_errors"].items() for p, n in ps.items())]
          if manifest.get("judge_errors") else []),
        *([f"- left out of the metrics: {manifest.get('n_skipped', 0)} samples skipped (prompt longer than the "
           f"model's context, on_long_prompt: skip), {manifest.get('n_blocked', 0)} blocked by the provider"]
          if manifest.get("n_skipped") or manifest.get("n_blocked") else []),
        "",
        f"Safety metrics over non-benign prompts, with {config.confidence:.0%} bootstrap CIs over prompts "
        f"({config.n_bootstrap} resamples). ConsSafe@K counts a tie as safe.",
        "",
    ]
    refusal = _has_refusal(metrics)
    head = ["judge", "part", "Safe@1", "Safe@K", "ConsSafe@K", *(["refused (benign)"] if refusal else []),
            "prompts", "judged", "errors", "missing"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for judge, parts in metrics.items():
        for part, e in parts.items():
            if not _is_safety(e) and not e.get("refusal"):
                continue
            cells = [fmt_metric(e, m) for m in METRIC_NAMES] + ([fmt_refusal(e)] if refusal else [])
            lines.append(f"| {judge} | {part} | " + " | ".join(cells) + " | " + " | ".join(_counts(e)) + " |")
    if refusal:
        lines += ["", "Refusal rates (mean over prompts of refused / judged samples; XSTest counts full and "
                  "partial refusals):", "", "| judge | part | prompt label | refusal rate | prompts | classes |",
                  "|---|---|---|---|---|---|"]
        for judge, parts in metrics.items():
            for part, e in parts.items():
                for label, g in (e.get("refusal") or {}).items():
                    classes = ", ".join(f"{k}: {v}" for k, v in g["classes"].items())
                    lines.append(f"| {judge} | {part} | {label} | {fmt_refusal(e, label)} | {g['n_prompts']} "
                                 f"| {classes} |")
    for judge, parts in metrics.items():
        for part, e in parts.items():
            if len(e.get("by_category", {})) < 2 and len(e.get("by_label", {})) < 2:
                continue
            lines += ["", f"## {judge} / {part}: by category and label", "",
                      "| group | Safe@1 | Safe@K | ConsSafe@K | prompts |", "|---|---|---|---|---|"]
            for kind in ("by_category", "by_label"):
                for group, g in e.get(kind, {}).items():
                    prefix = "label: " if kind == "by_label" else ""
                    lines.append(f"| {prefix}{group} | " + " | ".join(fmt_metric(g, m) for m in METRIC_NAMES)
                                 + f" | {g['n_prompts']} |")
            mt = e.get("mean_tokens", {})
            lines += ["", f"Mean tokens of safe samples: {mt.get('safe')}; of unsafe samples: {mt.get('unsafe')}."]
    return "\n".join(lines) + "\n"


def _control_lines(config: EvalConfig, manifest: dict[str, Any]) -> list[str]:
    """The model preset and, for MoreThink, the budgets the samples actually used (not the configured ones)."""
    from safereason.reasoning.controls import morethink_line

    lines = []
    preset = manifest.get("preset")
    if preset:
        over = preset.get("overridden") or []
        lines.append(f"- model preset: `{preset.get('model')}` (SafeChain's settings)"
                     + (f", overridden: {', '.join(over)}" if over else ""))
    if manifest.get("morethink"):
        lines.append(f"- {morethink_line(manifest['morethink'])}")
    elif config.thinking == "more":
        lines.append(f"- MoreThink: configured think budget {config.think_budget}, rounds {config.think_rounds} "
                     "(no per-sample record)")
    return lines


def write_summary(path: Path, config: EvalConfig, manifest: dict[str, Any], metrics: dict[str, Any]) -> None:
    atomic_write_text(path, summary_markdown(config, manifest, metrics))


def agreement_table(metrics: dict[str, dict[str, Any]], title: str | None = None) -> Table:
    """One row per judge (or verdict column) of :func:`safereason.agreement.agreement_metrics` output."""
    table = Table(title=title, title_justify="left")
    table.add_column("judge")
    cols = ("accuracy", "precision", "recall", "F1", "Pearson", "kappa", "TN", "FP", "FN", "TP", "scored", "errors")
    for col in cols:
        table.add_column(col, justify="right")
    for name, m in metrics.items():
        conf = m.get("confusion") or {}

        def f(key: str, m: dict[str, Any] = m) -> str:
            return "n/a" if m.get(key) is None else f"{m[key]:.3f}"

        table.add_row(name, f("accuracy"), f("precision"), f("recall"), f("f1"), f("pearson"), f("kappa"),
                      *(str(conf.get(k, "")) for k in ("tn", "fp", "fn", "tp")), str(m["n_scored"]),
                      str(m["n_errors"]))
    return table
