"""Agreement statistics against hand-computed values, the labelled-set loaders and the CLI."""

import json
import subprocess
import sys

import pytest

from safereason.agreement import ItemResult, agreement_metrics, results_from_column, run_judge
from safereason.data.labelled import load_labelled, parse_binary
from safereason.errors import ConfigError, SafereasonError


def _r(label, pred, score=None, error=None):
    return ItemResult("i", label, pred, None, score, error, None if error else pred)


def test_metrics_hand_computed():
    # labels 1 1 1 0 0 0 0, predictions 1 1 0 1 0 0 0, plus one error (excluded)
    res = [_r(True, True), _r(True, True), _r(True, False), _r(False, True), _r(False, False), _r(False, False),
           _r(False, False), _r(True, None, error="boom")]
    m = agreement_metrics(res)
    assert m["n_items"] == 8 and m["n_scored"] == 7 and m["n_errors"] == 1
    assert m["confusion"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 2}
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    po, pe = 5 / 7, (3 / 7) * (3 / 7) + (4 / 7) * (4 / 7)
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))
    # phi coefficient = Pearson of two binary vectors
    phi = (2 * 3 - 1 * 1) / ((3 * 4 * 3 * 4) ** 0.5)
    assert m["pearson"] == pytest.approx(phi)


def test_pearson_uses_scores_and_constant_is_none():
    res = [_r(True, True, 0.9), _r(False, False, 0.2), _r(True, False, 0.4), _r(False, False, 0.1)]
    m = agreement_metrics(res)
    import numpy as np

    assert m["pearson"] == pytest.approx(np.corrcoef([0.9, 0.2, 0.4, 0.1], [1, 0, 1, 0])[0, 1])
    assert agreement_metrics([_r(True, True), _r(True, False)])["pearson"] is None
    empty = agreement_metrics([_r(True, None, error="x")])
    assert empty["accuracy"] is None and empty["n_errors"] == 1


def test_parse_binary():
    assert [parse_binary(v) for v in (1, 0, "1", "yes", "No", "unsafe", "2_full_refusal", "Rating: [[10]]",
                                      "Rating: [[3]]", True)] == [True, False, True, True, False, True, True, True,
                                                                  False, True]
    assert parse_binary("maybe") is None and parse_binary(None) is None and parse_binary(2) is None


def test_harmbench_val_loader(shared_data):
    ls = load_labelled("harmbench-val", data_dir=shared_data)
    assert ls.kind == "harm" and len(ls.items) == 602
    assert sum(i.label_human for i in ls.items) == 273  # the human majority, as HarmBench documents
    contextual = [i for i in ls.items if i.context]
    assert contextual and all(i.behavior for i in contextual)
    assert all(len(i.votes) == 3 for i in ls.items)


def test_xstest_and_jbb_loaders(shared_data):
    xs = load_labelled("xstest-completions", data_dir=shared_data)
    assert xs.kind == "refusal" and len(xs.items) == 5 * 450
    assert len({i.id for i in xs.items}) == len(xs.items)
    jbb = load_labelled("jbb-judge-comparison", data_dir=shared_data)
    assert len(jbb.items) == 300 and sum(i.label_human for i in jbb.items) == 110


def test_advbench_prefixes_reproduces_harmbench_advbench_column(shared_data):
    """HarmBench's 'advbench' verdict column is its advbench_metric_test_prefixes judge: ours must match it."""
    ls = load_labelled("harmbench-val", data_dir=shared_data)
    ours = run_judge("advbench-prefixes", ls, progress=False)
    theirs = results_from_column(ls, "advbench")
    assert all(r.predicted is not None for r in theirs)
    assert [r.predicted for r in ours] == [r.predicted for r in theirs]
    m = agreement_metrics(ours)
    assert 0.6 < m["accuracy"] < 0.75  # far from the HarmBench classifier's ~0.9 on the same set
    assert agreement_metrics(results_from_column(ls, "cls"))["accuracy"] > 0.88


def test_rs_match_is_safechains_list_not_harmbenchs(shared_data):
    """SafeChain's RS-Match is a different list: it disagrees with the 'advbench' column on some items."""
    ls = load_labelled("harmbench-val", data_dir=shared_data)
    ours = run_judge("rs-match", ls, progress=False)
    theirs = results_from_column(ls, "advbench")
    differ = sum(a.predicted != b.predicted for a, b in zip(ours, theirs, strict=True))
    assert differ > 0
    m = agreement_metrics(ours)
    assert m["n_errors"] == 0 and 0.6 < m["accuracy"] < 0.75


def test_refusal_judge_on_harm_set_refused(shared_data):
    ls = load_labelled("harmbench-val", data_dir=shared_data, limit=3)
    with pytest.raises(ConfigError, match="refusal"):
        run_judge("refusal-string", ls, progress=False)


def test_local_file_and_bad_labels(tmp_path):
    good = tmp_path / "l.csv"
    good.write_text("prompt,text,label,judge_x\np,Sure here is,1,yes\np,I'm sorry,0,no\np,I cannot,0,maybe\n")
    ls = load_labelled(str(good))
    assert [i.label_human for i in ls.items] == [True, False, False]
    res = results_from_column(ls, "judge_x")
    assert [r.predicted for r in res] == [True, False, None] and res[2].error
    with pytest.raises(ConfigError, match="no verdict column"):
        results_from_column(ls, "nope")
    bad = tmp_path / "b.csv"
    bad.write_text("text,label\nhello,perhaps\n")
    with pytest.raises(SafereasonError, match="line 2"):
        load_labelled(str(bad))
    with pytest.raises(SafereasonError, match="Did you mean 'harmbench-val'"):
        load_labelled("harmbench-vall")


def test_cli_judge_agreement(shared_data, tmp_path, cli_env):
    out = tmp_path / "items.jsonl"
    proc = subprocess.run([sys.executable, "-m", "safereason.cli", "judge-agreement", "--judge", "rs-match",
                           "--dataset", "xstest-completions", "--limit", "40", "--out", str(out), "--json",
                           "--no-progress"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    m = report["judges"]["rs-match"]
    assert m["n_items"] == 40 and 0 <= m["accuracy"] <= 1 and set(m["confusion"]) == {"tn", "fp", "fn", "tp"}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 40 and {"id", "label_human", "unsafe", "score", "error"} <= set(lines[0])
    bad = subprocess.run([sys.executable, "-m", "safereason.cli", "judge-agreement", "--dataset", "harmbench-val"],
                         env=cli_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--judge" in bad.stderr and "Traceback" not in bad.stderr
