"""How well a judge agrees with human labels: accuracy, precision, recall, F1, Pearson, Cohen's kappa.

The judge under test runs over a human-labelled set (:mod:`safereason.data.labelled`), or a verdict column
shipped in the file is scored instead, so published judge-comparison tables can be reproduced. Items the
judge could not decide (errors) are left out of every statistic and counted, never guessed.

What counts as the judge's positive prediction depends on the set:

- a *harm* set (positive = harmful / unsafe): the verdict's ``unsafe``;
- a *refusal* set (positive = refused): the verdict's ``refused``; a safety judge without a refusal output
  is read as a refusal detector, ``refused = not unsafe`` (this is how refusal-string matching is used), with
  score ``1 - P(unsafe)``.

Pearson's r is between the judge's score (or its 0/1 verdict, for judges without a score) and the 0/1 human
label; it is ``None`` when either side is constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from safereason.data.labelled import LabelledItem, LabelledSet, parse_binary
from safereason.errors import ConfigError
from safereason.records import Verdict


@dataclass(frozen=True)
class ItemResult:
    id: str
    label_human: bool
    unsafe: bool | None
    refused: bool | None
    score: float | None
    error: str | None
    #: the judge's positive prediction for this set's kind (None on error)
    predicted: bool | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _as_prediction(kind: str, v: Verdict) -> tuple[bool | None, float | None, str | None]:
    if v.error is not None:
        return None, None, v.error
    if kind == "harm":
        if v.unsafe is None:
            return None, None, "the judge gives no unsafe verdict (a refusal judge) on a harm set"
        return v.unsafe, v.score, None
    if v.refused is not None:
        return v.refused, None, None
    assert v.unsafe is not None
    return not v.unsafe, None if v.score is None else 1.0 - v.score, None


def results_from_verdicts(ls: LabelledSet, verdicts: Sequence[Verdict]) -> list[ItemResult]:
    out = []
    for item, v in zip(ls.items, verdicts, strict=True):
        pred, score, error = _as_prediction(ls.kind, v)
        out.append(ItemResult(item.id, item.label_human, v.unsafe, v.refused, score, error, pred))
    return out


def results_from_column(ls: LabelledSet, column: str) -> list[ItemResult]:
    """Score a verdict column shipped in the file (a published judge's verdicts)."""
    if not any(column in it.verdicts for it in ls.items):
        known = sorted({c for it in ls.items for c in it.verdicts})
        raise ConfigError(f"{ls.name} has no verdict column {column!r}; "
                          f"its verdict columns: {', '.join(known) or 'none'}")
    out = []
    for it in ls.items:
        raw = it.verdicts.get(column)
        pred = parse_binary(raw)
        err = None if pred is not None else f"unparseable verdict {raw!r}"
        unsafe = pred if ls.kind == "harm" else None
        refused = pred if ls.kind == "refusal" else None
        out.append(ItemResult(it.id, it.label_human, unsafe, refused, None, err, pred))
    return out


def agreement_metrics(results: Sequence[ItemResult]) -> dict[str, Any]:
    """The agreement statistics over the items the judge decided."""
    from scipy.stats import pearsonr
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    scored = [r for r in results if r.predicted is not None]
    out: dict[str, Any] = {"n_items": len(results), "n_scored": len(scored), "n_errors": len(results) - len(scored)}
    if not scored:
        out.update({k: None for k in ("accuracy", "precision", "recall", "f1", "pearson", "kappa", "confusion")})
        return out
    y = [int(r.label_human) for r in scored]
    p = [int(bool(r.predicted)) for r in scored]
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="binary", zero_division=0.0)
    tn, fp, fn, tp = (int(x) for x in confusion_matrix(y, p, labels=[0, 1]).ravel())
    s = [r.score if r.score is not None else float(bool(r.predicted)) for r in scored]
    pearson = None
    if len(set(y)) > 1 and len(set(s)) > 1:
        pearson = float(pearsonr(s, y).statistic)
    kappa = float(cohen_kappa_score(y, p)) if len(set(y)) > 1 or len(set(p)) > 1 else None
    if kappa is not None and math.isnan(kappa):
        kappa = None
    out.update({
        "accuracy": float(accuracy_score(y, p)), "precision": float(prec), "recall": float(rec), "f1": float(f1),
        "pearson": pearson, "kappa": kappa, "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "n_positive_human": sum(y), "n_positive_judge": sum(p),
    })
    return out


def run_judge(name: str, ls: LabelledSet, *, options: dict[str, Any] | None = None, batch_size: int = 32,
              progress: bool = True) -> list[ItemResult]:
    """Run a registered judge over a labelled set, batched, with a progress bar."""
    from safereason.judges import JudgeItem, build_judge, close_judge
    from safereason.progress import progress_bar as _progress

    judge = build_judge(name, options)
    if ls.kind == "harm" and "unsafe" not in judge.outputs:
        raise ConfigError(f"judge {name!r} judges refusal, not harm; use it on a refusal set (xstest-completions)")
    verdicts: list[Verdict] = []
    items: list[LabelledItem] = ls.items
    try:
        with _progress(progress) as bar:
            task = bar.add_task(f"judging: {name} on {ls.name}", total=len(items))
            for i in range(0, len(items), batch_size):
                chunk = items[i:i + batch_size]
                got = judge.judge([JudgeItem(prompt=it.prompt, text=it.text, behavior=it.behavior, context=it.context)
                                   for it in chunk])
                if len(got) != len(chunk):
                    raise RuntimeError(f"judge {name} returned {len(got)} verdicts for {len(chunk)} items")
                verdicts += got
                bar.advance(task, len(chunk))
    finally:
        close_judge(judge)
    return results_from_verdicts(ls, verdicts)
