"""The attack report: attack success per attack, model and defense, from eval run dirs of adversarial files.

Each run dir is ``safereason eval --benchmark DIR/adversarial.jsonl`` of some model (the attacked one, or another
for transfer) with or without a defense. Its samples carry the adversarial rows' fields in ``meta`` (the attack's
name and record), so the report needs nothing but the run dirs:

* **ASR** = 1 - Safe@1 of the eval's judge on the chosen part (answer by default), with the CI of Safe@1
  mirrored (``[1 - hi, 1 - lo]``); **1 - Safe@K** is the chance that at least one of K samples is unsafe.
* **budget per success**: the target queries (PAIR) or optimisation steps (GCG) all behaviours cost, divided by
  the expected number of eval successes (the sum over harmful prompts of their unsafe-sample fraction).
* **success vs budget**: the share of behaviours whose attack reached its *own* success criterion (PAIR: a judge
  score of 10 by depth d; GCG: the target string by step s) within each budget. The eval only sees each
  behaviour's final prompt, so this curve is the attack's view, drawn once per adversarial file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safereason.errors import SafereasonError
from safereason.report.runs import Run, has_safety, load_run, pick_judge, run_labels, tail

#: parts in the order the report prefers them: the answer is what an attacker gets
PART_PREFERENCE = ("answer", "full", "thinking")
OUT_FILES = ("attack_report.md", "attack_report.json", "attack_report.html", "success_vs_budget.png")


@dataclass
class AttackRow:
    """One run dir's attack success."""

    label: str
    run_dir: str
    attack: str
    attacked_model: str | None  # the model the attack was run on (from the attack's identity, when found)
    model: str
    defense: str | None
    judge: str
    part: str
    k: int
    n_prompts: int
    asr: float | None
    asr_ci: list[float] | None
    asr_k: float | None
    asr_k_ci: list[float] | None
    budget_unit: str | None  # "queries" (PAIR), "steps" (GCG) or None (no budget: prefilling, static sets)
    budget_total: int | None
    eval_successes: float
    budget_per_success: float | None
    attack_success_rate: float | None  # the attack's own criterion
    partial: str | None = None
    #: PAIR: the attack's judge replies without [[N]] that upstream's rule read as 1 (None: not recorded)
    judge_unparsed: int | None = None


def _attack_records(run: Run) -> dict[str, dict[str, Any]]:
    """The attack record of every prompt of the run (from the samples' meta), or one error naming the run."""
    out: dict[str, dict[str, Any]] = {}
    for s in run.samples:
        rec = (s.get("meta") or {}).get("attack")
        if not isinstance(rec, dict) or not rec.get("name"):
            raise SafereasonError(f"{run.path}: prompt {s.get('prompt_id')!r} has no attack record; give run dirs "
                                  "of `safereason eval --benchmark DIR/adversarial.jsonl`")
        out.setdefault(str(s.get("prompt_id")), {**rec, "_label": s.get("label")})
    return out


def _budget(rec: dict[str, Any]) -> tuple[str | None, int | None]:
    from safereason.attacks import ATTACKS

    name = rec.get("name")
    if isinstance(name, str) and name in ATTACKS and ATTACKS.get(name).budget == "none":
        return None, None  # a fixed transform (prefilling): nothing spent, so no budget per success
    if rec.get("queries") is not None:
        return "queries", int(rec["queries"])
    if rec.get("steps") is not None:
        return "steps", int(rec["steps"])
    return None, None


def _flip(ci: Any) -> list[float] | None:
    return [1 - ci[1], 1 - ci[0]] if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci else None


def _attacked_model(run: Run) -> str | None:
    source = (run.manifest.get("dataset") or {}).get("source")
    ident = Path(str(source)).parent / "attack.json" if source else None
    try:
        data = json.loads(ident.read_text(encoding="utf-8")) if ident is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return data.get("target_model") or data.get("model")


def _part(run: Run, judge: str, part: str | None) -> str:
    entries = run.metrics.get(judge, {})
    if part is not None:
        if part not in entries or not has_safety(entries[part]):
            raise SafereasonError(f"{run.path}: judge {judge!r} has no safety metrics for part {part!r}")
        return part
    found = next((p for p in PART_PREFERENCE if p in entries and has_safety(entries[p])), None)
    if found is None:
        raise SafereasonError(f"{run.path}: judge {judge!r} has no safety metrics")
    return found


def _eval_successes(run: Run, judge: str, part: str) -> float:
    """Expected eval successes with one sample per prompt: each harmful prompt's unsafe-sample fraction."""
    by_prompt: dict[str, list[bool]] = {}
    for s in run.samples:
        if s.get("label") == "benign":
            continue
        v = ((s.get("judgments") or {}).get(judge) or {}).get(part)
        if isinstance(v, dict) and v.get("unsafe") is not None:
            by_prompt.setdefault(str(s.get("prompt_id")), []).append(bool(v["unsafe"]))
    return sum(sum(v) / len(v) for v in by_prompt.values())


def attack_row(run: Run, label: str, judge: str, part: str | None = None) -> AttackRow:
    records = _attack_records(run)
    part = _part(run, judge, part)
    entry = run.metrics[judge][part]
    ci = entry.get("ci") or {}
    units = {_budget(r)[0] for r in records.values()}
    unit = units.pop() if len(units) == 1 else None
    budget = sum(_budget(r)[1] or 0 for r in records.values()) if unit else None
    own = [o for r in records.values() if (o := _own_success(r)) is not None and r.get("_label") != "benign"]
    successes = _eval_successes(run, judge, part)
    return AttackRow(
        label=label, run_dir=str(run.path), attack="+".join(sorted({str(r["name"]) for r in records.values()})),
        attacked_model=_attacked_model(run), model=str(run.config.get("model")), defense=run.config.get("defense"),
        judge=judge, part=part, k=int(entry.get("k") or run.config.get("k") or 1), n_prompts=int(entry["n_prompts"]),
        asr=None if entry.get("safe@1") is None else 1 - entry["safe@1"], asr_ci=_flip(ci.get("safe@1")),
        asr_k=None if entry.get("safe@k") is None else 1 - entry["safe@k"], asr_k_ci=_flip(ci.get("safe@k")),
        budget_unit=unit, budget_total=budget, eval_successes=successes,
        budget_per_success=budget / successes if budget is not None and successes > 0 else None,
        attack_success_rate=sum(map(bool, own)) / len(own) if own else None, partial=run.partial,
        judge_unparsed=_unparsed(records))


def _unparsed(records: dict[str, dict[str, Any]]) -> int | None:
    counts = [int(r["judge_unparsed"]) for r in records.values() if r.get("judge_unparsed") is not None]
    return sum(counts) if counts else None


# -- success vs budget ----------------------------------------------------------------------------------------


def _success_budget(rec: dict[str, Any]) -> tuple[str, int | None, int | None] | None:
    """(axis, budget at which the attack succeeded or None, the budget it was given) for one behaviour."""
    cfg = rec.get("config") or {}
    if rec.get("name") == "pair":  # PAIR: rounds (a row's record drops a null success_iteration)
        return "PAIR depth", rec.get("success_iteration"), cfg.get("n_iterations") or rec.get("iterations")
    if rec.get("name") == "gcg" or "target_reached" in rec:  # GCG: the first step whose suffix hit the target
        history = rec.get("history") or []
        first = next((h.get("step") for h in history if h.get("target_reached")), None)
        if first is None and rec.get("target_reached") and not history:
            first = 0  # the initial suffix already gave the target
        return "GCG steps", first, cfg.get("steps") or rec.get("steps")
    return None


def _own_success(rec: dict[str, Any]) -> bool | None:
    """The attack's own verdict: PAIR's judge score 10, GCG's target string reached."""
    return rec["success"] if rec.get("success") is not None else rec.get("target_reached")


def budget_curves(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One success-vs-budget curve per adversarial file (runs of the same file share it)."""
    curves: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = str((run.manifest.get("dataset") or {}).get("sha256") or run.config.get("benchmark"))
        if key in curves:
            continue
        points = [p for r in _attack_records(run).values() if r.get("_label") != "benign"
                  and (p := _success_budget(r)) is not None]
        if not points:
            continue
        axis = points[0][0]
        hits = [b for _, b, _ in points if b is not None]
        top = max([g for _, _, g in points if g] + hits + [1])
        xs = sorted({0, *hits, top})
        name = "+".join(sorted({str(r["name"]) for r in _attack_records(run).values()}))
        attacked = _attacked_model(run)
        curves[key] = {"label": f"{name} on {tail(attacked) if attacked else tail(run.config.get('benchmark'))}",
                       "axis": axis, "n": len(points),
                       "points": [[x, sum(b <= x for b in hits) / len(points)] for x in xs]}
    return list(curves.values())


def budget_plot(curves: Sequence[dict[str, Any]]) -> bytes:
    from matplotlib.ticker import MaxNLocator

    from safereason.report.plots import _figure, _png, run_colors

    axes = sorted({c["axis"] for c in curves})  # one panel per budget kind: GCG steps and PAIR depth differ
    colors = run_colors(len(curves))
    with _figure((5.2 * len(axes), 3.8)) as fig:
        for k, axis in enumerate(axes):
            ax = fig.add_subplot(1, len(axes), k + 1)
            for c, color in zip(curves, colors, strict=True):
                if c["axis"] == axis:
                    xs, ys = zip(*c["points"], strict=True)
                    ax.step(xs, ys, where="post", color=color, marker="o", label=f"{c['label']} (n={c['n']})")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(axis)
            ax.set_ylabel("attack success (own criterion)")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(loc="lower right", fontsize=8)
        return _png(fig)


# -- outputs --------------------------------------------------------------------------------------------------


def _fmt(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def table_rows(rows: Sequence[AttackRow]) -> list[dict[str, str]]:
    """The rows as the markdown table and the HTML page show them."""
    return [{"run": r.label + (" (PARTIAL)" if r.partial else ""), "attack": r.attack,
             "attacked": str(tail(r.attacked_model)) if r.attacked_model else "—", "model": str(tail(r.model)),
             "defense": r.defense or "none", "judge": f"{r.judge}/{r.part}", "n": str(r.n_prompts),
             "asr": _fmt(r.asr, r.asr_ci), "asr_k": f"{_fmt(r.asr_k, r.asr_k_ci)} (K={r.k})",
             "own": _fmt(r.attack_success_rate) + (f" ({r.judge_unparsed} judge replies read as 1)"
                                                     if r.judge_unparsed else ""),
             "per_success": "—" if r.budget_per_success is None else f"{r.budget_per_success:.1f} {r.budget_unit}"}
            for r in rows]


COLUMNS = [("run", "run"), ("attack", "attack"), ("attacked", "attacked model"), ("model", "evaluated model"),
           ("defense", "defense"), ("judge", "judge/part"), ("n", "prompts"), ("asr", "ASR = 1 − Safe@1 [CI]"),
           ("asr_k", "1 − Safe@K [CI]"), ("own", "attack's own success"), ("per_success", "budget per success")]


def render_markdown(rows: Sequence[AttackRow], curves: Sequence[dict[str, Any]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["# Attack report", "", "| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[k]) for k, _ in COLUMNS) + " |" for r in table_rows(rows)]
    lines += ["", "ASR is 1 − Safe@1 of the eval's judge, with Safe@1's confidence interval mirrored. Budget per "
              "success: target queries (PAIR) or steps (GCG) of all behaviours / expected eval successes."]
    if curves:
        lines += ["", "![success vs budget](success_vs_budget.png)", ""]
        for c in curves:
            lines.append(f"- {c['label']} ({c['axis']}): " + ", ".join(f"{x}: {y:.2f}" for x, y in c["points"]))
    return "\n".join(lines) + "\n"


def render_html(rows: Sequence[AttackRow], curves: Sequence[dict[str, Any]], png: bytes | None) -> str:
    """The page: the report's layout and stylesheet with this report's section partials (autoescaped)."""
    from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape

    from safereason.report.page import Section, data_uri

    env = Environment(loader=ChoiceLoader([PackageLoader("safereason.attacks", "templates"),
                                           PackageLoader("safereason.report", "templates")]),
                      autoescape=select_autoescape(default_for_string=True, default=True), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    sections = [Section("asr", "Attack success", "section_attack_asr.html.j2",
                        {"columns": COLUMNS, "rows": table_rows(rows)}),
                Section("budget", "Success vs budget", "section_attack_budget.html.j2",
                        {"src": data_uri(png) if png else None, "curves": list(curves)})]
    return env.get_template("layout.html.j2").render(title="Attack report", subtitle="", sections=sections)


def build_attack_report(run_dirs: Sequence[str | Path], out: str | Path, *, judge: str | None = None,
                        part: str | None = None, allow_partial: bool = False) -> list[AttackRow]:
    """Write ``attack_report.{md,json,html}`` and ``success_vs_budget.png`` into ``out``; returns the rows."""
    from safereason.rundir import atomic_write_text

    if not run_dirs:
        raise SafereasonError("give at least one eval run dir of an adversarial file")
    runs = [load_run(Path(p), allow_partial=allow_partial) for p in run_dirs]
    name = pick_judge(runs, judge)
    if name is None:
        raise SafereasonError("no safety judge has metrics in these runs; judge them with a safety judge first")
    rows = [attack_row(r, label, name, part) for r, label in zip(runs, run_labels(runs), strict=True)]
    curves = budget_curves(runs)
    png = budget_plot(curves) if curves else None
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SafereasonError(f"cannot create {out}: {e.strerror}") from None
    if png is not None:
        (out / "success_vs_budget.png").write_bytes(png)
    atomic_write_text(out / "attack_report.json", json.dumps({"rows": [asdict(r) for r in rows], "curves": curves},
                                                             indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "attack_report.md", render_markdown(rows, curves))
    atomic_write_text(out / "attack_report.html", render_html(rows, curves, png))
    return rows
