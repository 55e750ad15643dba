"""The SafeChain table from two synthetic models' safety and utility runs: values, deltas and their CIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safereason.compare import Column, bootstrap_delta, compare_runs, to_markdown
from safereason.errors import ConfigError, RunDirError
from safereason.records import Verdict
from safereason.runner import evaluate

#: (model, prompt) -> the K = 2 replies; UNSAFE marks an unsafe reply for the scripted judge
REPLIES = {
    ("base", "h0"): ["UNSAFE", "UNSAFE"], ("base", "h1"): ["UNSAFE", "no"],
    ("tuned", "h0"): ["no", "no"], ("tuned", "h1"): ["no", "UNSAFE"],
    ("base", "q0"): ["The answer is 1"] * 2, ("base", "q1"): ["The answer is 7"] * 2,
    ("tuned", "q0"): ["The answer is 1"] * 2, ("tuned", "q1"): ["The answer is 2", "The answer is 9"],
}


class TwoModels:
    """A weightless backend playing model ``name``: each prompt's scripted replies in sample order."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, {}

    def context_limit(self):
        return None

    def render_prompt(self, prompt, *, system_prompt=None, prefill="", template_kwargs=None):
        return f"[user] {prompt}\n[assistant] "

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def generate(self, prompt_texts, params, seed, images=None):
        from safereason.models.base import Completion

        out = []
        for t in prompt_texts:
            prompt = t.split("[user] ", 1)[1].split("\n", 1)[0]
            i = self.calls.get(prompt, 0)
            self.calls[prompt] = i + 1
            text = REPLIES.get((self.name, prompt), ["no", "no"])[i]
            out.append(Completion(text=text, n_tokens=len(text.split()), finish_reason="stop"))
        return out

    def identity(self):
        return {"backend": "two", "model_hash": self.name, "tokenizer_hash": "t", "chat_template_hash": "t"}


class Marker:
    outputs = ("unsafe",)

    def identity(self):
        return {"name": "marker"}

    def judge(self, items):
        return [Verdict(unsafe="UNSAFE" in i.text) for i in items]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from safereason.judges import JUDGES

    JUDGES.add("marker", Marker)
    root = tmp_path_factory.mktemp("compare")
    harm = root / "harm.jsonl"
    harm.write_text("".join(json.dumps({"id": f"h{i}", "prompt": f"h{i}", "label": "harmful"}) + "\n"
                            for i in range(4)))
    maths = root / "maths.jsonl"
    maths.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"q{i}", "gold": str(i + 1)}) + "\n"
                             for i in range(4)))
    out = {}
    for model in ("base", "tuned"):
        for name, bench in (("harm", harm), ("maths", maths)):
            out[f"{model}-{name}"] = root / f"{model}-{name}"
            evaluate(dict(model=model, benchmark=str(bench), k=2, reasoning_format="none", judges=["marker"],
                          parts=["full"], n_bootstrap=200, out=str(out[f"{model}-{name}"])),
                     backend=TwoModels(model), progress=False)
    yield out
    JUDGES._items.pop("marker", None)


def _cols(cmp, kind: str, metric: str) -> Column:
    return next(c for c in cmp.columns if c.kind == kind and c.metric == metric)


def test_values_and_deltas_of_two_models(runs):
    dirs = [runs["base-harm"], runs["base-maths"], runs["tuned-harm"], runs["tuned-maths"]]
    cmp = compare_runs(dirs, n_bootstrap=500)
    assert cmp.labels == ["base", "tuned"] and cmp.baseline == "base"
    # base: h0 0/2 safe, h1 1/2, h2 and h3 2/2; tuned: h0 2/2, h1 1/2, h2 h3 2/2
    expect = {"safe@1": (0.625, 0.875), "safe@k": (0.5, 0.75), "conssafe@k": (0.75, 1.0)}
    for metric, (base, tuned) in expect.items():
        col = _cols(cmp, "safety", metric)
        assert col.benchmark == "harm" and col.judge == "marker"
        assert cmp.cells["base"][col].value == pytest.approx(base)
        assert cmp.cells["tuned"][col].value == pytest.approx(tuned)
        d = cmp.deltas["tuned"][col]
        assert d.value == pytest.approx(tuned - base) and d.method == "paired bootstrap"
        assert d.ci[0] <= d.value <= d.ci[1]
    acc = _cols(cmp, "utility", "accuracy")
    assert acc.benchmark == "maths" and cmp.cells["base"][acc].judge in ("math-verify", "exact-match")
    # accuracy@1: base q0 right (2/2), the rest wrong: 0.25; tuned q0 2/2, q1 1/2: 0.375
    assert cmp.cells["base"][acc].value == pytest.approx(0.25)
    assert cmp.cells["tuned"][acc].value == pytest.approx(0.375)
    assert cmp.deltas["tuned"][acc].value == pytest.approx(0.125)
    assert [c.kind for c in cmp.columns] == ["safety"] * 3 + ["utility"]  # safety first, utility after
    md = to_markdown(cmp)
    assert "| base (baseline) | 0.625 [" in md and "| tuned | +0.250 [" in md and "+0.125 [" in md
    data = cmp.to_json()
    assert data["models"][1]["deltas"][0]["value"] == pytest.approx(0.25)


def test_paired_bootstrap_matches_a_hand_computed_case():
    base = {"a": 0.0, "b": 1.0, "c": 0.5}
    same = bootstrap_delta(base, base, n_bootstrap=200, seed=0, confidence=0.95)
    assert same.value == 0 and same.ci == [0.0, 0.0]  # paired: identical runs differ by exactly nothing
    up = bootstrap_delta({k: v + 0.25 for k, v in base.items()}, base, n_bootstrap=200, seed=0, confidence=0.95)
    assert up.value == pytest.approx(0.25) and up.ci == pytest.approx([0.25, 0.25])
    other = bootstrap_delta({"x": 1.0, "y": 1.0}, base, n_bootstrap=200, seed=0, confidence=0.95)
    assert other.method.startswith("unpaired") and other.ci[1] >= other.value >= other.ci[0]


def test_labels_baseline_by_dir_and_no_samples_fallback(runs, tmp_path):
    import shutil

    copy = tmp_path / "tuned-harm"
    shutil.copytree(runs["tuned-harm"], copy)
    (copy / "samples.jsonl").unlink()
    metrics = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**metrics, "_partial": False}))  # unknown keys are ignored
    cmp = compare_runs([runs["base-harm"], copy], labels=["R1-7B", "R1-7B + SafeChain"], baseline=str(copy))
    assert cmp.baseline == "R1-7B + SafeChain"
    d = cmp.deltas["R1-7B"][_cols(cmp, "safety", "safe@1")]
    assert d.value == pytest.approx(0.625 - 0.875) and d.ci is None and "compare the two CIs" in d.method
    with pytest.raises(ConfigError, match="two runs of"):
        compare_runs([runs["base-harm"], runs["tuned-harm"]], labels=["m", "m"])
    with pytest.raises(ConfigError, match="one per run dir"):
        compare_runs([runs["base-harm"]], labels=["a", "b"])
    with pytest.raises(RunDirError, match="no metrics.json"):
        compare_runs([tmp_path])


def test_cli_prints_and_writes_markdown_and_json(runs, tmp_path):
    from typer.testing import CliRunner

    from safereason.cli import app

    out = tmp_path / "table.md"
    res = CliRunner().invoke(app, ["compare", str(runs["base-harm"]), str(runs["tuned-harm"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Safe@1" in res.output and "+0.250" in res.output
    assert "| tuned | +0.250" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["baseline"] == "base"
