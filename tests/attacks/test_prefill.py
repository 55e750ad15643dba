"""The prefilling attack: rows that make `eval` start the answer (or the thought) with the target."""

import json
import subprocess
import sys

import pytest

from safereason.attacks.prefill import attack_prefill
from safereason.data.benchmarks import load_benchmark
from safereason.errors import ConfigError
from safereason.reasoning import get_format
from safereason.reasoning.controls import prompt_prefill
from safereason.runner import evaluate

R1 = get_format("r1")


def _bench(tmp_path):
    rows = [{"id": f"b{i}", "prompt": f"do bad thing {i}", "target": f"Sure, here is bad thing {i}"} for i in range(2)]
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prompt_prefill_places_the_text():
    meta = {"prefill": "Sure,", "prefill_where": "answer"}
    assert prompt_prefill(R1, "[user] x\n<think>\n", meta) == "\n</think>\n\nSure,"  # open thought closed, as ZeroThink
    assert prompt_prefill(R1, "[user] x\n", meta) == "Sure,"
    thought = {"prefill": "Sure,", "prefill_where": "thought"}
    assert prompt_prefill(R1, "[user] x\n<think>\n", thought) == "Sure,"
    assert prompt_prefill(R1, "[user] x\n", thought) == "<think>\nSure,"
    assert prompt_prefill(R1, "x", {"prefill": "Sure,"}) == "Sure,"  # no place given: appended as is
    assert prompt_prefill(R1, "x", {"category": "c"}) == ""
    with pytest.raises(ConfigError, match="thought prefill needs a reasoning format"):
        prompt_prefill(get_format("none"), "x", thought)
    with pytest.raises(ConfigError, match="prefill_where"):
        prompt_prefill(R1, "x", {"prefill": "Sure,", "prefill_where": "middle"})


@pytest.mark.parametrize("where", ["answer", "thought"])
def test_eval_of_the_file_starts_with_the_target(tmp_path, tiny_model_dir, tiny_backend, where):
    res = attack_prefill(_bench(tmp_path), tmp_path / "atk", where=where)
    assert [r.meta for r in res] == [{"prefill": f"Sure, here is bad thing {i}", "prefill_where": where}
                                     for i in range(2)]
    run = evaluate(dict(model=str(tiny_model_dir), benchmark=str(tmp_path / "atk" / "adversarial.jsonl"), k=1,
                        max_new_tokens=4, think_prefill="<think>\n", n_bootstrap=10, out=str(tmp_path / "run")),
                   backend=tiny_backend, progress=False)
    by_id = {s.prompt_id: s for s in run.samples}
    for i in range(2):
        text = by_id[f"b{i}"].prompt_text
        expected = "<think>\n\n</think>\n\n" if where == "answer" else "<think>\n"
        assert text.endswith(expected + f"Sure, here is bad thing {i}"), text
        assert by_id[f"b{i}"].meta["attack"]["name"] == "prefill"
        assert by_id[f"b{i}"].meta["behavior"] == f"do bad thing {i}"


def test_prefill_cli_then_eval_cli(tmp_path, cli_env, tiny_model_dir):
    out = tmp_path / "atk"
    cli = [sys.executable, "-m", "safereason.cli"]
    proc = subprocess.run([*cli, "attack", "prefill", "--benchmark", "advbench", "--limit", "2", "--out", str(out)],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = load_benchmark(str(out / "adversarial.jsonl")).prompts
    assert rows[0].meta["prefill"] == rows[0].meta["target"] and rows[0].meta["prefill_where"] == "answer"
    proc = subprocess.run([*cli, "eval", "--model", str(tiny_model_dir), "--benchmark", str(out / "adversarial.jsonl"),
                           "--k", "1", "--max-new-tokens", "2", "--n-bootstrap", "0", "--no-progress",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt_text"].endswith(rows[0].meta["target"])


def test_bad_where_is_one_error_line(tmp_path, cli_env):
    proc = subprocess.run([sys.executable, "-m", "safereason.cli", "attack", "prefill", "--benchmark", "advbench",
                           "--where", "middle", "--out", str(tmp_path / "a")], capture_output=True, text=True,
                          env=cli_env, timeout=300)
    assert proc.returncode == 2 and "--where must be answer or thought" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "a").exists()
