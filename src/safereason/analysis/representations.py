"""Representation separation (TARS's analysis): do a model's hidden states tell harmful prompts from ambiguous
harmless ones?

For each model, every distinct prompt text it was fed (the run's ``prompt_text``: chat template + prefill) is
embedded as the mean of the last layer's hidden states over the prompt tokens. The separation score is the
cross-validated AUROC of a logistic-regression probe (stratified folds, standardised features): about 1 when the
two kinds of prompt are linearly separable, about 0.5 when the model represents them alike. A 2-D PCA or UMAP
projection shows the same picture. TARS reports that safety RL with reasoning separates them better than SFT.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from safereason.analysis.runs import Group, role_of
from safereason.errors import ModelLoadError, SafereasonError

NEGATIVES = ("auto", "ambiguous", "benign", "harmless")


def separation_score(x: np.ndarray, y: Sequence[int], *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated linear-probe AUROC of labels ``y`` (1 = harmful) from features ``x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(y, dtype=int)
    smallest = min(int(labels.sum()), int((1 - labels).sum()))
    if smallest < 2:
        raise SafereasonError(f"a separation score needs at least 2 prompts of each kind, got {smallest}")
    cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    prob = cross_val_predict(probe, np.asarray(x, dtype=float), labels, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, prob))


def project_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D projection for plotting: PCA, or UMAP (umap-learn)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(np.asarray(x, dtype=float))
    if method == "umap":
        import umap

        n_neighbors = max(2, min(15, len(x) - 1))
        return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed).fit_transform(x)
    raise SafereasonError(f"projection must be pca or umap, not {method!r}")


def embed_prompts(model: str, texts: Sequence[str], *, device: str = "cpu", batch_size: int = 8,
                  max_length: int = 2048, dtype: str = "float32") -> np.ndarray:
    """Mean over prompt tokens of the last layer's hidden states, one row per text (the text as fed: no
    special tokens are added, the chat template is already in it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safereason.models.resolve import resolve_model

    path = resolve_model(model).path
    try:
        tok = AutoTokenizer.from_pretrained(path)
        net = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    except Exception as e:  # transformers raises many types for a missing or broken model
        raise ModelLoadError(f"cannot load {model!r} to embed prompts: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = []
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i:i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                  max_length=max_length, add_special_tokens=False).to(device)
        with torch.inference_mode():
            hidden = net(**enc, output_hidden_states=True).hidden_states[-1].float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def prompt_sets(group: Group, negative: str = "auto", max_prompts: int = 200,
                seed: int = 0) -> tuple[list[str], list[str], str]:
    """Distinct prompt texts: (harmful, harmless of the chosen kind, that kind), at most ``max_prompts`` each."""
    if negative not in NEGATIVES:
        raise SafereasonError(f"negative must be one of {', '.join(NEGATIVES)}, not {negative!r}")
    by_role: dict[str, dict[str, None]] = {"harmful": {}, "benign": {}, "ambiguous": {}}
    for s in group.samples:
        role = role_of(s)
        if role in by_role and s.get("prompt_text"):
            by_role[role][s["prompt_text"]] = None
    if negative == "auto":
        negative = "ambiguous" if by_role["ambiguous"] else "benign"
    neg = list(by_role["benign"]) + list(by_role["ambiguous"]) if negative == "harmless" else list(by_role[negative])
    rng = random.Random(seed)
    pos = list(by_role["harmful"])
    pos = rng.sample(pos, max_prompts) if len(pos) > max_prompts else pos
    neg = rng.sample(neg, max_prompts) if len(neg) > max_prompts else neg
    return pos, neg, negative


def group_separation(group: Group, *, model: str | None = None, negative: str = "auto", max_prompts: int = 200,
                     projection: str = "pca", seed: int = 0, **embed_options: Any) -> dict[str, Any]:
    """One model's embeddings, 2-D projection and separation score."""
    pos, neg, kind = prompt_sets(group, negative, max_prompts, seed)
    if len(pos) < 2 or len(neg) < 2:
        raise SafereasonError(f"{group.name}: {len(pos)} harmful and {len(neg)} {kind} prompts; a separation "
                              "score needs at least 2 of each (evaluate the model on both kinds)")
    name = model or str(group.runs[0].config.get("model"))
    x = embed_prompts(name, pos + neg, **embed_options)
    y = [1] * len(pos) + [0] * len(neg)
    xy = project_2d(x, projection, seed)
    return {"name": group.name, "model": name, "negative": kind, "n_harmful": len(pos), "n_negative": len(neg),
            "auroc": separation_score(x, y, seed=seed), "projection": projection,
            "points": [[float(a), float(b)] for a, b in xy], "labels": y}


def plot_separation(results: Sequence[dict[str, Any]]) -> bytes:
    """One 2-D scatter per model: harmful vs the harmless kind, titled with the probe AUROC."""
    from safereason.report.plots import SAFE_COLOR, UNSAFE_COLOR, _figure, _png

    n = max(len(results), 1)
    with _figure((3.6 * n, 3.4)) as fig:
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, r in zip(axes, results, strict=False):
            pts = np.asarray(r["points"])
            lab = np.asarray(r["labels"])
            for value, color, name in ((1, UNSAFE_COLOR, "harmful"), (0, SAFE_COLOR, r["negative"])):
                sel = pts[lab == value]
                ax.scatter(sel[:, 0], sel[:, 1], s=10, alpha=0.7, color=color, label=name)
            ax.set_title(f"{r['name']}\nprobe AUROC {r['auroc']:.3f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=7)
        return _png(fig)
