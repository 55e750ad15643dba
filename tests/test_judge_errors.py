"""Judge errors are not final: re-runs retry them, a later decided verdict wins, and commands report the count."""

import json
import subprocess
import sys
import textwrap

import pytest

from safereason.judges import JUDGES
from safereason.judging import attach_judgments
from safereason.records import Sample, Verdict
from safereason.rundir import RunDir
from safereason.runner import evaluate, judge_run


class Outage:
    """A remote judge whose service is down while ``down`` is set; counts the items it is sent."""

    outputs = ("unsafe",)
    down = True
    sent = 0

    def identity(self):
        return {"name": "outage"}

    def judge(self, items):
        type(self).sent += len(items)
        if type(self).down:
            return [Verdict.failed("HTTP 503: service unavailable") for _ in items]
        return [Verdict(unsafe=len(i.text) % 2 == 0, score=0.5) for i in items]


@pytest.fixture()
def outage():
    Outage.down, Outage.sent = True, 0
    JUDGES.add("outage", Outage)
    yield Outage
    JUDGES._items.pop("outage", None)


def _cfg(model_dir, out, **kw):
    return dict(model=str(model_dir), benchmark="smoke", k=2, max_new_tokens=6, temperature=1.0, batch_size=4, seed=1,
                limit=4, think_prefill="<think>\n", n_bootstrap=0, out=str(out), **kw)


def test_judge_rerun_retries_errors_and_the_decided_verdict_wins(tiny_model_dir, tiny_backend, tmp_path, outage):
    out = tmp_path / "run"
    evaluate(_cfg(tiny_model_dir, out), backend=tiny_backend, progress=False)
    first = judge_run(out, ["outage"], progress=False)
    n = outage.sent
    assert n > 0 and sum(first.judge_errors["outage"].values()) == n
    assert first.metrics["outage"]["full"]["n_errors"] > 0 and first.metrics["outage"]["full"]["safe@1"] is None
    assert json.loads((out / "manifest.json").read_text())["judge_errors"] == first.judge_errors
    assert "judge errors" in (out / "summary.md").read_text()

    outage.down = False
    second = judge_run(out, ["outage"], progress=False)
    assert outage.sent == 2 * n  # every errored item was sent again, nothing else
    assert second.judge_errors == {} and second.metrics["outage"]["full"]["n_errors"] == 0
    assert second.metrics["outage"]["full"]["safe@1"] is not None
    assert "judge_errors" not in json.loads((out / "manifest.json").read_text())
    log = [json.loads(x) for x in (out / "state" / "judgments.jsonl").read_text().splitlines()]
    assert sum(r["judge"] == "outage" for r in log) == 2 * n  # append-only: the errors stay in the log

    judge_run(out, ["outage"], progress=False)
    assert outage.sent == 2 * n  # a healthy run sends no request


def test_eval_rerun_retries_judge_errors(tiny_model_dir, tiny_backend, tmp_path, outage):
    cfg = _cfg(tiny_model_dir, tmp_path / "run", judges=["outage"])
    assert sum(evaluate(cfg, backend=tiny_backend, progress=False).judge_errors["outage"].values()) == outage.sent
    outage.down = False
    assert evaluate(cfg, backend=tiny_backend, progress=False).judge_errors == {}


def _sample():
    return Sample(prompt_id="p", sample_index=0, prompt="x", prompt_text="x", response="r", thinking=None,
                  answer="r", thinking_closed=False, split_status="no_thinking", finish_reason="stop",
                  n_prompt_tokens=1, n_response_tokens=1)


@pytest.mark.parametrize(("logged", "wins"), [
    (["safe", "error:a", "unsafe"], "safe"),  # first decided verdict wins (a re-judged chunk after a crash)
    (["error:a", "unsafe", "safe"], "unsafe"),  # a decided verdict replaces an earlier error
    (["unsafe", "error:a"], "unsafe"),  # a later error never replaces a decision
    (["error:a", "error:b"], "error:b"),  # of errors only, the latest
])
def test_verdict_precedence(tmp_path, logged, wins):
    run = RunDir(tmp_path)
    run.state.mkdir()

    def verdict(tag):
        v = Verdict.failed(tag) if tag.startswith("error") else Verdict(unsafe=tag == "unsafe")
        return v.model_dump(mode="json")

    run.judgments.append({"judge": "j", "prompt_id": "p", "sample_index": 0, "part": "answer", "verdict": verdict(t)}
                         for t in logged)
    s = _sample()
    attach_judgments(run, [s], ["answer"])
    v = s.judgments["j"]["answer"]
    assert (v.error if v.error else ("unsafe" if v.unsafe else "safe")) == wins


WRAPPED_CLI = textwrap.dedent("""
    import sys
    from safereason.judges import JUDGES
    from safereason.records import Verdict

    class Down:
        outputs = ("unsafe",)
        def identity(self):
            return {"name": "down"}
        def judge(self, items):
            return [Verdict.failed("HTTP 503") for _ in items]

    JUDGES.add("down", Down)
    from safereason.cli import main
    sys.argv = ["safereason", *sys.argv[1:]]
    main()
""")


def test_cli_ends_with_the_error_count_and_exits_3_above_the_threshold(tiny_model_dir, tiny_backend, tmp_path,
                                                                      cli_env):
    out = tmp_path / "run"
    evaluate(_cfg(tiny_model_dir, out), backend=tiny_backend, progress=False)

    def cli(*args):
        return subprocess.run([sys.executable, "-c", WRAPPED_CLI, *args], capture_output=True, text=True,
                              env=cli_env, timeout=300)

    proc = cli("judge", str(out), "--judge", "down", "--no-progress")
    assert proc.returncode == 3, proc.stderr
    errors = json.loads((out / "manifest.json").read_text())["judge_errors"]["down"]
    n = errors["thinking"] + errors["full"]
    line = f"{n} judge errors (down x thinking: {errors['thinking']}, down x full: {errors['full']}); re-run to retry"
    assert line in proc.stderr
    assert "down" in json.loads((out / "metrics.json").read_text())  # results are written all the same
    proc = cli("metrics", str(out), "--max-judge-errors", str(n))
    assert proc.returncode == 0, proc.stderr
    assert line in proc.stderr
    assert cli("metrics", str(out), "--max-judge-errors", str(n - 1)).returncode == 3
