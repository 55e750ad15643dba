"""Ctrl-C: the CLI prints the resume hint and exits 130; the run dir is left resumable and unlocked."""

import signal
import subprocess
import sys
import time


def test_sigint_prints_resume_hint_and_exits_130(tiny_model_dir, tmp_path, cli_env):
    rows = ["id,prompt"] + [f"p{i:03d},Tell me about topic number {i}" for i in range(40)]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "safereason.cli", "eval", "--model", str(tiny_model_dir), "--benchmark",
            str(tmp_path / "p.csv"), "--k", "3", "--max-new-tokens", "48", "--batch-size", "4", "--no-progress",
            "--out", str(out)]
    proc = subprocess.Popen(args, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "state" / "generations.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (log.exists() and log.stat().st_size):
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted; make it longer"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; re-run the same command to resume" in err and "Aborted" not in err
    assert "Traceback" not in err, err
    metrics = subprocess.run([sys.executable, "-m", "safereason.cli", "metrics", str(out)], env=cli_env,
                             capture_output=True, text=True, timeout=300)
    assert metrics.returncode == 2 and "incomplete" in metrics.stderr and "in use" not in metrics.stderr
