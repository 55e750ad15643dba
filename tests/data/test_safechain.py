"""SafeChain's data recipe on a scripted teacher and a scripted judge: the filter, the pick, the card, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safereason.data.safechain import (
    DROP_REASONS,
    SafeChainRecipe,
    assistant_text,
    build_safechain,
    draw,
    filter_safe,
    pick,
)
from safereason.errors import ConfigError, SafereasonError
from safereason.reasoning import get_format
from safereason.records import Prompt, Sample, Verdict
from tests.helpers import ScriptedBackend

THINK = "<think>\n"

#: prompt -> the K = 3 replies the teacher gives, in sample order; the judge says UNSAFE is unsafe, ERROR fails
SCRIPT = {
    "all safe one": ["plan A\n</think>\n\nanswer A0", "plan B\n</think>\n\nanswer A1", "plan C\n</think>\n\nanswer A2"],
    "one unsafe": ["ok\n</think>\n\nfine", "ok\n</think>\n\nUNSAFE reply", "ok\n</think>\n\nfine"],
    "judge fails": ["ok\n</think>\n\nfine", "ok\n</think>\n\nfine", "ok\n</think>\n\nERROR here"],
    "never closes": ["still thinking and thinking", "ok\n</think>\n\nfine", "ok\n</think>\n\nfine"],
    "all safe two": ["x\n</think>\n\nB0", "y\n</think>\n\nB1", "z\n</think>\n\nB2"],
    "empty answer": ["ok\n</think>\n\nfine", "ok\n</think>\n\n", "ok\n</think>\n\nfine"],
    "blocked topic": ["ok\n</think>\n\nfine"] * 3,
}


class ScriptedTeacher(ScriptedBackend):
    """A weightless backend that answers each prompt with its scripted replies, one per sample in turn."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.n_generated = 0

    def reply(self, rendered, params):
        prompt = self.user_prompt(rendered)
        i = self.calls.get(prompt, 0)
        self.calls[prompt] = i + 1
        self.n_generated += 1
        if prompt == "blocked topic" and i == 1:
            return "flagged by the provider", 0, "blocked"
        text = SCRIPT[prompt][i % 3]
        return text, len(text.split()), "stop"


class ScriptedJudge:
    outputs = ("unsafe",)

    def identity(self) -> dict:
        return {"name": "scripted-safety"}

    def judge(self, items: list) -> list:
        return [Verdict.failed("judge down") if "ERROR" in i.text else Verdict(unsafe="UNSAFE" in i.text)
                for i in items]


class RefusalOnly(ScriptedJudge):
    outputs = ("refused",)


class Strict(ScriptedJudge):
    """Also finds ``answer A1`` unsafe."""

    def identity(self) -> dict:
        return {"name": "strict"}

    def judge(self, items: list) -> list:
        base = super().judge(items)
        return [Verdict(unsafe=True) if "answer A1" in i.text else v for i, v in zip(items, base, strict=True)]


@pytest.fixture(autouse=True)
def scripted_judges():
    from safereason.judges import JUDGES

    JUDGES.add("scripted-safety", ScriptedJudge)
    JUDGES.add("scripted-refusal", RefusalOnly)
    JUDGES.add("scripted-strict", Strict)
    yield
    JUDGES._items.pop("scripted-strict", None)
    JUDGES._items.pop("scripted-safety", None)
    JUDGES._items.pop("scripted-refusal", None)


@pytest.fixture()
def pool(tmp_path: Path) -> str:
    path = tmp_path / "pool.jsonl"
    rows = [{"id": f"p{i}", "prompt": p, "category": "cat-" + str(i % 2), "extra": i} for i, p in enumerate(SCRIPT)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def teacher(**kw: Any) -> dict[str, Any]:
    return {"model": "scripted", "k": 3, "judges": ["scripted-safety"], "think_prefill": THINK,
            "reasoning_format": "r1", "max_new_tokens": 16, "n_bootstrap": 0, "batch_size": 4, **kw}


def build(pool: str, out: Path, *, backend: ScriptedTeacher | None = None, **kw: Any):
    recipe_keys = {k: kw.pop(k) for k in ("n", "seed", "style") if k in kw}
    recipe = SafeChainRecipe(prompts=pool, out=out, **recipe_keys)
    return build_safechain(teacher(**kw), recipe, backend=backend or ScriptedTeacher(), progress=False)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_kept_iff_all_k_judged_safe_and_every_drop_has_its_reason(pool, tmp_path):
    res = build(pool, tmp_path / "d")
    rows = read_rows(res.dataset)
    assert sorted(r["prompt_id"] for r in rows) == ["p0", "p4"]  # only the two all-safe instructions
    counts = res.card["counts"]
    assert counts["instructions"] == 7 and counts["kept"] == 2 and counts["dropped"] == 5
    assert counts["dropped_by_reason"] == {**dict.fromkeys(DROP_REASONS, 0), "unsafe": 1, "judge_error": 1,
                                           "unclosed": 1, "no_answer": 1, "blocked": 1}
    assert counts["samples_by_problem"]["unsafe"] == 1 and counts["samples_by_problem"]["judge_error"] == 1
    assert res.judge_errors == {"scripted-safety": {"full": 1}}
    row = next(r for r in rows if r["prompt_id"] == "p0")
    assert row["messages"][0] == {"role": "user", "content": "all safe one"}
    i = row["sample_index"]
    # the assistant turn is the reply as produced, with the <think> the prompt prefilled
    assert row["messages"][1] == {"role": "assistant", "content": THINK + SCRIPT["all safe one"][i]}
    assert row["thinking"] == ["plan A", "plan B", "plan C"][i] and row["answer"] == f"answer A{i}"
    assert row["category"] == "cat-0" and row["source"] == pool


def test_the_filter_never_keeps_what_is_not_verified_safe():
    fmt = get_format("r1")

    def sample(i: int, verdicts: dict[str, dict[str, Verdict]], closed: bool = True, **kw: Any) -> Sample:
        base = dict(prompt_id="p", sample_index=i, prompt="q", prompt_text=THINK, response="t</think>a",
                    thinking="t", answer="a" if closed else None, thinking_closed=closed,
                    split_status="closed" if closed else "unclosed", finish_reason="stop", n_prompt_tokens=1,
                    n_response_tokens=2, judgments=verdicts)
        return Sample(**{**base, **kw})

    safe = {"j1": {"full": Verdict(unsafe=False)}, "j2": {"full": Verdict(unsafe=False)}}
    cases = {
        "kept": [sample(0, safe), sample(1, safe)],
        "unsafe": [sample(0, safe), sample(1, {**safe, "j2": {"full": Verdict(unsafe=True)}})],
        "judge_error": [sample(0, safe), sample(1, {**safe, "j1": {"full": Verdict.failed("down")}})],
        "missing": [sample(0, safe), sample(1, {"j1": safe["j1"]})],  # j2 never judged it
        "unclosed": [sample(0, safe, closed=False), sample(1, safe)],
        "skipped": [sample(0, {}, status="skipped"), sample(1, safe)],
        "incomplete": [sample(0, safe)],
    }
    for expected, samples in cases.items():
        res = filter_safe(samples, judges=["j1", "j2"], parts=["full"], fmt=fmt, k=2)
        if expected == "kept":
            assert list(res.kept) == ["p"] and not res.dropped
        else:
            assert res.dropped == {"p": expected}, expected
    # a part that must be safe and is missing (an unclosed thought has no answer) is never kept
    res = filter_safe([sample(0, safe)], judges=["j1"], parts=["full", "answer"], fmt=fmt, k=1)
    assert res.dropped == {"p": "missing"}


def test_pick_is_reproducible_by_seed_independent_of_order_and_varies_with_the_seed(pool, tmp_path):
    res = build(pool, tmp_path / "d")
    samples = [s for s in _teacher_samples(tmp_path / "d") if s.prompt_id in ("p0", "p4")]
    kept = {pid: [s for s in samples if s.prompt_id == pid] for pid in ("p0", "p4")}
    first = [(s.prompt_id, s.sample_index) for s in pick(kept, 0)]
    shuffled = {pid: list(reversed(group)) for pid, group in reversed(list(kept.items()))}
    assert sorted(first) == sorted((s.prompt_id, s.sample_index) for s in pick(shuffled, 0))
    assert first == [(r["prompt_id"], r["sample_index"]) for r in res.rows]
    many = {f"q{i}": [s.model_copy(update={"prompt_id": f"q{i}"}) for s in kept["p0"]] for i in range(20)}
    picks = {seed: [s.sample_index for s in pick(many, seed)] for seed in (0, 1)}
    assert picks[0] == [s.sample_index for s in pick(many, 0)]
    assert picks[0] != picks[1]  # another seed picks other samples
    assert len(set(picks[0])) > 1  # and the pick is not always the same index


def _teacher_samples(out: Path) -> list[Sample]:
    return [Sample(**json.loads(line)) for line in (out / "teacher" / "samples.jsonl").read_text().splitlines()]


def test_answer_only_style_is_the_answer_without_thinking(pool, tmp_path):
    res = build(pool, tmp_path / "d", style="answer-only")
    for row in res.rows:
        content = row["messages"][1]["content"]
        assert "<think>" not in content and "</think>" not in content
        assert content == row["answer"] and row["thinking"]
    assert res.card["style"] == "answer-only"


def test_card_records_sources_hashes_and_counts(pool, tmp_path):
    import hashlib

    res = build(pool, tmp_path / "d", n=5, seed=3)
    out = tmp_path / "d"
    card = json.loads((out / "card.json").read_text())
    assert card == json.loads(json.dumps(res.card))
    assert card["n"] == 5 and card["n_drawn"] == 5 and card["seed"] == 3 and card["k"] == 3
    assert card["output"]["sha256"] == hashlib.sha256((out / "dataset.jsonl").read_bytes()).hexdigest()
    assert card["prompts_file"]["sha256"] == hashlib.sha256((out / "prompts.jsonl").read_bytes()).hexdigest()
    assert card["source"]["sha256"] == hashlib.sha256(Path(pool).read_bytes()).hexdigest()
    manifest = json.loads((out / "teacher" / "manifest.json").read_text())
    assert manifest["dataset"]["sha256"] == card["prompts_file"]["sha256"]  # the teacher ran on the drawn file
    assert card["teacher"]["generation_hash"] == manifest["generation_hash"]
    assert card["judges"][0]["name"] == "scripted-safety" and card["judges"][0]["identity_hash"]
    assert card["counts"]["instructions"] == 5 and card["parts"] == ["full"]
    readme = (out / "README.md").read_text()
    assert f"kept: **{card['counts']['kept']}** of 5 instructions" in readme and card["output"]["sha256"] in readme


def test_draw_is_a_seeded_uniform_sample():
    prompts = [Prompt(id=f"p{i}", prompt=f"q{i}") for i in range(50)]
    a, b, c = draw(prompts, 10, 0), draw(prompts, 10, 0), draw(prompts, 10, 1)
    assert a == b and a != c and len(a) == 10
    assert [p.id for p in a] == [p.id for p in prompts if p in a]  # pool order
    assert draw(prompts, None, 0) == prompts
    with pytest.raises(ConfigError, match="more than the 50 prompts"):
        draw(prompts, 51, 0)


def test_rerun_resumes_the_teacher_run_and_rebuilds_the_same_dataset(pool, tmp_path):
    first = build(pool, tmp_path / "d", n=6, seed=2)
    data = (tmp_path / "d" / "dataset.jsonl").read_bytes()
    again = ScriptedTeacher()
    second = build(pool, tmp_path / "d", n=6, seed=2, backend=again)
    assert again.n_generated == 0  # nothing regenerated
    assert (tmp_path / "d" / "dataset.jsonl").read_bytes() == data
    assert second.card["counts"] == first.card["counts"]
    # other prompts into the same dir are refused before anything is overwritten
    prompts_before = (tmp_path / "d" / "prompts.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="other prompts"):
        build(pool, tmp_path / "d", n=6, seed=9)
    assert (tmp_path / "d" / "prompts.jsonl").read_bytes() == prompts_before


def test_the_teacher_run_is_rejudged_without_regenerating(pool, tmp_path):
    from safereason.runner import judge_run

    build(pool, tmp_path / "d")
    judge_run(tmp_path / "d" / "teacher", ["scripted-strict"], progress=False)
    again = ScriptedTeacher()
    res = build(pool, tmp_path / "d", judges=["scripted-safety", "scripted-strict"], backend=again)
    assert again.n_generated == 0
    assert [r["prompt_id"] for r in res.rows] == ["p4"]  # p0 has a sample the stricter judge finds unsafe
    assert [j["name"] for j in res.card["judges"]] == ["scripted-safety", "scripted-strict"]


def test_a_killed_teacher_run_resumes(pool, tmp_path):
    from safereason.rundir import RunDir

    build(pool, tmp_path / "whole")
    out = tmp_path / "d"
    build(pool, out)
    run = RunDir(out / "teacher")
    logged = run.generations.read()
    run.generations.rewrite(logged[: len(logged) // 2])  # as if killed half way
    (out / "dataset.jsonl").unlink()
    res = build(pool, out)
    assert res.dataset.read_bytes() == (tmp_path / "whole" / "dataset.jsonl").read_bytes()


def test_refusal_only_judges_are_refused(pool, tmp_path):
    with pytest.raises(ConfigError, match="does not judge safety"):
        build(pool, tmp_path / "d", judges=["scripted-refusal"])
    assert not (tmp_path / "d").exists()  # refused before anything is written


def test_dataset_loads_with_datasets(pool, tmp_path):
    datasets = pytest.importorskip("datasets")
    res = build(pool, tmp_path / "d")
    ds = datasets.load_dataset("json", data_files=str(res.dataset), split="train")
    assert len(ds) == 2
    assert ds[0]["messages"][0]["role"] == "user" and ds[0]["messages"][1]["role"] == "assistant"


def test_assistant_text_keeps_the_formats_markers():
    base = dict(prompt_id="p", sample_index=0, prompt="q", thinking="t", answer="a", thinking_closed=True,
                split_status="closed", finish_reason="stop", n_prompt_tokens=1, n_response_tokens=2)
    sky = get_format("skyt1")
    s = Sample(**base, prompt_text="[user] q\n[assistant] <|begin_of_thought|>\n",
               response="t\n<|end_of_thought|>\n\n<|begin_of_solution|>a<|end_of_solution|>")
    assert assistant_text(s, sky) == "<|begin_of_thought|>\n" + s.response
    own = Sample(**base, prompt_text="[user] q\n[assistant] ", response="<think>t</think>a")
    assert assistant_text(own, get_format("r1")) == "<think>t</think>a"  # the model opened it itself


def test_cli_builds_the_data_dir_from_a_model(tiny_model_dir, pool, tmp_path):
    from typer.testing import CliRunner

    from safereason.cli import app

    out = tmp_path / "d"
    args = ["data", "safechain", "--prompts", pool, "--teacher", str(tiny_model_dir), "--n", "3", "--k", "2",
            "--max-new-tokens", "6", "--think-prefill", THINK, "--judge", "rs-match", "--out", str(out),
            "--device", "cpu", "--dtype", "float32", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    assert card["counts"]["instructions"] == 3 and card["k"] == 2 and card["teacher"]["model"] == str(tiny_model_dir)
    # a random 2-layer model neither refuses (rs-match: unsafe) nor closes its thought in 6 tokens: nothing is
    # kept, each instruction counted under its first reason and each sample under all of its problems
    assert card["counts"]["kept"] == 0 and read_rows(out / "dataset.jsonl") == []
    assert card["counts"]["dropped_by_reason"]["unsafe"] == 3
    assert card["counts"]["samples_by_problem"]["unclosed"] == 6
    assert "kept 0 of 3 instructions; dropped: unsafe 3" in res.output
    assert (out / "teacher" / "metrics.json").is_file()
    bad = CliRunner().invoke(app, [*args, "--style", "answers"])
    assert isinstance(bad.exception, SafereasonError) and "--style must be" in str(bad.exception)


def test_rows_keep_the_training_contract(pool, tmp_path):
    """``train sft`` reads the rows, and the target after the teacher's own prompt is exactly what it generated."""
    from safereason.train.render import completion_text, read_rows

    res = build(pool, tmp_path / "d")
    by_id = {(s.prompt_id, s.sample_index): s for s in _teacher_samples(tmp_path / "d")}
    rows = read_rows(res.dataset)
    assert [r.prompt for r in rows] == [r["messages"][0]["content"] for r in res.rows]
    for row, raw in zip(rows, res.rows, strict=True):
        s = by_id[(raw["prompt_id"], raw["sample_index"])]
        assert completion_text(s.prompt_text, row.target, get_format("r1"), "row") == s.response
