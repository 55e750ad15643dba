"""Incomplete runs: metrics and report refuse a run killed during generation or judging, or mark it PARTIAL."""

import json
import subprocess
import sys

import pytest

from safereason.completeness import IncompleteRunError, needs_verdict
from safereason.errors import SafereasonError
from safereason.judges import JUDGES
from safereason.records import Verdict
from safereason.report.html import build_report
from safereason.runner import evaluate, judge_run, metrics_run


def _cfg(model_dir, out, **kw):
    base = dict(model=str(model_dir), benchmark="smoke", k=2, max_new_tokens=6, temperature=1.0, batch_size=4,
                seed=5, limit=6, think_prefill="<think>\n", n_bootstrap=20, judge_batch_size=4, out=str(out))
    base.update(kw)
    return base


def _killed_during_generation(model_dir, backend, out, monkeypatch):
    """A run interrupted after its first batch, as Ctrl-C or a crash leaves it."""
    real = backend.generate
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(backend, "generate", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluate(_cfg(model_dir, out), backend=backend, progress=False)
    monkeypatch.setattr(backend, "generate", real)


def test_metrics_refuses_a_run_killed_during_generation(tiny_model_dir, tiny_backend, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _killed_during_generation(tiny_model_dir, tiny_backend, out, monkeypatch)
    with pytest.raises(IncompleteRunError, match=r"8 of 12 samples and 8 judgments \(rs-match x thinking: 4, "
                       r"rs-match x full: 4\) are missing; re-run the `safereason eval`"):
        metrics_run(out)
    with pytest.raises(IncompleteRunError, match="8 of 12 samples are missing"):
        judge_run(out, ["rs-match"], progress=False)  # judges the samples there are, keeps the verdicts
    with pytest.raises(IncompleteRunError, match="8 of 12 samples are missing;"):
        metrics_run(out)
    assert not (out / "metrics.json").exists() and not (out / "samples.jsonl").exists()

    res = metrics_run(out, allow_partial=True)
    assert res.partial["missing_samples"] == 8 and res.partial["expected_samples"] == 12
    written = json.loads((out / "metrics.json").read_text())
    assert written["rs-match"]["full"]["partial"] == {"missing_samples": 8, "expected_samples": 12,
                                                      "missing_judgments": 0}
    assert json.loads((out / "manifest.json").read_text())["partial"]["missing_samples"] == 8
    assert "PARTIAL" in (out / "summary.md").read_text()

    with pytest.raises(SafereasonError, match="incomplete.*--allow-partial"):
        build_report([out], tmp_path / "r.html")
    html = build_report([out], tmp_path / "r.html", allow_partial=True).read_text()
    assert "PARTIAL: 8 of 12 samples" in html and "[PARTIAL]" in html

    done = evaluate(_cfg(tiny_model_dir, out), backend=tiny_backend, progress=False)  # resumes
    assert done.partial is None and len(done.samples) == 12
    assert "partial" not in json.loads((out / "manifest.json").read_text())
    assert all("partial" not in e for parts in done.metrics.values() for e in parts.values())
    assert "PARTIAL" not in build_report([out], tmp_path / "r.html").read_text()


class _Interrupted:
    """A judge that answers its first batch, then is interrupted (Ctrl-C while judging)."""

    outputs = ("unsafe",)
    calls = 0

    def identity(self):
        return {"name": "cut"}

    def judge(self, items):
        type(self).calls += 1
        if type(self).calls > 1:
            raise KeyboardInterrupt
        return [Verdict(unsafe=False) for _ in items]


def test_missing_judgments_count_and_unfinished_runs_are_not_reported(tiny_model_dir, tiny_backend, tmp_path):
    out = tmp_path / "run"
    evaluate(_cfg(tiny_model_dir, out), backend=tiny_backend, progress=False)
    build_report([out], tmp_path / "r.html")  # a finished run reports fine
    JUDGES.add("cut", _Interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            judge_run(out, ["cut"], progress=False)
        with pytest.raises(IncompleteRunError, match=r"judgments \(cut x thinking: \d+, cut x full: \d+\) are"):
            metrics_run(out)
        with pytest.raises(SafereasonError, match="unfinished"):
            build_report([out], tmp_path / "r.html")  # metrics.json is the old one: it lacks the new judge
        res = metrics_run(out, allow_partial=True)
        n_todo = sum(needs_verdict(s, p) for s in res.samples for p in ("thinking", "answer", "full"))
        assert res.partial["missing_samples"] == 0 and res.partial["missing_judgments"] == n_todo - 4
        assert sum(e["partial"]["missing_judgments"] for e in res.metrics["cut"].values()) == n_todo - 4
        assert "partial" in res.metrics["rs-match"]["full"]  # the whole result is partial
        _Interrupted.calls = -100  # the judge works again
        done = judge_run(out, ["cut"], progress=False)
        assert done.partial is None and done.metrics["cut"]["full"]["n_judged"] > 0
    finally:
        JUDGES._items.pop("cut", None)


def test_cli_metrics_and_report_refuse_then_allow_partial(tiny_model_dir, tiny_backend, tmp_path, monkeypatch,
                                                          cli_env):
    out = tmp_path / "run"
    _killed_during_generation(tiny_model_dir, tiny_backend, out, monkeypatch)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "safereason.cli", *args], capture_output=True, text=True,
                              env=cli_env, timeout=300)

    proc = cli("metrics", str(out))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "8 of 12 samples and 8 judgments" in proc.stderr and "resume" in proc.stderr
    proc = cli("report", str(out), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and "metrics" in proc.stderr  # no metrics.json yet
    proc = cli("judge", str(out), "--judge", "rs-match", "--no-progress")
    assert proc.returncode == 2 and "8 of 12 samples are missing;" in proc.stderr
    proc = cli("metrics", str(out), "--allow-partial")
    assert proc.returncode == 0, proc.stderr
    assert "PARTIAL (8 samples, 0 judgments missing)" in proc.stdout
    proc = cli("report", str(out), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and "--allow-partial" in proc.stderr
    proc = cli("report", str(out), "--out", str(tmp_path / "r.html"), "--allow-partial")
    assert proc.returncode == 0, proc.stderr
    assert "PARTIAL" in (tmp_path / "r.html").read_text()


def test_judge_parts_are_asked_of_its_judges_only(tiny_model_dir, tiny_backend, tmp_path, hash_judge):
    out = tmp_path / "run"
    evaluate(_cfg(tiny_model_dir, out, parts=["full"]), backend=tiny_backend, progress=False)
    name = hash_judge(3)
    res = judge_run(out, [name], parts=["thinking"], progress=False)
    assert res.partial is None and set(res.metrics[name]) == {"thinking", "full"}
    assert set(res.metrics["rs-match"]) == {"full"}  # not asked for thinking: not missing either
    assert metrics_run(out).partial is None


def test_a_run_killed_before_its_first_sample(tiny_model_dir, tiny_backend, tmp_path, monkeypatch, cli_env):
    """report names it incomplete and says how to resume; metrics --allow-partial marks metrics.json PARTIAL
    even though no judge has a verdict yet (it used to write ``{}``)."""
    out = tmp_path / "run"

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_backend, "generate", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate(_cfg(tiny_model_dir, out), backend=tiny_backend, progress=False)
    assert not (out / "samples.jsonl").exists()

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "safereason.cli", *args], capture_output=True, text=True,
                              env=cli_env, timeout=300)

    proc = cli("report", str(out), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is an incomplete safereason run" in proc.stderr and "not a safereason run dir" not in proc.stderr
    assert "`safereason eval`" in proc.stderr and "resume" in proc.stderr and "--allow-partial" in proc.stderr
    proc = cli("metrics", str(out), "--allow-partial")
    assert proc.returncode == 0, proc.stderr
    written = json.loads((out / "metrics.json").read_text())
    marked = {(j, p): e["partial"]["missing_samples"] for j, parts in written.items() for p, e in parts.items()}
    assert {j for j, _ in marked} == {"rs-match"} and {"thinking", "full"} <= {p for _, p in marked}
    assert set(marked.values()) == {12}
    assert written["rs-match"]["full"]["safe@1"] is None and written["rs-match"]["full"]["kind"] == ""
    proc = cli("report", str(out), "--out", str(tmp_path / "r.html"), "--allow-partial")
    assert proc.returncode == 0, proc.stderr
    assert "PARTIAL" in (tmp_path / "r.html").read_text()
