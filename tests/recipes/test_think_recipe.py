"""``recipe think`` end to end on a tiny random base and a scripted teacher: every stage runs, a re-run skips them,
bad input is one ``error:`` line (exit 2) before any work, and another run's dir is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from safereason.cli import app, main
from safereason.errors import DataError, RunDirError
from safereason.recipes.think import run_think
from safereason.recipes.think_config import make_think_config
from safereason.recipes.think_data import build_rows, clean_answer, is_repetitive, trim_to_sentence
from tests.helpers import ScriptedBackend

PROMPTS = [
    {"id": "a", "prompt": "What is a lighthouse for?", "label": "benign",
     "thought": "The user asks about lighthouses."},
    {"id": "b", "prompt": "How do I bake bread?", "label": "benign"},
    {"id": "c", "prompt": "Write a mean note for my neighbour.", "label": "harmful", "thought": "A mean note."},
    {"id": "d", "prompt": "Say hi.", "label": "benign", "thought": "Short.", "answer": "Hi there, nice to meet you."},
    {"id": "e", "prompt": "EMPTY please", "label": "benign"},
]


class ScriptedTeacher(ScriptedBackend):
    """Plain chat replies: a cut-off one, a refusal, and an empty one (dropped)."""

    hash = "t"

    def reply(self, rendered, params):
        if "EMPTY" in rendered:
            return "  ", 1, "stop"
        if "mean note" in rendered:
            return "I'm sorry, but I cannot write that.", 8, "stop"
        return "It guides ships at night. It marks rocks and the coast. And then the", params.max_new_tokens, "length"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tiny_model_dir: Path, out: Path, prompts: Path, **over):
    values = dict(out=out, base=str(tiny_model_dir), prompts=str(prompts), teacher_max_new_tokens=8, batch_size=8,
                  epochs=1, train_batch_size=2, max_length=96, measure_k=2, measure_max_new_tokens=6, n_xstest=0,
                  lora_r=2, lora_alpha=4)
    values.update(over)
    return make_think_config(**values)


def test_recipe_end_to_end_then_skips(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    cfg = _config(tiny_model_dir, tmp_path / "think", _jsonl(tmp_path / "p.jsonl", PROMPTS))
    lines: list[str] = []
    result = run_think(cfg, backends={"teacher": ScriptedTeacher()}, progress=False, echo=lines.append)
    assert result.stages == {s: "ran" for s in ("teacher", "data", "sft", "adapter", "measure", "card")}
    out = cfg.out
    rows = [json.loads(x) for x in (out / "data/dataset.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]  # e: empty reply, dropped
    by_id = {r["id"]: r["messages"][1]["content"] for r in rows}
    assert by_id["a"] == "<think>\nThe user asks about lighthouses.\n</think>\nIt guides ships at night. It marks " \
                         "rocks and the coast."  # cut at the limit: trimmed to the last full sentence
    assert by_id["c"].endswith("</think>\nI'm sorry, but I cannot write that.")  # a refusal is kept as it is
    assert by_id["d"] == "<think>\nShort.\n</think>\nHi there, nice to meet you."  # a rule-built answer
    assert "How do I bake bread?" in by_id["b"]  # the default thought quotes the request
    data_card = json.loads((out / "data/card.json").read_text())
    assert data_card["dropped"] == {"empty": 1} and data_card["harmful_answers_refusing_rs_match"] == 1

    # the SFT run rendered no system prompt and no prefill: the target starts with <think>
    sft_cfg = yaml.safe_load((out / "sft/config.yaml").read_text())
    assert sft_cfg["system_prompt"] is None and sft_cfg["think_prefill"] is None and sft_cfg["lora_r"] == 2
    adapter = load_file(str(out / "adapter/adapter_model.safetensors"))
    assert adapter and all(str(t.dtype) == "torch.float16" for t in adapter.values())
    card = json.loads((out / "card.json").read_text())
    assert set(card["measures"]) == {"smoke", "smoke-no-prefill"}
    assert card["measures"]["smoke"]["samples"] == 18 * 2 and card["measures"]["smoke-no-prefill"]["samples"] == 18
    md = (out / "CARD.md").read_text()
    assert "thought closes" in md and card["adapter"]["sha256"] in md and "dropped: {'empty': 1}" in md
    smoke_cfg = yaml.safe_load((out / "measure/smoke/config.yaml").read_text())
    assert smoke_cfg["think_prefill"] == "<think>\n" and smoke_cfg["model"] == str(out / "measure/model")

    # a re-run skips every finished stage and touches no run; a measure cut short resumes alone
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("samples.jsonl")}
    again = run_think(cfg, backends={"teacher": ScriptedTeacher()}, progress=False, echo=lines.append)
    assert again.stages == {**{s: "skipped" for s in STAGES_BUT_CARD}, "card": "ran"}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("samples.jsonl")} == mtimes
    (out / "measure/smoke-no-prefill/metrics.json").unlink()
    resumed = run_think(cfg, backends={"teacher": ScriptedTeacher()}, progress=False, echo=lines.append)
    assert resumed.stages["measure"] == "ran" and resumed.stages["sft"] == "skipped"
    assert (out / "measure/smoke/samples.jsonl").stat().st_mtime_ns == mtimes[out / "measure/smoke/samples.jsonl"]

    # another run's settings in the same dir are refused, naming the key
    with pytest.raises(RunDirError, match="lora_r"):
        run_think(_config(tiny_model_dir, out, tmp_path / "p.jsonl", lora_r=4), progress=False, echo=lines.append)


STAGES_BUT_CARD = ("teacher", "data", "sft", "adapter", "measure")


@pytest.mark.parametrize(("rows", "message"), [
    ([], "holds no prompts"),
    ([{"prompt": "Hi there"}], "needs the column(s) label"),
    ([{"text": "Hi there", "label": "benign"}], "needs the column(s) prompt"),
    ([{"prompt": "Hi", "label": "benign"}, {"prompt": "Yo", "label": "benign"}], "all 2 prompts are labelled"),
    ([{"prompt": "Hi", "label": "safe"}, {"prompt": "Yo", "label": "harmful"}], "label 'safe' is not one of"),
    ([{"prompt": "Hi", "label": "benign", "thought": "x</think>"}, {"prompt": "Yo", "label": "harmful"}],
     "must not hold"),
])
def test_bad_prompt_file_is_one_error_line_before_work(tmp_path, monkeypatch, capsys, rows, message):
    prompts = _jsonl(tmp_path / "p.jsonl", rows)
    monkeypatch.setattr(sys, "argv", ["safereason", "recipe", "think", "--out", str(tmp_path / "r"), "--prompts",
                                      str(prompts), "--n-xstest", "0", "--no-progress"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "r").exists()


def test_a_different_run_in_out_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "recipe.yaml").write_text(make_think_config(out=out, lora_r=4).to_yaml())
    monkeypatch.setattr(sys, "argv", ["safereason", "recipe", "think", "--out", str(out), "--n-xstest", "0"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error:") and "lora_r" in err and "\n" not in err
    (out / "recipe.yaml").unlink()
    (out / "other.txt").write_text("x")
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "holds no recipe run" in capsys.readouterr().err


def test_missing_xstest_names_the_skip_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("SAFEREASON_DATA", raising=False)
    cfg = make_think_config(out=tmp_path / "r", data_dir=tmp_path)
    with pytest.raises(DataError, match="--n-xstest 0"):
        run_think(cfg, progress=False, echo=lambda _: None)
    assert not (tmp_path / "r").exists()


def test_answer_cleaning():
    assert trim_to_sentence("One. Two! Three and") == "One. Two!"
    assert trim_to_sentence("no end here") == ""
    assert trim_to_sentence("Steps:\n\n1. Rinse it.\n\n2.") == "Steps:\n\n1. Rinse it."  # a cut list
    assert trim_to_sentence("2.") == ""
    assert clean_answer(None, False) == (None, "missing")
    assert clean_answer("Fine.", False) == (None, "too_short")
    assert clean_answer("half a sentence with no end", True) == (None, "no_sentence")
    loop = "I like cats a lot. " * 5
    assert is_repetitive(loop) and clean_answer(loop, False) == (None, "repetitive")
    assert not is_repetitive("Boil water. Add the egg. Wait six minutes. Cool it in cold water.")
    rows, dropped = build_rows([{"id": "x", "prompt": "p", "label": "benign", "thought": "t"}], {})
    assert rows == [] and dropped == {"missing": 1}


def test_print_config_equals_yaml(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"out": str(tmp_path / "r"), "lora_r": 4, "n_xstest": 50}))
    runner = CliRunner()
    by_flags = runner.invoke(app, ["recipe", "think", "--out", str(tmp_path / "r"), "--lora-r", "4", "--n-xstest",
                                   "50", "--print-config"])
    by_file = runner.invoke(app, ["recipe", "think", "--config", str(cfg_file), "--print-config"])
    assert by_flags.exit_code == 0 and by_file.exit_code == 0, by_flags.output + by_file.output
    assert yaml.safe_load(by_flags.output) == yaml.safe_load(by_file.output)
