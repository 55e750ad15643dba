"""Assemble the card: read every stage's run dir, build the sections, write card.json / card.md / card.html."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safereason.card import aggregate as agg
from safereason.card.aggregate import StageRun
from safereason.errors import SafereasonError

SECTION_IDS = ("harmful", "reasoning", "overrefusal", "robustness", "utility", "defense", "validity", "references",
               "provenance")


def load_runs(stage_runs: Sequence[StageRun]) -> None:
    """Read each finished stage's run dir; one that cannot be read is marked failed with the reason."""
    from safereason.report.runs import load_run

    for st in stage_runs:
        if st.status != "done":
            continue
        try:
            st.run = load_run(st.path)
        except SafereasonError as e:
            st.status, st.error = "failed", str(e).splitlines()[0]


def _per_variant(stage_runs: Sequence[StageRun], section: str, build: Callable[[StageRun], Any],
                 stage: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``{variant: build(stage)}`` over the finished stages of ``section``, and what failed building."""
    out: dict[str, Any] = {}
    failed = []
    for st in stage_runs:
        if st.section != section or st.run is None or (stage is not None and st.stage != stage):
            continue
        try:
            out[st.variant or "base"] = build(st)
        except Exception as e:
            from safereason.card.stages import describe_error

            failed.append({"stage": st.name, "reason": f"cannot summarise: {describe_error(e)}"})
    return out, failed


def _rows_per_variant(stage_runs: Sequence[StageRun], section: str,
                      rows: Callable[[StageRun], list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for st in stage_runs:
        if st.section == section and st.run is not None:
            out.setdefault(st.variant or "base", {"rows": []})["rows"] += rows(st)
    return out


def _missing(stage_runs: Sequence[StageRun], sections: Sequence[str], resume: str | None) -> list[dict[str, Any]]:
    return [{"stage": st.name, "reason": st.error or st.status, "resume": resume} for st in stage_runs
            if st.section in sections and st.status != "done"]


def _section(variants: dict[str, Any], missing: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"status": "ok" if variants else "missing", "variants": variants, "missing": missing, **extra}


def build_sections(stage_runs: Sequence[StageRun], *, seed: int, n_bootstrap: int,
                   resume: str | None) -> dict[str, Any]:
    """Sections 1-6 from the stage runs (validity, references and provenance are added by :func:`build_card`)."""
    sections: dict[str, Any] = {}
    harmful, bad = _per_variant(stage_runs, "harmful", lambda st: agg.harmful_section(st, n_bootstrap, seed))
    sections["harmful"] = _section(harmful, _missing(stage_runs, ["harmful"], resume) + bad)
    reasoning, bad = _per_variant(stage_runs, "harmful", agg.reasoning_section)
    sections["reasoning"] = _section(reasoning, _missing(stage_runs, ["harmful"], resume) + bad)
    over = _rows_per_variant(stage_runs, "overrefusal", agg.refusal_rows)
    sections["overrefusal"] = _section(over, _missing(stage_runs, ["overrefusal"], resume))
    rob = _rows_per_variant(stage_runs, "robustness", lambda st: [
        r for j in agg.safety_judges(st.run) if (r := agg.robustness_row(st, j)) is not None])  # type: ignore[arg-type]
    sections["robustness"] = _section(rob, _missing(stage_runs, ["robustness"], resume))
    util = _rows_per_variant(stage_runs, "utility", lambda st: [r for r in [agg.utility_row(st)] if r])
    sections["utility"] = _section(util, _missing(stage_runs, ["utility"], resume))
    sections["defense"] = defense_section(stage_runs, seed=seed, n_bootstrap=n_bootstrap)
    return sections


def defense_section(stage_runs: Sequence[StageRun], *, seed: int, n_bootstrap: int) -> dict[str, Any]:
    """Defended against undefended, stage by stage (paired deltas), and what the defense costs."""
    base = {st.stage: st for st in stage_runs if st.variant == "base" and st.run is not None}
    defended = {st.stage: st for st in stage_runs if st.variant == "defended" and st.run is not None}
    if not any(st.variant == "defended" for st in stage_runs):
        return {"status": "off", "variants": {}, "missing": [], "deltas": [], "cost": {}}
    deltas = []
    missing = []
    for name, st in defended.items():
        if name in base:
            try:
                deltas += agg.defense_deltas(base[name], st, seed, n_bootstrap)
            except SafereasonError as e:
                missing.append({"stage": st.name, "reason": str(e).splitlines()[0], "resume": None})
    cost = {}
    for variant, runs in (("undefended", base), ("defended", defended)):
        shared = [agg.run_cost(st) for n, st in runs.items() if n in base and n in defended]
        cost[variant] = {"generated_tokens": sum(c["generated_tokens"] for c in shared),
                         "n_samples": sum(c["n_samples"] for c in shared),
                         "seconds": sum(c["seconds"] or 0.0 for c in shared) if all(c["seconds"] is not None
                                                                                  for c in shared) else None}
    return {"status": "ok" if deltas else "missing", "variants": {}, "deltas": deltas, "cost": cost,
            "missing": missing}


def validity_section(agreement: Sequence[dict[str, Any]], judges: Sequence[str],
                     missing: list[dict[str, Any]]) -> dict[str, Any]:
    """Each judge's agreement with human labels, and the one-line note shown next to its numbers."""
    notes: dict[str, str] = {}
    for a in agreement:
        m = a["metrics"]
        kappa = "n/a" if m.get("kappa") is None else f"{m['kappa']:.2f}"
        acc = "n/a" if m.get("accuracy") is None else f"{m['accuracy']:.2f}"
        note = f"κ {kappa}, acc {acc} on {a['dataset']} (n {m.get('n_scored')})"
        notes[a["judge"]] = "; ".join(x for x in (notes.get(a["judge"]), note) if x)
    for j in judges:
        notes.setdefault(j, "agreement with human labels not measured")
    return {"status": "ok" if agreement else "missing", "rows": list(agreement), "notes": notes, "missing": missing}


def provenance_section(stage_runs: Sequence[StageRun], price_per_mtok: float | None) -> dict[str, Any]:
    """Per stage: model and tokenizer hashes, data hash, judges, seed, versions, wall time, tokens; money."""
    rows = []
    for st in stage_runs:
        if st.run is None:
            rows.append({"stage": st.name, "status": st.status, "seconds": st.seconds})
            continue
        man, cfg = st.run.manifest, st.run.config
        model = man.get("model") or {}
        cost = agg.run_cost(st)
        rows.append({"stage": st.name, "status": "done", "run_dir": str(st.path), "model": cfg.get("model"),
                     "model_hash": model.get("model_hash"), "tokenizer_hash": model.get("tokenizer_hash"),
                     "dataset": (man.get("dataset") or {}).get("name"),
                     "dataset_sha256": (man.get("dataset") or {}).get("sha256"), "judges": cfg.get("judges"),
                     "seed": man.get("seed"), "defense": cfg.get("defense"), "k": cfg.get("k"),
                     "versions": man.get("versions"), "n_blocked": man.get("n_blocked", 0), **cost})
    gen = sum(r.get("generated_tokens", 0) for r in rows)
    read = sum(r.get("prompt_tokens", 0) for r in rows)
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    money = None if price_per_mtok is None else round((gen + read) / 1e6 * price_per_mtok, 4)
    return {"status": "ok" if rows else "missing", "rows": rows, "generated_tokens": gen, "prompt_tokens": read,
            "seconds": round(sum(seconds), 1) if seconds else None, "price_per_mtok": price_per_mtok,
            "money": money, "missing": []}


def read_agreement(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def build_card(stage_runs: list[StageRun], *, info: dict[str, Any], agreement: Sequence[dict[str, Any]],
               references: Sequence[Path] = (), price_per_mtok: float | None = None, seed: int = 0,
               n_bootstrap: int = 1000, resume: str | None = None,
               agreement_missing: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The card as a JSON-ready dict; ``info`` holds target, preset, defense, judges, primary_judge."""
    from safereason import __version__
    from safereason.card.grades import load_reference, references_section

    load_runs(stage_runs)
    card: dict[str, Any] = {"card_version": 1, **info, "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                            "safereason_version": __version__, "resume": resume}
    card["sections"] = build_sections(stage_runs, seed=seed, n_bootstrap=n_bootstrap, resume=resume)
    card["sections"]["validity"] = validity_section(agreement, info.get("judges") or [], agreement_missing or [])
    refs = [(str(p), load_reference(Path(p))) for p in references]
    card["sections"]["references"] = {**references_section(card, refs), "status": "ok" if refs else "off",
                                      "missing": []}
    card["sections"]["provenance"] = provenance_section(stage_runs, price_per_mtok)
    from safereason.card.taxonomy import load_taxonomy

    tax = load_taxonomy()
    sets = sorted({st.source_set for st in stage_runs if st.section == "harmful" and st.source_set})
    card["taxonomy"] = {"name": tax.name, "rows": tax.table(sets)}
    return card
