"""Which model behind ``smol-guard``: held-out accuracy and throughput of the candidates.

Candidates (all trained on HarmBench's classifier validation set only; JailbreakBench's judge-comparison set
is held out and reported, never used to pick):

- ``tfidf``: word 1-2-gram + character 3-5-gram TF-IDF, logistic regression (no model at all);
- ``hidden-L``: the shipped recipe (``safereason train guard``): a logistic head on SmolLM2-135M hidden states
  of layer L (mean over the response + last token after a question), only layers 1..L run.

For each: accuracy by 5-fold cross-validation grouped by behaviour on harmbench-val, accuracy on
jbb-judge-comparison, and items/s on synthetic 512-token responses (batch 16, model loading excluded).
Hidden-state features are read from a ``train guard`` run dir's cache when ``--features-dir`` points at one
trained with ``--layers`` covering L; otherwise they are computed (slow on 2 cores).

    .venv/bin/python benchmarks/guard_choice.py --layers 4,8 [--n-speed 48]   # accuracy + speed (slow)
    .venv/bin/python benchmarks/guard_choice.py --speed-only --layers 5      # items/s only (a minute)

Target: the shipped guard >= 10 items/s at 512 tokens on 2 cores. The shipped spec reads the first 256
response tokens (``--read`` compares 256 with all 512).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _tfidf(c: float = 3.0):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True)
    return make_pipeline(make_union(words, chars), LogisticRegression(C=c, max_iter=5000))


def _text(p) -> str:
    return f"{p.context or ''}\n{p.request}\n\n{p.response}"


def tfidf_row(train, test, folds) -> dict[str, float]:
    x, y = [_text(p) for p in train.pairs], train.y
    oof = np.zeros(len(y))
    for tr, te in folds:
        oof[te] = _tfidf().fit([x[i] for i in tr], y[tr]).predict([x[i] for i in te])
    model = _tfidf().fit(x, y)
    jbb = float((model.predict([_text(p) for p in test.pairs]) == test.y).mean())
    texts = [_text(p) for p in _speed_pairs(64)]
    t = time.perf_counter()
    model.predict_proba(texts)
    return {"cv": float((oof == y).mean()), "jbb": jbb, "items_per_s": len(texts) / (time.perf_counter() - t)}


def _speed_pairs(n: int):
    from safereason.judges.guard_features import PairText

    rng = np.random.default_rng(0)
    words = ["the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
             "with", "as", "I", "his", "they", "be", "at", "one", "have", "this"]
    # about 512 tokens of response each (these words are one token apiece in SmolLM2's vocabulary)
    return [PairText("Write instructions for the task.", " ".join(rng.choice(words, 512))) for _ in range(n)]


def speed_of_layer(layer: int, n_speed: int, max_response_tokens: int | None = None) -> float:
    """Items/s on 512-token responses, of which the guard reads ``max_response_tokens`` (default: the spec's)."""
    from safereason.judges.guard_features import FeatureExtractor, FeatureSpec

    spec = FeatureSpec(layers=(layer,))
    if max_response_tokens is not None:
        spec = FeatureSpec(layers=(layer,), max_response_tokens=max_response_tokens)
    ex = FeatureExtractor(spec, batch_size=16)
    pairs = _speed_pairs(n_speed)
    ex.features(pairs[:16])  # warm-up
    t = time.perf_counter()
    ex.features(pairs)
    return n_speed / (time.perf_counter() - t)


def hidden_row(layer: int, train, test, folds, n_speed: int) -> dict[str, float]:
    from safereason.judges.guard_features import FeatureExtractor, FeatureSpec
    from safereason.train.guard import GuardConfig, _fit, cross_validate

    ex = FeatureExtractor(FeatureSpec(layers=(layer,)), batch_size=16)
    xtr, xte = ex.features(train.pairs), ex.features(test.pairs)
    cfg = GuardConfig(out=".", test=[])
    cv = cross_validate(xtr, train.y, train.groups, cfg)
    best = max(cfg.c_grid, key=lambda c: (cv[str(c)]["accuracy"], -c))
    head = _fit(xtr, train.y, best)
    jbb = float(((head.predict_proba(xte) >= 0.5) == test.y).mean())
    return {"cv": cv[str(best)]["accuracy"], "jbb": jbb, "items_per_s": speed_of_layer(layer, n_speed)}


def main() -> None:
    import torch
    from sklearn.model_selection import StratifiedGroupKFold

    from safereason.train.guard import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", default="4,8")
    ap.add_argument("--n-speed", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--read", default="256,512", help="response tokens read, for --speed-only (comma-separated)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.speed_only:
        for layer in (int(x) for x in args.layers.split(",")):
            for read in (int(x) for x in args.read.split(",")):
                speed = speed_of_layer(layer, args.n_speed, read)
                print(f"hidden-{layer} reading {read}: {speed:.1f} items/s on 512-token responses")
        return
    train = load_dataset("harmbench-val", None, train=True)
    test = load_dataset("jbb-judge-comparison", None, train=False)
    folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(train.pairs, train.y, train.groups))
    rows = {"tfidf": tfidf_row(train, test, folds)}
    for layer in (int(x) for x in args.layers.split(",")):
        rows[f"hidden-{layer}"] = hidden_row(layer, train, test, folds, args.n_speed)
    print(f"{'candidate':<12} {'grouped-CV acc':>15} {'jbb acc':>8} {'items/s @512':>13}")
    for name, r in rows.items():
        print(f"{name:<12} {r['cv']:>15.3f} {r['jbb']:>8.3f} {r['items_per_s']:>13.1f}")


if __name__ == "__main__":
    main()
