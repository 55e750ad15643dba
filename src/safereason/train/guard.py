"""``safereason train guard``: fit ``smol-guard`` (a logistic head on SmolLM2 hidden states) on labelled data.

Training data is HarmBench's human-labelled classifier validation set (and any harm-labelled file the user
adds that is no evaluation set). JailbreakBench's judge-comparison set is the held-out test: it is refused as
training data, items whose response also appears in it are refused too, and it never picks a setting. The
regularisation strength is chosen by cross-validation on the training data grouped by behaviour (no
behaviour in both a training and a test fold); the chosen head is then fitted on all of it.

The run dir holds the features (cached per dataset, so a killed run resumes without recomputing them),
``guard.safetensors`` + ``guard.json`` (what the judge loads), ``agreement.json`` / ``agreement.md`` and
``CARD.md``. The shipped guard is this command's output with the defaults.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from safereason.data.labelled import LabelledSet, load_labelled
from safereason.errors import DataError, RunDirError
from safereason.judges.guard_features import FeatureExtractor, FeatureSpec, PairText
from safereason.rundir import RunDir, identity_diff

#: sets that judges are evaluated on: never training data for the guard
HELD_OUT = ("jbb-judge-comparison",)
REFUSAL_SETS = ("xstest-completions",)


class GuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(default_factory=lambda: ["harmbench-val"])
    out: Path
    data_dir: Path | None = None
    seed: int = 0
    layers: list[int] = Field(default_factory=lambda: list(FeatureSpec().layers))
    pooling: list[str] = Field(default_factory=lambda: list(FeatureSpec().pooling))
    max_request_tokens: int = FeatureSpec().max_request_tokens
    max_response_tokens: int = FeatureSpec().max_response_tokens
    c_grid: list[float] = Field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1])
    folds: int = 5
    threshold: float = 0.5
    test: list[str] = Field(default_factory=lambda: list(HELD_OUT))
    batch_size: int = 16
    device: str = "cpu"

    @field_validator("data")
    @classmethod
    def _data(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one --data set")
        for name in v:
            if name in HELD_OUT:
                raise ValueError(f"{name} is the guard's held-out test set and is never training data")
            if name in REFUSAL_SETS:
                raise ValueError(f"{name} is labelled for refusal, not harm; the guard needs harm labels")
        return v

    @field_validator("c_grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not v or any(c <= 0 for c in v):
            raise ValueError("c_grid must be a non-empty list of positive numbers")
        return v

    @field_validator("folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v < 2:
            raise ValueError("folds must be >= 2")
        return v

    def spec(self) -> FeatureSpec:
        return FeatureSpec(layers=tuple(self.layers), pooling=tuple(self.pooling),
                           max_request_tokens=self.max_request_tokens, max_response_tokens=self.max_response_tokens)

    def identity(self) -> dict[str, Any]:
        keep = ("data", "seed", "c_grid", "folds", "threshold", "test")
        return json.loads(json.dumps({**{k: getattr(self, k) for k in keep}, "features": self.spec().to_json()}))


@dataclass
class Dataset:
    name: str
    ls: LabelledSet
    pairs: list[PairText]
    y: np.ndarray
    groups: list[str]
    sha256: str


def _pairs(ls: LabelledSet) -> list[PairText]:
    return [PairText(request=it.behavior or it.prompt, response=it.text, context=it.context) for it in ls.items]


def load_dataset(name: str, data_dir: Path | None, *, train: bool) -> Dataset:
    ls = load_labelled(name, data_dir=data_dir, kind="harm")
    if ls.kind != "harm":
        raise DataError(f"{name}: a {ls.kind} set; the guard needs harm labels (label = unsafe)")
    y = np.array([int(it.label_human) for it in ls.items])
    if train and len(set(y.tolist())) < 2:
        raise DataError(f"{ls.source}: every label is {bool(y[0])}; a classifier needs both classes")
    # a behaviour groups HarmBench's items (id "behaviour:j"); other sets group by their own prompt
    groups = [it.id.split(":")[0] if ls.name == "harmbench-val" else (it.behavior or it.prompt) for it in ls.items]
    blob = json.dumps([[it.id, it.behavior or it.prompt, it.context, it.text, it.label_human] for it in ls.items])
    return Dataset(name, ls, _pairs(ls), y, groups, hashlib.sha256(blob.encode()).hexdigest())


def cached_features(run: Path, ds: Dataset, ex: FeatureExtractor, progress: bool) -> np.ndarray:
    """Features of a dataset, computed once per (dataset, feature spec) and kept in the run dir."""
    path = run / "features" / f"{ds.name.replace('/', '_')}-{ds.sha256[:12]}-{ex.spec.key()}.npy"
    if path.is_file():
        return np.load(path)
    from safereason.progress import progress_bar as _progress

    with _progress(progress) as bar:
        task = bar.add_task(f"features: {ds.name}", total=len(ds.pairs))
        feats = ex.features(ds.pairs, on_batch=lambda n: bar.advance(task, n))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    from safereason.judges.smol_guard import GuardHead

    mean = x.astype(np.float64).mean(0)
    scale = x.astype(np.float64).std(0)
    scale[scale == 0] = 1.0
    lr = LogisticRegression(C=c, max_iter=10_000, tol=1e-8)
    lr.fit((x - mean) / scale, y)
    return GuardHead(mean, scale, lr.coef_[0].astype(np.float64), float(lr.intercept_[0]))


def cross_validate(x: np.ndarray, y: np.ndarray, groups: list[str], cfg: GuardConfig) -> dict[str, Any]:
    """Out-of-fold P(unsafe) per C, folds grouped by behaviour (stratified, seeded)."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = list(StratifiedGroupKFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(x, y, groups))
    out: dict[str, Any] = {}
    for c in cfg.c_grid:
        oof = np.zeros(len(y))
        for tr, te in folds:
            oof[te] = _fit(x[tr], y[tr], c).predict_proba(x[te])
        out[str(c)] = {"accuracy": float(((oof >= cfg.threshold) == y).mean()), "oof": oof}
    return out


def check_disjoint(train: list[Dataset], test: list[Dataset]) -> None:
    """A response that also appears in a held-out test set must not be trained on."""
    seen = {" ".join(p.response.split()).lower() for d in test for p in d.pairs if p.response.strip()}
    for d in train:
        hits = sum(" ".join(p.response.split()).lower() in seen for p in d.pairs)
        if hits:
            raise DataError(f"{d.name}: {hits} responses also appear in the held-out test set "
                            f"({', '.join(t.name for t in test)}); remove them")


def prepare_run(cfg: GuardConfig) -> RunDir:
    run = RunDir(cfg.out)
    if cfg.out.is_dir() and any(cfg.out.iterdir()) and not (cfg.out / "state" / "identity.json").exists():
        raise RunDirError(f"--out {cfg.out} is a non-empty directory that is not a guard run; pick a new one")
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "state").mkdir(exist_ok=True)
    stored = run.read_json("state/identity.json")
    if stored is not None and (diff := identity_diff(stored, cfg.identity())):
        raise RunDirError(f"run dir {cfg.out} holds a guard trained with other settings ({'; '.join(diff[:6])}); "
                          "use a new --out directory, or the same settings to resume")
    run.write_json("state/identity.json", cfg.identity())
    return run


def train_guard(cfg: GuardConfig, *, progress: bool = True) -> dict[str, Any]:
    """Fit the guard; write weights, card and agreement report into ``cfg.out``. Returns guard.json's content."""
    from safereason.train.guard_report import write_outputs

    spec = cfg.spec()
    train = [load_dataset(n, cfg.data_dir, train=True) for n in cfg.data]  # all data checked before any work
    test = [load_dataset(n, cfg.data_dir, train=False) for n in cfg.test]
    check_disjoint(train, test)
    run = prepare_run(cfg)
    t0 = time.time()
    with run.lock("train guard"):
        ex = FeatureExtractor(spec, device=cfg.device, batch_size=cfg.batch_size)
        x = np.concatenate([cached_features(cfg.out, d, ex, progress) for d in train])
        y = np.concatenate([d.y for d in train])
        groups = [f"{d.name}/{g}" for d in train for g in d.groups]
        cv = cross_validate(x, y, groups, cfg)
        best = max(cfg.c_grid, key=lambda c: (cv[str(c)]["accuracy"], -c))  # ties: the stronger regularisation
        head = _fit(x, y, best)
        tests = {d.name: (d, head.predict_proba(cached_features(cfg.out, d, ex, progress))) for d in test}
        return write_outputs(cfg, spec, head, best, train, cv, tests, time.time() - t0)
