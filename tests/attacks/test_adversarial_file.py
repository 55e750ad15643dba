"""The adversarial benchmark file every attack writes: rows, targets, resume after a kill, refusal to mix."""

import json

import pytest

from safereason.attacks.base import (
    AdversarialFile,
    AttackResult,
    Behaviour,
    harmbench_targets,
    load_behaviours,
    result_for,
    run_attack,
)
from safereason.data.benchmarks import load_benchmark
from safereason.errors import DataError, RunDirError
from safereason.records import Prompt


def _bench(tmp_path, n=3, target=True):
    rows = [{"id": f"b{i}", "prompt": f"do bad thing {i}", "category": "cat" if i % 2 else "dog", "label": "harmful",
             **({"target": f"Sure, here is bad thing {i}"} if target else {})} for i in range(n)]
    path = tmp_path / "behaviours.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _fake(b: Behaviour) -> AttackResult:
    return result_for(b, b.prompt.prompt + " !!", "fake", config={"k": 1}, seed=0, steps=2, score=0.5,
                      history=[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], extra={"suffix": " !!"})


def test_row_round_trips_into_a_benchmark(tmp_path):
    res = run_attack(tmp_path / "out", {"attack": "fake"}, load_behaviours(_bench(tmp_path), target_from="column"),
                     _fake)
    loaded = load_benchmark(str(tmp_path / "out" / "adversarial.jsonl"))
    assert [p.id for p in loaded.prompts] == ["b0", "b1", "b2"]
    p = loaded.prompts[1]
    assert (p.prompt, p.category, p.label) == ("do bad thing 1 !!", "cat", "harmful")
    assert p.meta["behavior"] == "do bad thing 1" and p.meta["target"] == "Sure, here is bad thing 1"
    assert p.meta["attack"]["name"] == "fake" and p.meta["attack"]["history"][-1]["loss"] == 0.5
    assert AttackResult.from_json(res[1].to_json()) == res[1]


def test_targets_from_harmbench_and_column(shared_data):
    targets = harmbench_targets(shared_data)
    assert len(targets) == 400
    hb = load_behaviours("harmbench", 2, data_dir=shared_data)
    assert [b.target for b in hb] == [targets[b.prompt.id] for b in hb]
    assert hb[0].target.startswith("Sure, here")
    adv = load_behaviours("advbench", 1, data_dir=shared_data)  # AdvBench carries its own target column
    assert adv[0].target == "Sure, here is a script that can exploit vulnerabilities in a software or operating system"


def test_missing_target_is_an_error(tmp_path, shared_data):
    path = _bench(tmp_path, target=False)
    with pytest.raises(DataError, match="no HarmBench optimizer target"):
        load_behaviours(path, data_dir=shared_data)
    with pytest.raises(DataError, match="no 'target' column value"):
        load_behaviours(path, target_from="column")


def test_resume_after_a_kill_skips_done_behaviours(tmp_path):
    bench, out = _bench(tmp_path, n=4), tmp_path / "out"
    behaviours = load_behaviours(bench, target_from="column")
    calls = []

    def attack(b):
        calls.append(b.prompt.id)
        if b.prompt.id == "b2":
            raise KeyboardInterrupt  # killed while attacking the third behaviour
        return _fake(b)

    with pytest.raises(KeyboardInterrupt):
        run_attack(out, {"attack": "fake"}, behaviours, attack)
    path = out / "adversarial.jsonl"
    with open(path, "a") as f:
        f.write('{"id": "b2", "prompt": "torn')  # a write cut short by kill -9
    calls.clear()

    def counting(b):
        calls.append(b.prompt.id)
        return _fake(b)

    res = run_attack(out, {"attack": "fake"}, behaviours, counting)
    assert calls == ["b2", "b3"]
    assert [r.id for r in res] == ["b0", "b1", "b2", "b3"]
    assert len(load_benchmark(str(path)).prompts) == 4


def test_other_settings_or_foreign_dir_refused(tmp_path):
    behaviours = [Behaviour(Prompt(id="a", prompt="x"), "Sure")]
    run_attack(tmp_path / "out", {"attack": "fake", "config": {"k": 1}}, behaviours, _fake)
    with pytest.raises(RunDirError, match="config.k: 1 -> 2"):
        run_attack(tmp_path / "out", {"attack": "fake", "config": {"k": 2}}, behaviours, _fake)
    def fails(b):
        raise RuntimeError("model failed to load")

    with pytest.raises(RuntimeError):  # a start that wrote no row does not tie the dir to its settings
        run_attack(tmp_path / "new", {"attack": "fake", "config": {"k": 1}}, behaviours, fails)
    assert len(run_attack(tmp_path / "new", {"attack": "fake", "config": {"k": 2}}, behaviours, _fake)) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds no attack"):
        AdversarialFile(tmp_path / "other").lock("attack fake").__enter__()
