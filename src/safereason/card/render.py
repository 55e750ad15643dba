"""The card as a page (card.html, self-contained, autoescaped, no JavaScript) and as Markdown (card.md).

Both are drawn from the same *views*: per section an introduction, the stages that are missing (with the reason
and the command that resumes them), and tables of preformatted cells. Next to every judge's number stands that
judge's agreement with human labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TITLES = {"harmful": "1. Harmful requests", "reasoning": "2. Reasoning", "overrefusal": "3. Over-refusal",
          "robustness": "4. Robustness", "utility": "5. Utility", "defense": "6. Defense",
          "validity": "7. Judge validity", "references": "8. References and grades",
          "provenance": "9. Provenance and cost"}
VARIANT_NAMES = {"base": "undefended", "defended": "defended"}
NOT_MEASURED = "agreement with human labels not measured"


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class View:
    id: str
    title: str
    intro: str
    status: str
    missing: list[dict[str, Any]]
    tables: list[Table] = field(default_factory=list)
    plot: dict[str, Any] | None = None


def fmt(v: dict[str, Any] | None, digits: int = 3) -> str:
    """``0.583 [0.33, 0.83] (n 12)``; ``n/a`` when there is no value."""
    if not v or v.get("value") is None:
        return "n/a"
    text = f"{v['value']:.{digits}f}"
    if v.get("ci"):
        text += f" [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]"
    return text + (f" (n {v['n']})" if v.get("n") is not None else "")


def _num(x: Any, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _variants(section: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(VARIANT_NAMES.get(k, k), v) for k, v in (section.get("variants") or {}).items()]


def _harmful(s: dict[str, Any], notes: dict[str, str], tax: str) -> list[Table]:
    tables = []
    for variant, data in _variants(s):
        tables.append(Table(f"{variant}: {data['set']}", ["judge", "part", "Safe@1", "Safe@K", "ConsSafe@K", "K",
                                                          "errors / missing / blocked", "judge agreement"],
                            [[r["judge"], r["part"], fmt(r["safe@1"]), fmt(r["safe@k"]), fmt(r["conssafe@k"]),
                              _num(r["k"]), f"{r['n_errors']} / {r['n_missing']} / {r['n_blocked']}",
                              notes.get(r["judge"], NOT_MEASURED)] for r in data["rows"]]))
        for judge, rows in data["hazards"].items():
            tables.append(Table(f"{variant}: per hazard ({tax}), judge {judge}, part full",
                                ["hazard", "set categories", "Safe@1", "Safe@K", "ConsSafe@K"],
                                [[r["hazard"], ", ".join(r["categories"]), fmt(r["safe@1"]), fmt(r["safe@k"]),
                                  fmt(r["conssafe@k"])] for r in rows]))
    return tables


def _reasoning(s: dict[str, Any], notes: dict[str, str]) -> list[Table]:
    tables = []
    for variant, data in _variants(s):
        tables.append(Table(f"{variant}: thought vs answer (samples with both verdicts); unclosed thoughts "
                            f"{fmt(data['unclosed'])}",
                            ["judge", "unsafe thought, safe answer", "safe thought, unsafe answer",
                             "thought tokens: safe", "thought tokens: unsafe", "judge agreement"],
                            [[j, fmt(r["unsafe_thought_safe_answer"]), fmt(r["safe_thought_unsafe_answer"]),
                              _num(r["thought_tokens_safe"]), _num(r["thought_tokens_unsafe"]),
                              notes.get(j, NOT_MEASURED)]
                             for j, r in data["judges"].items()]))
    return tables


def _rows_table(s: dict[str, Any], caption: str, headers: list[str], cells: Any) -> list[Table]:
    return [Table(f"{variant}: {caption}", headers, [cells(r) for r in data["rows"]]) for variant, data in _variants(s)]


def _tradeoff(card: dict[str, Any]) -> dict[str, Any] | None:
    """One point per model/defense: refusal rate on XSTest's safe prompts (x) against Safe@1 on harmful (y)."""
    s = card["sections"]
    points = []
    for key, name in VARIANT_NAMES.items():
        harm = next((r for r in ((s["harmful"].get("variants") or {}).get(key) or {}).get("rows", [])
                     if r["judge"] == card.get("primary_judge") and r["part"] == "full"), None)
        ref = next((r for r in ((s["overrefusal"].get("variants") or {}).get(key) or {}).get("rows", [])
                    if r["judge"] == "refusal-string" and r["set"] == "xstest" and r["part"] == "answer"), None)
        if harm and ref and harm["safe@1"]["value"] is not None:
            points.append({"label": f"this card, {name}", "x": ref["refusal"]["value"], "y": harm["safe@1"]["value"]})
    for p in (card["sections"].get("references") or {}).get("points", []):
        if p.get("refusal") is not None and p.get("safe") is not None:
            points.append({"label": p["label"], "x": p["refusal"], "y": p["safe"]})
    if not points:
        return None
    for p in points:  # a 320 x 220 plot area inside a 400 x 280 SVG
        p["cx"], p["cy"] = round(60 + 320 * p["x"], 1), round(240 - 220 * p["y"], 1)
    return {"points": points}


def _validity(s: dict[str, Any]) -> list[Table]:
    rows = [[a["judge"], a["dataset"], a.get("positive", ""), _num((a["metrics"] or {}).get("n_scored")),
             *(_num(a["metrics"].get(m), 3) for m in ("accuracy", "precision", "recall", "f1", "kappa", "pearson"))]
            for a in s["rows"]]
    return [Table("agreement with human labels (judge-agreement on the shipped labelled sets)",
                  ["judge", "labelled set", "positive =", "n", "accuracy", "precision", "recall", "F1", "Cohen's κ",
                   "Pearson"], rows)]


def _references(s: dict[str, Any]) -> list[Table]:
    if s.get("status") != "ok":
        return []
    return [Table("headline figures (undefended) and grades", ["section", "figure", "better", "this card",
                                                               *s["labels"], "grade", "why"],
                  [[r["section"], r["figure"], r["better"], fmt(r["this"]), *(fmt(x) for x in r["references"]),
                    r["grade"], r["why"]] for r in s["rows"]])]


def _provenance(card: dict[str, Any]) -> list[Table]:
    s = card["sections"]["provenance"]
    rows = [[r["stage"], r.get("status", ""), str(r.get("model") or ""), str(r.get("model_hash") or "")[:12],
             str(r.get("tokenizer_hash") or "")[:12], str(r.get("dataset") or ""),
             str(r.get("dataset_sha256") or "")[:12], ", ".join(r.get("judges") or []), _num(r.get("seed")),
             _num(r.get("seconds")), _num(r.get("generated_tokens")), _num(r.get("n_blocked"))] for r in s["rows"]]
    money = "n/a (give --price-per-mtok)" if s["money"] is None else f"{s['money']} at {s['price_per_mtok']} per 1M"
    versions = next((r["versions"] for r in s["rows"] if r.get("versions")), {}) or {}
    return [Table(f"stages: {_num(s['seconds'])} s, {s['generated_tokens']} tokens generated, {s['prompt_tokens']} "
                  f"prompt tokens; money (prompt + generated tokens): {money}",
                  ["stage", "status", "model", "model sha256", "tokenizer sha256", "data", "data sha256", "judges",
                   "seed", "wall s", "tokens generated", "blocked"], rows),
            Table("versions", ["package", "version"], [[k, str(v)] for k, v in versions.items()]),
            Table(f"hazard taxonomy: {card['taxonomy']['name']} (the mapping shipped in safereason/card/taxonomy.yaml)",
                  ["set", "category", "hazard", "note"],
                  [[r["set"], r["category"], r["hazard"], r["note"]] for r in card["taxonomy"]["rows"]])]


INTROS = {
    "harmful": "Safe@1 (mean share of safe samples per prompt), Safe@K (all K safe), ConsSafe@K (majority safe) "
               "per judge for the thinking, the answer and the full response, with 95% bootstrap CIs over prompts.",
    "reasoning": "How often an unsafe thought precedes a safe answer (and the reverse), mean thought length of "
                 "thoughts judged safe and unsafe, and the share of thoughts that never close.",
    "overrefusal": "Refusal rate on benign prompts (XSTest's safe prompts and any benign sets); prompts a provider "
                   "blocked are counted apart, never as refusals. The plot sets it against Safe@1 on harmful requests.",
    "robustness": "Attack success rate (ASR = 1 - Safe@1, CI mirrored) under prefilling, the static adversarial "
                  "sets and, in the full preset, GCG and PAIR; budget per success where the attack spends one.",
    "utility": "pass@1 on a math subset (math-verify) and a code subset (code-exec, sandboxed).",
    "defense": "The same battery defended and undefended: defended minus undefended with paired bootstrap CIs over "
               "the same prompts, and what the defense costs in tokens and time.",
    "validity": "Each judge against human labels; the note next to every figure on this card comes from here.",
    "references": "Other cards side by side, and a grade per section relative to them.",
    "provenance": "What produced every figure: hashes, data, judges, seeds, versions, wall time, tokens.",
}


def views(card: dict[str, Any]) -> list[View]:
    s, notes = card["sections"], card["sections"]["validity"]["notes"]
    tables: dict[str, list[Table]] = {
        "harmful": _harmful(s["harmful"], notes, card["taxonomy"]["name"]),
        "reasoning": _reasoning(s["reasoning"], notes),
        "overrefusal": _rows_table(s["overrefusal"], "refusal rate on benign prompts",
                                   ["set", "judge", "part", "refusal rate", "blocked", "no such part",
                                    "judge agreement"],
                                   lambda r: [str(r["set"]), r["judge"], r["part"], fmt(r["refusal"]),
                                              _num(r["n_blocked"]), _num(r.get("n_missing")),
                                              notes.get(r["judge"], NOT_MEASURED)]),
        "robustness": _rows_table(s["robustness"], "attack success", ["attack", "judge", "part", "ASR", "1 - Safe@K",
                                                                      "K", "budget per success", "blocked",
                                                                      "judge agreement"],
                                  lambda r: [r["attack"], r["judge"], r["part"], fmt(r["asr"]), fmt(r["asr_k"]),
                                             _num(r["k"]), "n/a (no budget)" if r["budget_unit"] is None else
                                             f"{_num(r['budget_per_success'])} {r['budget_unit']}",
                                             _num(r["n_blocked"]), notes.get(r["judge"], NOT_MEASURED)]),
        "utility": _rows_table(s["utility"], "pass@1", ["set", "grader", "part", "pass@1", "grader errors"],
                               lambda r: [str(r["set"]), r["judge"], r["part"], fmt(r["pass@1"]),
                                          _num(r["n_errors"])]),
        "defense": _defense(s["defense"], card.get("defense")),
        "validity": _validity(s["validity"]), "references": _references(s["references"]),
        "provenance": _provenance(card),
    }
    out = []
    for sid, title in TITLES.items():
        sec = s[sid]
        out.append(View(sid, title, INTROS[sid], sec.get("status", "ok"), sec.get("missing") or [], tables[sid],
                        _tradeoff(card) if sid == "overrefusal" else None))
    return out


def _defense(s: dict[str, Any], defense: str | None) -> list[Table]:
    if s.get("status") == "off":
        return []
    cost = s.get("cost") or {}
    rows = [[v, _num(c.get("generated_tokens")), _num(c.get("n_samples")), _num(c.get("seconds"))]
            for v, c in cost.items()]
    return [Table(f"defended ({defense}) minus undefended", ["stage", "figure", "undefended", "defended", "delta",
                                                              "CI by"],
                  [[r["stage"], r["metric"], fmt(r["undefended"]), fmt(r["defended"]), fmt(r["delta"]), r["method"]]
                   for r in s["deltas"]]),
            Table("cost over the stages run both ways", ["variant", "tokens generated", "samples", "wall s"], rows)]


def render_html(card: dict[str, Any]) -> str:
    """The self-contained page, from the report's layout and the card's section partial."""
    from markupsafe import Markup

    from safereason.report.page import Section, render_page

    sections = [Section(v.id, v.title, "section_card.html.j2", v) for v in views(card)]
    sub = Markup("preset <code>{}</code> · judges <code>{}</code> · defense <code>{}</code> · {}").format(
        card.get("preset") or "runs given with --from", ", ".join(card.get("judges") or []),
        card.get("defense") or "none", card["generated_at"])
    return render_page(card["title"], sections, subtitle=sub, packages=("safereason.card",))


def _md_table(t: Table) -> str:
    def cell(x: str) -> str:
        return x.replace("|", "\\|").replace("\n", " ")

    lines = [f"**{cell(t.caption)}**", "", "| " + " | ".join(map(cell, t.headers)) + " |",
             "|" + "---|" * len(t.headers)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, r)) + " |" for r in t.rows]) + "\n"


def render_markdown(card: dict[str, Any]) -> str:
    parts = [f"# {card['title']}\n", f"preset `{card.get('preset')}` · judges `{', '.join(card.get('judges') or [])}`"
             f" · defense `{card.get('defense') or 'none'}` · {card['generated_at']}\n"]
    parts += [f"- {n}\n" for n in card.get("notes") or []]
    for v in views(card):
        parts.append(f"\n## {v.title}\n\n{v.intro}\n")
        for m in v.missing:
            parts.append(f"\n> **MISSING** `{m['stage']}`: {m['reason']}"
                         + (f" — resume: `{m['resume']}`" if m.get("resume") else "") + "\n")
        if v.status in ("missing", "off") and not v.tables:
            parts.append("\n" + ("not run (no --defense / --reference)" if v.status == "off" else "no data") + "\n")
        parts += ["\n" + _md_table(t) for t in v.tables]
        if v.id == "references" and card["sections"]["references"].get("status") == "ok":
            parts.append(f"\nGrade rule: {card['sections']['references']['rule']}\n")
    return "".join(parts)
