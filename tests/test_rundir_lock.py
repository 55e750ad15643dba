"""One writer per run dir: a second eval/judge/metrics fails at once naming the holder; a kill frees the dir."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from safereason.rundir import RunDir, RunDirBusyError

HOLD = textwrap.dedent("""
    import sys, time
    from safereason.rundir import RunDir
    with RunDir(sys.argv[1]).lock(sys.argv[2]):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture()
def holder():
    """Start a second process that holds a run dir's lock: ``proc = holder(path, command)``."""
    procs: list[subprocess.Popen] = []

    def start(path, command="eval"):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), command], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _made_run(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    run.check_identity({"generation_hash": "x", "n_prompts": 1})
    return run


def test_second_writer_fails_at_once_naming_the_holder(tmp_path, holder):
    run = _made_run(tmp_path)
    proc = holder(run.path, "judge")
    with pytest.raises(RunDirBusyError) as e, run.lock("metrics"):
        pass
    msg = str(e.value)
    assert f"pid {proc.pid}" in msg and "`safereason judge`" in msg and "since 20" in msg and "\n" not in msg


def test_kill_9_releases_the_lock(tmp_path, holder):
    run = _made_run(tmp_path)
    proc = holder(run.path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with run.lock("eval"):  # no stale lock: the OS dropped it with the process
        info = json.loads((run.state / "lock").read_text())
        assert info["pid"] == os.getpid() and info["command"] == "safereason eval"
    assert (run.state / "lock").read_text() == ""  # released: holder details cleared


def test_lock_is_reentrant_in_one_process_and_released_on_error(tmp_path):
    run = _made_run(tmp_path)
    with pytest.raises(ValueError), run.lock("eval"), RunDir(run.path).lock("metrics"):
        raise ValueError
    with run.lock("eval"):
        pass


def test_lock_needs_a_run_dir(tmp_path):
    from safereason.errors import RunDirError

    with pytest.raises(RunDirError, match="not a safereason run dir"), RunDir(tmp_path).lock("metrics"):
        pass
    assert not (tmp_path / "state").exists()  # nothing created in a foreign dir


def test_a_dir_left_with_only_the_lock_file_is_reusable(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    with run.lock("eval"):
        pass  # a start that failed before its first record
    RunDir(tmp_path / "run").create()


def test_evaluate_judge_and_metrics_refuse_a_held_run_dir(tiny_model_dir, tiny_backend, tmp_path, holder):
    from safereason.runner import evaluate, judge_run, metrics_run

    cfg = dict(model=str(tiny_model_dir), benchmark="smoke", k=1, max_new_tokens=4, limit=2, n_bootstrap=0,
               out=str(tmp_path / "run"))
    evaluate(cfg, backend=tiny_backend, progress=False)
    before = (tmp_path / "run" / "state" / "generations.jsonl").read_bytes()
    proc = holder(tmp_path / "run")

    def boom(*a, **k):
        raise AssertionError("a refused writer must not generate")

    for call in (lambda: evaluate(cfg, backend=boom, progress=False),
                 lambda: judge_run(tmp_path / "run", ["rs-match"], progress=False),
                 lambda: metrics_run(tmp_path / "run")):
        with pytest.raises(RunDirBusyError, match=f"pid {proc.pid}"):
            call()
    assert (tmp_path / "run" / "state" / "generations.jsonl").read_bytes() == before


def test_cli_second_writer_is_refused_in_one_line(tiny_model_dir, tmp_path, holder, cli_env):
    out = tmp_path / "run"
    _made_run(tmp_path)
    proc = holder(out)
    for args in (["eval", "--model", str(tiny_model_dir), "--benchmark", "smoke", "--limit", "1", "--k", "1",
                  "--out", str(out), "--no-progress"], ["metrics", str(out)]):
        cli = subprocess.run([sys.executable, "-m", "safereason.cli", *args], capture_output=True, text=True,
                             env=cli_env, timeout=300)
        assert cli.returncode == 2
        err = cli.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"pid {proc.pid}" in err and "in use" in err
    assert not (out / "state" / "generations.jsonl").exists()
