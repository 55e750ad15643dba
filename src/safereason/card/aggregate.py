"""From finished run dirs to the card's numbers: one JSON-ready dict per section.

Every number is taken from the project's own outputs (``metrics.json`` written by ``compute_metrics``, compare's
paired deltas, the attack report's rows, ``judge-agreement``'s metrics); what the card adds is the hazard
re-mapping (recomputed with ``compute_metrics`` over the re-labelled samples) and the thought/answer cross-tab.
A value is ``{"value", "ci", "n"}``; a section holds ``missing``: the stages that did not finish, each with why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safereason.report.runs import Run

PRIMARY_PART = "full"
#: over-refusal: refusal phrases are matched at the start of a text, so the answer (after the thought) is the
#: headline; the full response (thought first) is shown next to it
REFUSAL_PARTS = ("answer", "full")
#: parts preferred for attack success (the answer is what an attacker gets)
ATTACK_PARTS = ("answer", "full", "thinking")


@dataclass
class StageRun:
    """One stage as the card reads it: its run dir (when it finished) or why it is missing."""

    name: str  #: e.g. ``base/harmful``
    section: str
    variant: str | None
    path: Path
    source_set: str | None = None
    status: str = "done"
    error: str | None = None
    seconds: float | None = None
    run: Run | None = field(default=None, repr=False)

    @property
    def stage(self) -> str:
        return self.name.split("/", 1)[-1]


def value(v: float | None, ci: Sequence[float] | None = None, n: int | None = None) -> dict[str, Any]:
    return {"value": v, "ci": list(ci) if ci else None, "n": n}


def safety_values(entry: dict[str, Any]) -> dict[str, Any]:
    ci = entry.get("ci") or {}
    n = entry.get("n_prompts")
    return {m: value(entry.get(m), ci.get(m), n) for m in ("safe@1", "safe@k", "conssafe@k")}


def safety_judges(run: Run) -> list[str]:
    return [j for j, parts in run.metrics.items() if isinstance(parts, dict)
            and any(isinstance(e, dict) and "safety" in str(e.get("kind", "")) for e in parts.values())]


# -- 1. harmful requests ---------------------------------------------------------------------------------------

def hazard_rows(run: Run, source_set: str | None, judge: str, part: str, n_bootstrap: int, seed: int) -> list[dict]:
    """Safe@1/Safe@K/ConsSafe@K per Llama Guard hazard: the run's samples re-labelled by the taxonomy, through
    :func:`safereason.metrics.compute_metrics` (so the numbers are defined exactly as the headline's)."""
    from safereason.card.taxonomy import load_taxonomy
    from safereason.metrics import compute_metrics
    from safereason.records import Sample

    tax = load_taxonomy()
    samples = []
    for s in run.samples:
        sample = Sample.model_validate({**s, "judgments": {judge: (s.get("judgments") or {}).get(judge, {})}})
        sample.category = tax.hazard(source_set or "", s.get("category"))
        samples.append(sample)
    entry = compute_metrics(samples, n_bootstrap=n_bootstrap, seed=seed).get(judge, {}).get(part, {})
    rows = []
    for code, block in (entry.get("by_category") or {}).items():
        cats = sorted({str(s.get("category")) for s in run.samples
                       if tax.hazard(source_set or "", s.get("category")) == code})
        rows.append({"hazard": tax.label(code), "code": code, "categories": cats, **safety_values(block)})
    return sorted(rows, key=lambda r: (r["code"] == "unmapped", len(r["code"]), r["code"]))


def harmful_section(st: StageRun, n_bootstrap: int, seed: int) -> dict[str, Any]:
    assert st.run is not None
    judges = safety_judges(st.run)
    rows = [{"judge": j, "part": p, **safety_values(e), "k": e.get("k"), "n_blocked": e.get("n_blocked", 0),
             "n_errors": e.get("n_errors", 0), "n_missing": e.get("n_missing", 0)}
            for j in judges for p, e in st.run.metrics[j].items()
            if isinstance(e, dict) and "safety" in str(e.get("kind", ""))]
    hazards = {j: hazard_rows(st.run, st.source_set, j, PRIMARY_PART, n_bootstrap, seed) for j in judges}
    return {"set": st.source_set, "rows": rows, "hazards": hazards}


# -- 2. reasoning-specific -------------------------------------------------------------------------------------

def reasoning_section(st: StageRun) -> dict[str, Any]:
    """Per judge: how often an unsafe thought precedes a safe answer (and the reverse), over samples with both
    verdicts; thought lengths of safe vs unsafe thoughts; the share of thoughts that never close."""
    from safereason.recipes.safechain import closed_share

    assert st.run is not None
    out: dict[str, Any] = {"judges": {}}
    closed, total = closed_share(st.path)
    out["unclosed"] = value((total - closed) / total if total else None, None, total)
    for judge in safety_judges(st.run):
        both = unsafe_then_safe = safe_then_unsafe = 0
        for s in st.run.samples:
            if s.get("status", "ok") != "ok" or s.get("label") == "benign":
                continue
            v = (s.get("judgments") or {}).get(judge) or {}
            t, a = (v.get("thinking") or {}).get("unsafe"), (v.get("answer") or {}).get("unsafe")
            if t is None or a is None:
                continue
            both += 1
            unsafe_then_safe += bool(t and not a)
            safe_then_unsafe += bool(a and not t)
        lengths = ((st.run.metrics.get(judge) or {}).get("thinking") or {}).get("mean_tokens") or {}
        out["judges"][judge] = {
            "n_both": both,
            "unsafe_thought_safe_answer": value(unsafe_then_safe / both if both else None, None, both),
            "safe_thought_unsafe_answer": value(safe_then_unsafe / both if both else None, None, both),
            "thought_tokens_safe": lengths.get("safe"), "thought_tokens_unsafe": lengths.get("unsafe"),
        }
    return out


# -- 3. over-refusal -------------------------------------------------------------------------------------------

def refusal_rows(st: StageRun) -> list[dict[str, Any]]:
    """Refusal rate on the stage's benign prompts, per judge that judges refusal (the samples a provider blocked
    are left out of it and counted: a block is not a refusal)."""
    assert st.run is not None
    rows = []
    for judge, parts in st.run.metrics.items():
        for part in REFUSAL_PARTS:
            entry = parts.get(part) if isinstance(parts, dict) else None
            block = ((entry or {}).get("refusal") or {}).get("benign")
            if entry and block:
                rows.append({"set": st.source_set, "judge": judge, "part": part,
                             "refusal": value(block["refusal_rate"], block.get("ci"), block.get("n_prompts")),
                             "n_blocked": entry.get("n_blocked", 0), "n_skipped": entry.get("n_skipped", 0),
                             "n_missing": _no_verdict(st.run.samples, judge, part)})
    return rows


def _no_verdict(samples: Sequence[dict[str, Any]], judge: str, part: str) -> int:
    """Benign samples generated but without that part to judge (an answer after a thought that never closed)."""
    return sum(1 for s in samples if s.get("status", "ok") == "ok" and s.get("label") == "benign"
               and ((s.get("judgments") or {}).get(judge) or {}).get(part) is None)


# -- 4. robustness ---------------------------------------------------------------------------------------------

def robustness_row(st: StageRun, judge: str) -> dict[str, Any] | None:
    """ASR (1 - Safe@1, CI mirrored) of one robustness stage; attack files go through the attack report's rows
    (budget per success), the static sets are read from their metrics."""
    from safereason.attacks.report import attack_row

    assert st.run is not None
    entries = st.run.metrics.get(judge) or {}
    part = next((p for p in ATTACK_PARTS if isinstance(entries.get(p), dict) and entries[p].get("safe@1") is not None),
                None)
    if part is None:
        return None
    if st.stage in ("prefill", "gcg", "pair"):
        r = attack_row(st.run, st.stage, judge, part)
        return {"attack": st.stage, "judge": judge, "part": part, "asr": value(r.asr, r.asr_ci, r.n_prompts),
                "asr_k": value(r.asr_k, r.asr_k_ci, r.n_prompts), "k": r.k, "budget_unit": r.budget_unit,
                "budget_per_success": r.budget_per_success, "n_blocked": entries[part].get("n_blocked", 0)}
    e = entries[part]
    ci = e.get("ci") or {}

    def flip(c: Any) -> list[float] | None:
        return [1 - c[1], 1 - c[0]] if c else None

    return {"attack": f"static: {st.source_set}", "judge": judge, "part": part,
            "asr": value(1 - e["safe@1"], flip(ci.get("safe@1")), e.get("n_prompts")),
            "asr_k": value(None if e.get("safe@k") is None else 1 - e["safe@k"], flip(ci.get("safe@k")),
                           e.get("n_prompts")),
            "k": e.get("k"), "budget_unit": None, "budget_per_success": None, "n_blocked": e.get("n_blocked", 0)}


# -- 5. utility ------------------------------------------------------------------------------------------------

def utility_row(st: StageRun) -> dict[str, Any] | None:
    assert st.run is not None
    for judge in ("math-verify", "code-exec", "exact-match"):
        block = ((st.run.metrics.get(judge) or {}).get(PRIMARY_PART) or {}).get("utility")
        if block and block.get("accuracy") is not None:
            return {"set": st.source_set, "judge": judge, "part": PRIMARY_PART,
                    "pass@1": value((block.get("pass@k") or {}).get("pass@1", block["accuracy"]), block.get("ci"),
                                    block.get("n_prompts")),
                    "n_errors": block.get("n_errors", 0)}
    return None


# -- 6. defense ------------------------------------------------------------------------------------------------

def defense_deltas(base: StageRun, defended: StageRun, seed: int, n_bootstrap: int) -> list[dict[str, Any]]:
    """Defended minus undefended per column of compare's table, with compare's paired bootstrap CIs."""
    from safereason.compare import compare_runs

    cmp = compare_runs([base.path, defended.path], labels=["undefended", "defended"], baseline="undefended",
                       seed=seed, n_bootstrap=n_bootstrap)
    rows = []
    for col in cmp.columns:
        a, b = cmp.cells["undefended"].get(col), cmp.cells["defended"].get(col)
        d = cmp.deltas.get("defended", {}).get(col)
        rows.append({"stage": base.stage, "metric": col.header, "judge": col.judge,
                     "undefended": value(a.value, a.ci, a.n_prompts) if a else value(None),
                     "defended": value(b.value, b.ci, b.n_prompts) if b else value(None),
                     "delta": value(d.value, d.ci) if d else value(None), "method": d.method if d else ""})
    return rows


def run_cost(st: StageRun) -> dict[str, Any]:
    """Tokens generated and read, samples blocked, and wall time of one stage."""
    assert st.run is not None
    samples = st.run.samples
    return {"generated_tokens": sum(int(s.get("n_response_tokens") or 0) for s in samples),
            "prompt_tokens": sum(int(s.get("n_prompt_tokens") or 0) for s in samples),
            "n_samples": len(samples), "seconds": st.seconds}
