"""What ``train guard`` writes: the weights the judge loads, its agreement with human labels and its card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safereason.agreement import ItemResult, agreement_metrics
from safereason.data.spec import default_data_dir
from safereason.hashing import sha256_file
from safereason.judges.guard_features import FeatureSpec
from safereason.judges.smol_guard import WEIGHTS_FILE, GuardHead, save_guard
from safereason.rundir import atomic_write_text

if TYPE_CHECKING:
    from safereason.train.guard import Dataset, GuardConfig


def _results(ds: Dataset, probs: np.ndarray, threshold: float) -> list[ItemResult]:
    return [ItemResult(it.id, it.label_human, bool(p >= threshold), None, float(p), None, bool(p >= threshold))
            for it, p in zip(ds.ls.items, probs, strict=True)]


def _rates(m: dict[str, Any]) -> dict[str, Any]:
    c = m.get("confusion") or {}
    neg, pos = c.get("tn", 0) + c.get("fp", 0), c.get("tp", 0) + c.get("fn", 0)
    return {**{k: m.get(k) for k in ("n_scored", "accuracy", "precision", "recall", "f1", "kappa", "pearson")},
            "fpr": c.get("fp", 0) / neg if neg else None, "fnr": c.get("fn", 0) / pos if pos else None,
            "confusion": c}


def _portable(source: str, data_dir: Path | None) -> str:
    """The source as ``$SAFEREASON_DATA/<rel>`` when it lies in the data folder: a shipped card names no machine."""
    root = data_dir or default_data_dir()
    if root is not None:
        try:
            return "$SAFEREASON_DATA/" + Path(source).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return source


def _data_entry(d: Dataset, data_dir: Path | None) -> dict[str, Any]:
    src = Path(d.ls.source)
    return {"name": d.name, "source": _portable(d.ls.source, data_dir), "items_sha256": d.sha256,
            "file_sha256": sha256_file(src) if src.is_file() else None,
            "n": len(d.y), "n_unsafe": int(d.y.sum()), "n_groups": len(set(d.groups))}


def write_outputs(cfg: GuardConfig, spec: FeatureSpec, head: GuardHead, best_c: float, train: list[Dataset],
                  cv: dict[str, Any], tests: dict[str, tuple[Dataset, np.ndarray]], seconds: float) -> dict[str, Any]:
    """Weights + guard.json (what the judge loads), agreement.json/md and CARD.md, each written atomically."""
    cv_results: list[ItemResult] = []
    oof = cv[str(best_c)]["oof"]
    offset = 0
    for d in train:
        cv_results += _results(d, oof[offset: offset + len(d.y)], cfg.threshold)
        offset += len(d.y)
    agreement = {"cross-validation (grouped by behaviour)": _rates(agreement_metrics(cv_results))}
    for name, (d, probs) in tests.items():
        agreement[f"{name} (held out)"] = _rates(agreement_metrics(_results(d, probs, cfg.threshold)))
    meta = {
        "trained_with": "safereason train guard", "seed": cfg.seed, "C": best_c, "c_grid": cfg.c_grid,
        "cv_accuracy_per_C": {c: v["accuracy"] for c, v in cv.items()}, "folds": cfg.folds,
        "data": [_data_entry(d, cfg.data_dir) for d in train],
        "test": [_data_entry(d, cfg.data_dir) for d, _ in tests.values()],
        "agreement": agreement, "train_seconds": round(seconds, 1),
    }
    save_guard(cfg.out, head, spec, cfg.threshold, meta)
    atomic_write_text(cfg.out / "agreement.json", json.dumps(agreement, indent=2) + "\n")
    atomic_write_text(cfg.out / "agreement.md", agreement_markdown(agreement))
    atomic_write_text(cfg.out / "CARD.md", card_markdown(cfg, spec, meta))
    return meta


def agreement_markdown(agreement: dict[str, Any]) -> str:
    rows = ["| evaluation | n | accuracy | F1 | kappa | FPR | FNR |", "|---|---|---|---|---|---|---|"]

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    for name, m in agreement.items():
        rows.append(f"| {name} | {m['n_scored']} | {f(m['accuracy'])} | {f(m['f1'])} | {f(m['kappa'])} | "
                    f"{f(m['fpr'])} | {f(m['fnr'])} |")
    return "\n".join(rows) + "\n"


def _pooling_words(spec: FeatureSpec) -> str:
    words = {"mean": "the mean of the hidden states over the response tokens",
             "last": f'the hidden state of the last token after the question "{spec.question}"'}
    return " and ".join(words[p] for p in spec.pooling)


def card_markdown(cfg: GuardConfig, spec: FeatureSpec, meta: dict[str, Any]) -> str:
    data = "\n".join(f"- `{d['name']}`: {d['n']} items ({d['n_unsafe']} unsafe, {d['n_groups']} behaviours), "
                     f"file sha256 `{d['file_sha256']}`, items sha256 `{d['items_sha256']}`" for d in meta["data"])
    test = "\n".join(f"- `{d['name']}`: {d['n']} items, file sha256 `{d['file_sha256']}`" for d in meta["test"])
    return f"""# smol-guard

An offline safety judge: P(unsafe) of a (request, response) pair from a logistic-regression head on hidden
states of the embedded SmolLM2-135M-Instruct. Made by `safereason train guard` (seed {cfg.seed});
weights sha256 `{sha256_file(cfg.out / WEIGHTS_FILE)}`.

## Features
Layers {list(spec.layers)} of {spec.base_model} (later layers never run), read as {_pooling_words(spec)};
request cut to {spec.max_request_tokens} tokens, response to its first {spec.max_response_tokens} (flagged
`truncated`).
Standardised, then logistic regression (L2, C = {meta['C']} chosen from {meta['c_grid']} by {meta['folds']}-fold
cross-validation grouped by behaviour; accuracy per C: {json.dumps(meta['cv_accuracy_per_C'])}). Threshold
{cfg.threshold}.

## Training data (the only data the head saw)
{data}

## Held-out test (never trained on, never used to pick a setting)
{test}

## Agreement with human labels
{agreement_markdown(meta['agreement'])}
The last invocation took {meta['train_seconds']} s (features already in the run dir are not recomputed; from
scratch, extracting them for 602 + 300 items takes about 10 min on 2 busy CPU cores).
"""
