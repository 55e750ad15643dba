"""A self-contained HTML report (and a Markdown twin) comparing one or more run dirs.

The HTML embeds its plots as base64 PNGs and its CSS inline, so the single file can be mailed or
attached to an issue. Model outputs are adversarial text: everything taken from a run dir is
HTML-escaped, nothing is ever inserted raw. Run dirs are read as plain YAML/JSON rather than through
:class:`~safereason.config.EvalConfig`, so reports also work across versions whose configs gained or
lost keys (e.g. ``thinking``).
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safereason.errors import SafereasonError, suggest
from safereason.metrics import METRIC_NAMES
from safereason.reasoning.morethink import morethink_line
from safereason.report import plots
from safereason.report.summary import LABELS, fmt_metric, fmt_refusal
from safereason.rundir import atomic_write_text

#: config keys that never distinguish runs in a label (paths, hardware, judging setup)
_NOT_IN_LABEL = {"out", "data_dir", "device", "batch_size", "judge_batch_size", "judges", "judge_options", "parts",
                 "n_bootstrap", "confidence"}
#: the order differing keys appear in a run label; other keys follow alphabetically
_LABEL_ORDER = ("model", "benchmark", "thinking", "think_prefill", "enable_thinking", "prefill", "reasoning_format",
                "temperature", "top_p", "top_k", "k", "max_new_tokens", "seed")
_THINKING_KEYS = {"thinking", "think_prefill", "enable_thinking", "prefill", "reasoning_format", "think_budget",
                  "think_rounds", "less_think_text", "rethink_strings", "system_prompt", "morethink_budget"}
#: numeric keys a sweep plot is drawn for when runs differ in them
_SWEEP_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "think_budget")
_PART_ORDER = ("thinking", "answer", "full")


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


@dataclass
class Plot:
    """A rendered figure: a file-name stem for the Markdown folder, a caption, the PNG bytes."""

    name: str
    caption: str
    png: bytes


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


def _short(value: Any, limit: int = 24) -> str:
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


def _tail(value: Any) -> Any:
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
            items = [f"{k}={_short(_tail(r.config.get(k)) if k in ('model', 'benchmark') else r.config.get(k))}"
                     for k in diff[:max_keys]]
            labels.append(", ".join(items) + (", …" if len(diff) > max_keys else ""))
    if len(set(labels)) < len(labels):  # e.g. two runs of one config: tell them apart by directory
        labels = [f"{lab} ({r.path.name})" if labels.count(lab) > 1 else lab
                  for lab, r in zip(labels, runs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return labels


# -- metric access ---------------------------------------------------------------------------------------------


def _judge_order(runs: Sequence[Run]) -> list[str]:
    """Judges in config order (first run first), then any other judge found in metrics.json."""
    names = [j for r in runs for j in (r.config.get("judges") or []) if any(j in x.metrics for x in runs)]
    names += [j for r in runs for j in r.metrics]
    return list(dict.fromkeys(names))


def _has_safety(entry: dict[str, Any]) -> bool:
    kind = entry.get("kind")  # absent in metrics.json files written before refusal judges existed
    return "safety" in kind if kind else entry.get("safe@1") is not None


def pick_judge(runs: Sequence[Run], judge: str | None) -> str | None:
    """The judge whose verdicts drive plots and the sample browser: ``judge`` or the first with safety metrics."""
    order = _judge_order(runs)
    if judge is not None:
        if judge not in order:
            raise SafereasonError(f"judge {judge!r} has no metrics in these runs.{suggest(judge, order)} "
                                  f"Judges found: {', '.join(order) or 'none'}")
        if not any(_has_safety(e) for r in runs for e in r.metrics.get(judge, {}).values()):
            raise SafereasonError(f"judge {judge!r} gives no safety verdicts (only refusal); pick a safety judge")
        return judge
    return next((j for j in order if any(_has_safety(e) for r in runs for e in r.metrics.get(j, {}).values())),
                None)


def _parts(runs: Sequence[Run], judge: str) -> list[str]:
    present = {p for r in runs for p in r.metrics.get(judge, {})}
    return [p for p in _PART_ORDER if p in present] + sorted(present - set(_PART_ORDER))


def _point(entry: dict[str, Any] | None, metric: str) -> plots.Point | None:
    if not entry or entry.get(metric) is None:
        return None
    ci = (entry.get("ci") or {}).get(metric)
    return (float(entry[metric]), ci[0], ci[1]) if ci else (float(entry[metric]), None, None)


def _verdict(sample: dict[str, Any], judge: str, part: str) -> dict[str, Any] | None:
    return ((sample.get("judgments") or {}).get(judge) or {}).get(part)


# -- plots -----------------------------------------------------------------------------------------------------


def make_plots(runs: Sequence[Run], judge: str | None) -> list[Plot]:
    """Every figure that has something to show for these runs and this judge."""
    if judge is None:
        return []
    labels = [r.label for r in runs]
    parts = _parts(runs, judge)
    main_part = "full" if "full" in parts else parts[0]
    out: list[Plot] = []
    diff = differing_keys(runs)

    values = {m: [{p: _point(r.metrics.get(judge, {}).get(p), m) for p in parts} for r in runs]
              for m in METRIC_NAMES}
    by_thinking = len(runs) > 1 and bool(set(diff) & _THINKING_KEYS)
    title = ("Safety by thinking mode" if by_thinking else "Safety by run" if len(runs) > 1 else "Safety by part")
    out.append(Plot("safety_by_run", f"{title} ({judge}; bars: 95% bootstrap CI over prompts)",
                    plots.safety_by_run(labels, parts, values, f"{title} — judge {judge}")))

    for key in _SWEEP_KEYS:
        lines = _sweep_lines(runs, judge, parts, key, [k for k in diff if k != key])
        if lines:
            out.append(Plot(f"sweep_{key}", f"Safety vs. {key} ({judge}; bands: 95% CI)",
                            plots.safety_sweep(key, lines)))

    lengths = _length_data(runs, judge, main_part)
    if any(v for _, data in lengths for groups in data.values() for v in groups.values()):
        out.append(Plot("lengths", f"Length of safe vs. unsafe samples (verdict of {judge} on {main_part}, "
                                   "harmful prompts)",
                        plots.length_distributions(lengths, f"Response length by verdict ({judge} on {main_part})")))

    asr = _asr_lines(runs, main_part)
    if asr:
        out.append(Plot("asr_vs_m", f"Attack success rate (1 - Safe@1 on harmful prompts) vs. SafeThink's m "
                                    f"({main_part}; bands: 95% CI)", plots.asr_vs_m(asr, main_part)))

    cats = list(dict.fromkeys(c for r in runs for c in r.metrics.get(judge, {}).get(main_part, {})
                              .get("by_category", {})))
    if len(cats) > 1:
        cat_values = [{c: p for c in cats if (p := _point(r.metrics.get(judge, {}).get(main_part, {})
                                                          .get("by_category", {}).get(c), "safe@1"))}
                      for r in runs]
        out.append(Plot("categories", f"Safe@1 per category ({judge} on {main_part}; bars: 95% CI)",
                        plots.category_bars(labels, cats, cat_values, f"Safe@1 per category — {judge} on {main_part}")))
    return out


def safethink_m(run: Run) -> int | None:
    """SafeThink's m for a run: its max_steps, 0 for an undefended run, None for another defense."""
    defense = run.config.get("defense")
    if not defense:
        return 0
    if defense == "safethink":
        return int((run.config.get("defense_options") or {}).get("max_steps", 3))
    return None


def _asr_lines(runs: Sequence[Run], part: str) -> dict[str, list[tuple[int, plots.Point]]]:
    """Per safety judge, (m, Safe@1) of each run, when the runs span at least two values of m."""
    ms = [safethink_m(r) for r in runs]
    if len({m for m in ms if m is not None}) < 2:
        return {}
    lines: dict[str, list[tuple[int, plots.Point]]] = {}
    for judge in _judge_order(runs):
        pts = [(m, p) for r, m in zip(runs, ms, strict=True)
               if m is not None and (p := _point(r.metrics.get(judge, {}).get(part), "safe@1")) is not None]
        if len({m for m, _ in pts}) >= 2:
            lines[judge] = pts
    return lines


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


def _utility_html(runs: Sequence[Run]) -> str:
    rows = utility_rows(runs)
    if not rows:
        return ""
    cells = []
    for r in rows:
        ci = f" [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]" if r["ci"] else ""
        delta = "" if r["delta"] is None else f"{r['delta']:+.3f}"
        cells.append(f"<tr><td>{e(r['run'])}</td><td>{e(r['judge'])}</td><td>{e(r['part'])}</td>"
                     f"<td class=num>{r['accuracy']:.3f}{ci}</td><td class=num>{delta}</td>"
                     f"<td class=num>{r['n_prompts']}</td></tr>")
    body = "".join(cells)
    return ("<h2 id=\"utility\">Utility</h2><p class=\"note\">Accuracy@1 (mean over samples) by the "
            "utility judge named in each row (math-verify, code-exec, exact-match); delta is against the run "
            "without a defense.</p><table><thead><tr><th>run</th><th>judge</th>"
            f"<th>part</th><th>accuracy</th><th>delta</th><th>prompts</th></tr></thead><tbody>{body}</tbody></table>")


def _sweep_lines(runs: Sequence[Run], judge: str, parts: list[str], key: str,
                 others: list[str]) -> list[plots.SweepLine]:
    """Lines of runs that share every other differing key and take >= 2 values of ``key``."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if isinstance(r.config.get(key), int | float) and not isinstance(r.config.get(key), bool):
            group = ", ".join(f"{k}={_short(r.config.get(k))}" for k in others) or "all runs"
            groups[group].append(r)
    groups = {g: ms for g, ms in groups.items() if len({r.config[key] for r in ms}) >= 2}
    if len(groups) > 1:  # one line per group: only the main part, or the plot turns into spaghetti
        parts = ["full" if "full" in parts else parts[0]]
    lines = []
    for group, members in groups.items():
        members = sorted(members, key=lambda r: r.config[key])
        for part in parts:
            entries = [r.metrics.get(judge, {}).get(part) for r in members]
            pts = {m: [p for en in entries if (p := _point(en, m)) is not None] for m in METRIC_NAMES}
            if all(len(ps) == len(members) for ps in pts.values()):
                lines.append(plots.SweepLine(group, part, [float(r.config[key]) for r in members], pts))
    return lines


def _length_data(runs: Sequence[Run], judge: str,
                 part: str) -> list[tuple[str, dict[str, dict[str, list[int]]]]]:
    """Per run: {field: {"safe": tokens, "unsafe": tokens}} by the judge's verdict, harmful prompts only."""
    out = []
    fields = {"response tokens": "n_response_tokens", "thinking tokens": "n_thinking_tokens"}
    for r in runs:
        data: dict[str, dict[str, list[int]]] = {}
        for name, key in fields.items():
            groups: dict[str, list[int]] = {"safe": [], "unsafe": []}
            for s in r.samples:
                v = _verdict(s, judge, part)
                if s.get("label") == "benign" or not v or v.get("unsafe") is None or s.get(key) is None:
                    continue
                groups["unsafe" if v["unsafe"] else "safe"].append(int(s[key]))
            if groups["safe"] or groups["unsafe"]:
                data[name] = groups
        out.append((r.label, data))
    return out


# -- worst samples ---------------------------------------------------------------------------------------------


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


# -- HTML ------------------------------------------------------------------------------------------------------


def e(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d8dee4; --bg2:#f6f8fa; --accent:#2a7ab8;
  --unsafe:#c8423b; --safe:#2f8a4f; --warn:#9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg); margin: 0;
  background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 8px; }
.sub, .note { color: var(--muted); }
.note { font-size: 13px; margin: 4px 0 10px; }
nav { margin: 10px 0 0; font-size: 13px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: var(--bg2); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { color: var(--muted); font-size: 12px; }
tr.diff th, tr.diff td { background: #fff8e5 !important; }
.runtab td { max-width: 340px; overflow-wrap: anywhere; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg2);
  padding: 1px 4px; border-radius: 4px; }
.scroll { overflow-x: auto; }
figure { margin: 16px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; padding: 6px;
  background: #fff; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
details.sample { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; background: #fff; }
details.sample > summary { cursor: pointer; padding: 7px 10px; list-style-position: inside; display: list-item;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
details.sample[open] > summary { border-bottom: 1px solid var(--line); background: var(--bg2); white-space: normal; }
details.sample .body { padding: 8px 12px 12px; }
.pid { font-weight: 600; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
.badge { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 11.5px; font-weight: 600;
  line-height: 18px; margin-right: 3px; white-space: nowrap; }
.b-unsafe { background: #fbe4e2; color: var(--unsafe); }
.b-safe { background: #e2f3e8; color: var(--safe); }
.b-refused { background: #e3eefa; color: var(--accent); }
.b-error { background: #eee; color: #555; }
.b-meta { background: var(--bg2); color: var(--muted); font-weight: 500; }
.label { color: var(--muted); font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .03em;
  margin: 12px 0 3px; }
pre.text { white-space: pre-wrap; overflow-wrap: anywhere; font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo,
  Consolas, monospace; background: var(--bg2); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
  margin: 0; max-height: 340px; overflow-y: auto; }
pre.thinking { border-left: 3px solid #7b61c4; }
pre.answer { border-left: 3px solid #e08a1e; }
.empty { color: var(--muted); font-style: italic; }
.verdicts { margin-top: 4px; }
.verdicts td, .verdicts th { padding: 3px 8px; }
"""


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
    for judge in _judge_order(runs):
        entries = [(i, r, p, r.metrics[judge][p]) for i, r in enumerate(runs) for p in _parts(runs, judge)
                   if p in r.metrics.get(judge, {})]
        k = max((en.get("k", 0) for *_, en in entries), default=0)
        safety = any(_has_safety(en) for *_, en in entries)
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


def _metrics_tables_html(runs: Sequence[Run], primary: str | None) -> str:
    chunks = []
    for t in metrics_tables(runs):
        body = []
        for row in t.rows:
            cells = []
            for col, (text, key) in enumerate(row):
                if col < 2:
                    cells.append(f"<td>{e(text)}</td>")
                    continue
                value, sep, ci = text.partition(" ")
                inner = e(value) + (f' <span class="ci">{e(ci)}</span>' if sep else "")
                attrs = (f' data-run="{key[0]}" data-judge="{e(t.judge)}" data-part="{e(key[1])}" '
                         f'data-metric="{e(key[2])}"' if key else "")
                cells.append(f'<td class="num"{attrs}>{inner}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        tag = " (primary: drives plots and samples)" if t.judge == primary else ""
        chunks.append(f"<h3>judge <code>{e(t.judge)}</code>{e(tag)}</h3><div class=\"scroll\"><table>"
                      f"<thead><tr>{''.join(f'<th>{e(h)}</th>' for h in t.head)}</tr></thead>"
                      f"<tbody>{''.join(body)}</tbody></table></div>")
    return "".join(chunks) or '<p class="empty">metrics.json holds no judge.</p>'


def header_rows(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """(field, one value per run) for the run table; plain text, escaped by the writer."""
    def cfg(key: str) -> list[Any]:
        return [r.config.get(key) for r in runs]

    def fmt(key: str, limit: int = 60) -> list[str]:
        return [_short(v, limit) for v in cfg(key)]

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


def _header_html(runs: Sequence[Run]) -> str:
    head = "".join(f"<th>{e(r.label)}</th>" for r in runs)
    rows = []
    for name, values in header_rows(runs):
        cls = ' class="diff"' if len(runs) > 1 and len(set(values)) > 1 and name != "directory" else ""
        rows.append(f"<tr{cls}><th>{e(name)}</th>" + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>")
    note = ('<p class="note">Highlighted rows differ between runs.</p>' if len(runs) > 1 else "")
    return (f'<div class="scroll"><table class="runtab"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{note}")


def _badge(v: dict[str, Any] | None) -> str:
    if not v:
        return '<span class="badge b-meta">—</span>'
    if v.get("error"):
        return f'<span class="badge b-error" title="{e(v["error"])}">error</span>'
    out = []
    if v.get("unsafe") is not None:
        score = f" {v['score']:.2f}" if v.get("score") is not None else ""
        out.append(f'<span class="badge b-{"unsafe" if v["unsafe"] else "safe"}">'
                   f'{"unsafe" if v["unsafe"] else "safe"}{e(score)}</span>')
    if v.get("refused") is not None:
        out.append(f'<span class="badge b-refused">{"refused" if v["refused"] else "complied"}</span>')
    if v.get("label"):
        out.append(f'<span class="badge b-meta">{e(v["label"])}</span>')
    if v.get("flags"):
        out.append(f'<span class="badge b-meta">{e(", ".join(v["flags"]))}</span>')
    return "".join(out)


def _text_block(title: str, text: str | None, cls: str, empty: str) -> str:
    body = (f'<pre class="text {cls}">{e(text)}</pre>' if text and text.strip()
            else f'<p class="empty">{e(empty)}</p>')
    return f'<div class="label">{e(title)}</div>{body}'


def _sample_html(s: dict[str, Any], judge: str) -> str:
    judgments = s.get("judgments") or {}
    parts = [p for p in _PART_ORDER if any(p in (j or {}) for j in judgments.values())]
    unsafe_parts = [p for p, v in (judgments.get(judge) or {}).items() if v and v.get("unsafe")]
    scores = [v["score"] for v in (judgments.get(judge) or {}).values()
              if v and v.get("unsafe") and v.get("score") is not None]
    prompt = " ".join(str(s.get("prompt", "")).split())
    summary = (f'<span class="pid">{e(s.get("prompt_id"))} #{e(s.get("sample_index"))}</span> '
               + "".join(f'<span class="badge b-unsafe">{e(p)}</span>' for p in unsafe_parts)
               + (f'<span class="badge b-meta">score {max(scores):.2f}</span>' if scores else "")
               + f'<span class="badge b-meta">{e(s.get("category") or "no category")}</span> '
               + e(prompt[:160] + ("…" if len(prompt) > 160 else "")))
    vrows = "".join(f"<tr><th>{e(j)}</th>" + "".join(f"<td>{_badge((judgments.get(j) or {}).get(p))}</td>"
                                                     for p in parts) + "</tr>" for j in judgments)
    verdicts = (f'<table class="verdicts"><thead><tr><th>judge</th>{"".join(f"<th>{e(p)}</th>" for p in parts)}'
                f"</tr></thead><tbody>{vrows}</tbody></table>")
    status = s.get("split_status")
    meta = [f"label: {s.get('label') or 'none'}", f"split: {status}", f"finish: {s.get('finish_reason')}",
            f"tokens: {s.get('n_response_tokens')} (thinking {s.get('n_thinking_tokens')}, "
            f"answer {s.get('n_answer_tokens')})"]
    if s.get("control"):
        meta.append("control: " + json.dumps(s["control"], ensure_ascii=False))
    no_thinking = "no thinking (split status: no_thinking)" if status == "no_thinking" else "empty"
    no_answer = "no answer: the thought was never closed" if status == "unclosed" else "empty"
    return (
        f'<details class="sample"><summary>{summary}</summary><div class="body">'
        + "".join(f'<span class="badge b-meta">{e(m)}</span>' for m in meta)
        + f'<div class="label">verdicts</div>{verdicts}'
        + _text_block("prompt", s.get("prompt"), "prompt", "empty")
        + _text_block("thinking", s.get("thinking"), "thinking", no_thinking)
        + _text_block("answer", s.get("answer"), "answer", no_answer)
        + '<details><summary class="note">exact model input (chat template and prefills)</summary>'
        + _text_block("prompt text", s.get("prompt_text"), "", "not recorded") + "</details>"
        + "</div></details>"
    )


def _samples_html(runs: Sequence[Run], judge: str | None, max_samples: int) -> str:
    if judge is None:
        return '<p class="empty">No judge with safety verdicts in these runs.</p>'
    chunks = []
    for r in runs:
        shown, total = worst_samples(r, judge, max_samples)
        chunks.append(f"<h3>{e(r.label)}</h3><p class=\"note\">{len(shown)} of {total} samples of non-benign "
                      f"prompts judged unsafe by <code>{e(judge)}</code> in some part (of {len(r.samples)} "
                      "samples), highest score first. Click to expand.</p>")
        chunks.extend(_sample_html(s, judge) for s in shown)
    return "".join(chunks)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(runs: Sequence[Run], judge: str | None, figures: Sequence[Plot], max_samples: int) -> str:
    title = (f"safereason report: {runs[0].config.get('model')} on {runs[0].config.get('benchmark')}"
             if len(runs) == 1 else f"safereason report: {len(runs)} runs")
    conf = runs[0].config.get("confidence", 0.95)
    figs = "".join(f'<figure><img alt="{e(p.caption)}" src="{_data_uri(p.png)}"><figcaption>{e(p.caption)}'
                   "</figcaption></figure>" for p in figures) or '<p class="empty">Nothing to plot.</p>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{e(title)}</h1>
<div class="sub">{len(runs)} run{"s" if len(runs) != 1 else ""}; primary judge
<code>{e(judge or "none")}</code></div>
<nav><a href="#runs">Runs</a><a href="#metrics">Metrics</a><a href="#plots">Plots</a>
<a href="#samples">Worst samples</a></nav>
<h2 id="runs">Runs</h2>{_header_html(runs)}
<h2 id="metrics">Metrics</h2>
<p class="note">Safety metrics over non-benign prompts with {conf:.0%} bootstrap CIs over prompts (from each run's
<code>metrics.json</code>). ConsSafe@K counts a tie as safe; refused (benign) is the over-refusal rate.</p>
{_metrics_tables_html(runs, judge)}
{_utility_html(runs)}
<h2 id="plots">Plots</h2>{figs}
<h2 id="samples">Worst samples</h2>{_samples_html(runs, judge, max_samples)}
</main></body></html>
"""


# -- Markdown --------------------------------------------------------------------------------------------------


def _md(text: Any) -> str:
    """A Markdown table cell: one line, no pipes, HTML metacharacters escaped."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def render_markdown(runs: Sequence[Run], judge: str | None, figures: Sequence[Plot], plot_dir: str,
                    max_samples: int) -> str:
    lines = [f"# safereason report: {len(runs)} run{'s' if len(runs) != 1 else ''}", "",
             f"Primary judge: `{judge or 'none'}`. Safety metrics over non-benign prompts, 95% bootstrap CIs "
             "over prompts; ConsSafe@K counts a tie as safe.", "", "## Runs", "",
             "| | " + " | ".join(_md(r.label) for r in runs) + " |", "|---|" + "---|" * len(runs)]
    lines += [f"| {_md(name)} | " + " | ".join(_md(v) for v in values) + " |" for name, values in header_rows(runs)]
    lines += ["", "## Metrics"]
    for t in metrics_tables(runs):
        lines += ["", f"### {t.judge}" + (" (primary)" if t.judge == judge else ""), "",
                  "| " + " | ".join(t.head) + " |", "|" + "---|" * len(t.head)]
        lines += ["| " + " | ".join(_md(text) for text, _ in row) + " |" for row in t.rows]
    lines += ["", "## Plots", ""]
    lines += [f"![{_md(p.caption)}]({plot_dir}/{p.name}.png)\n\n*{_md(p.caption)}*\n" for p in figures]
    if judge is not None:
        lines += [f"## Worst samples (judge `{judge}`)", "", "Full texts are in the HTML report.", ""]
        for r in runs:
            shown, total = worst_samples(r, judge, max_samples)
            lines += [f"### {_md(r.label)}", "", f"{len(shown)} of {total} unsafe samples of non-benign prompts.", ""]
            if shown:
                lines += ["| prompt id | sample | category | unsafe parts | score | prompt |", "|---" * 6 + "|"]
            for s in shown:
                verdicts = (s.get("judgments") or {}).get(judge) or {}
                unsafe = [p for p, v in verdicts.items() if v and v.get("unsafe")]
                scores = [v["score"] for v in verdicts.values() if v and v.get("unsafe") and v.get("score") is not None]
                prompt = str(s.get("prompt", ""))
                lines.append(f"| {_md(s.get('prompt_id'))} | {_md(s.get('sample_index'))} | "
                             f"{_md(s.get('category') or '')} | {', '.join(unsafe)} | "
                             f"{f'{max(scores):.2f}' if scores else ''} | "
                             f"{_md(prompt[:100] + ('…' if len(prompt) > 100 else ''))} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- entry point -----------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_report(run_dirs: list[Path], out: Path, *, judge: str | None = None, max_samples: int = 20,
                 allow_partial: bool = False) -> Path:
    """Write ``out`` (self-contained HTML), ``out``'s stem ``.md`` and its ``<stem>_plots/`` PNGs; return ``out``."""
    out = Path(out)
    if not run_dirs:
        raise SafereasonError("give at least one run dir")
    if out.suffix.lower() not in (".html", ".htm"):
        raise SafereasonError(f"--out {out} must end in .html (a Markdown copy is written next to it as .md)")
    if max_samples < 0:
        raise SafereasonError(f"--max-samples must be >= 0, got {max_samples}")
    runs = [load_run(Path(d), allow_partial=allow_partial) for d in run_dirs]
    for r, label in zip(runs, run_labels(runs), strict=True):
        r.label = f"{label} [PARTIAL]" if r.partial else label
    primary = pick_judge(runs, judge)
    figures = make_plots(runs, primary)

    md_path = out.with_suffix(".md")
    plot_dir = out.parent / f"{out.stem}_plots"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_dir.mkdir(exist_ok=True)
        names = {f"{p.name}.png" for p in figures}
        for old in plot_dir.glob("*.png"):  # figures of an earlier report that this one does not have
            if old.name not in names:
                old.unlink()
        for p in figures:
            _atomic_write_bytes(plot_dir / f"{p.name}.png", p.png)
        atomic_write_text(md_path, render_markdown(runs, primary, figures, plot_dir.name, max_samples))
        atomic_write_text(out, render_html(runs, primary, figures, max_samples))
    except OSError as err:
        raise SafereasonError(f"cannot write report {out}: {err.strerror or err}") from None
    return out
