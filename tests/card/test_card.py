"""``safereason card`` on a scripted backend (no weights) and the shipped benchmark files: every section from the
project's own outputs, a failing stage marked missing with its reason, resume, defense deltas, references."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PYTHON = sys.executable

SIZES = {"n_harmful": 6, "n_xstest": 4, "n_prefill": 3, "n_static": 3, "n_math": 2, "n_code": 2, "n_agreement": 20,
         "k": 2}
EVIL = '<script>alert("card")</script>'


def failing_code_backend(word_backend: type) -> Any:
    """Answers like WordBackend, with an adversarial answer, and fails on HumanEval's prompts (code stage)."""

    class FailingCodeBackend(word_backend):  # type: ignore[misc, valid-type]
        def generate(self, prompt_texts: Any, params: Any, seed: int, images: Any = None) -> list:
            from safereason.models.base import Completion

            if any('def ' in t and '    """' in t for t in prompt_texts):  # HumanEval: a signature and docstring
                raise RuntimeError("scripted failure on code prompts")
            out = super().generate(prompt_texts, params, seed, images)
            return [Completion(text=f"<think>ok</think>{EVIL}", n_tokens=5, finish_reason="stop")
                    if c.finish_reason == "stop" else c for c in out]

    return FailingCodeBackend(context=None)


def make(out: Path, shared: Path, backend: Any, **kw: Any) -> Any:
    from safereason.card import card

    values = {"out": out, "model": "word", "data_dir": shared, "sizes": SIZES, "n_bootstrap": 200,
              "judges": ["rs-match"], **kw}
    return card(backend=backend, progress=False, echo=lambda line: None, **values)


@pytest.fixture(scope="module")
def base_card(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Any, Any]:
    backend = failing_code_backend(_word_backend())
    return make(tmp_path_factory.mktemp("card") / "c", shared_data, backend), backend


def _word_backend() -> type:
    """tests/conftest.py's WordBackend (conftest is not importable under --import-mode=importlib)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_card_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WordBackend


def test_sections_come_from_the_runs(base_card: tuple[Any, Any]) -> None:
    result, _ = base_card
    c, out = result.card, result.out
    metrics = json.loads((out / "base" / "harmful" / "metrics.json").read_text())
    row = next(r for r in c["sections"]["harmful"]["variants"]["base"]["rows"]
               if r["judge"] == "rs-match" and r["part"] == "answer")
    assert row["safe@1"]["value"] == metrics["rs-match"]["answer"]["safe@1"]
    assert row["safe@1"]["ci"] == metrics["rs-match"]["answer"]["ci"]["safe@1"]
    hazards = c["sections"]["harmful"]["variants"]["base"]["hazards"]["rs-match"]
    assert sum(h["safe@1"]["n"] for h in hazards) == metrics["rs-match"]["full"]["n_prompts"]
    assert all(h["code"] == "unmapped" or h["code"].startswith("S") for h in hazards)
    over = c["sections"]["overrefusal"]["variants"]["base"]["rows"]
    assert any(r["set"] == "xstest" and r["judge"] == "refusal-string" for r in over)
    attacks = {r["attack"] for r in c["sections"]["robustness"]["variants"]["base"]["rows"]}
    assert {"prefill", "static: tars-adversarial", "static: rainbow-teaming"} <= attacks
    reasoning = c["sections"]["reasoning"]["variants"]["base"]
    assert reasoning["unclosed"]["value"] == 0.0  # every scripted answer closes its thought
    validity = c["sections"]["validity"]
    assert {a["judge"] for a in validity["rows"]} == {"rs-match", "refusal-string"}
    assert validity["notes"]["rs-match"].startswith("κ ")
    assert c["sections"]["provenance"]["generated_tokens"] > 0


def test_a_failing_stage_is_missing_with_reason_and_resume(base_card: tuple[Any, Any]) -> None:
    result, _ = base_card
    util = result.card["sections"]["utility"]
    assert result.stages["base/code"] == "failed" and result.stages["base/math"] == "done"
    assert util["status"] == "ok" and [r["set"] for r in util["variants"]["base"]["rows"]] == ["gsm8k"]
    (missing,) = util["missing"]
    assert missing["stage"] == "base/code" and "scripted failure on code prompts" in missing["reason"]
    assert missing["resume"] == f"safereason card --config {result.out / 'card.yaml'}"
    md = (result.out / "card.md").read_text()
    assert "**MISSING** `base/code`" in md and "scripted failure" in md


def test_page_is_escaped_and_self_contained(base_card: tuple[Any, Any]) -> None:
    result, _ = base_card
    page = result.html.read_text()
    assert "<script" not in page and "src=\"http" not in page
    for title in ("1. Harmful requests", "4. Robustness", "7. Judge validity", "9. Provenance and cost"):
        assert title in page


def test_rerun_resumes_and_other_settings_are_refused(base_card: tuple[Any, Any], shared_data: Path) -> None:
    from safereason.errors import RunDirError

    result, backend = base_card
    before = len(backend.generated)
    again = make(result.out, shared_data, backend)
    # only the failed code stage generates again (and fails again); finished stages are not re-run
    assert again.stages["base/code"] == "failed" and len(backend.generated) == before
    with pytest.raises(RunDirError, match=r"other settings \(seed\)"):
        make(result.out, shared_data, backend, seed=1)


def test_from_runs_rebuilds_the_same_numbers(base_card: tuple[Any, Any], tmp_path: Path) -> None:
    from safereason.card import card_from_runs

    result, _ = base_card
    dirs = [result.out / "base" / n for n in ("harmful", "xstest", "prefill", "math")]
    rebuilt = card_from_runs(dirs, tmp_path / "from", agreement=sorted((result.out / "agreement").glob("*.json")),
                             n_bootstrap=200)
    for section in ("harmful", "overrefusal", "utility"):
        assert rebuilt.card["sections"][section]["variants"] == result.card["sections"][section]["variants"]
    assert rebuilt.card["sections"]["robustness"]["variants"]["base"]["rows"][0]["attack"] == "prefill"


def test_defense_and_references(base_card: tuple[Any, Any], shared_data: Path, tmp_path: Path,
                                word_backend: type) -> None:
    result, _ = base_card
    sizes = {**SIZES, "n_code": 0}
    defended = make(tmp_path / "d", shared_data, word_backend(context=None), defense="zerothink", sizes=sizes,
                    references=[result.out])
    d = defended.card["sections"]["defense"]
    assert d["status"] == "ok" and d["deltas"]
    harm = [r for r in d["deltas"] if r["stage"] == "harmful"]
    assert harm and all(r["method"] == "paired bootstrap" for r in harm if r["delta"]["value"] is not None)
    assert set(d["cost"]) == {"undefended", "defended"}
    refs = defended.card["sections"]["references"]
    assert refs["labels"] == [str(result.out)]
    assert {r["grade"] for r in refs["rows"]} <= {"ABOVE", "BELOW", "WITHIN", "none"}
    assert any(r["grade"] != "none" for r in refs["rows"])


def test_blocked_prompts_are_not_refusals(shared_data: Path, tmp_path: Path, word_backend: type) -> None:
    sizes = {**SIZES, "n_xstest": None, "k": 1, "n_code": 0}
    got = make(tmp_path / "b", shared_data, word_backend(context=None, blocked=("kill",)), sizes=sizes)
    row = next(r for r in got.card["sections"]["overrefusal"]["variants"]["base"]["rows"]
               if r["judge"] == "refusal-string" and r["part"] == "answer")
    assert row["n_blocked"] > 0
    assert row["refusal"]["value"] == 0.0  # the provider's "flagged by our content policy" is not a refusal
    assert row["refusal"]["n"] == 250 - row["n_blocked"]


def test_cli_bad_input_is_one_error_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    for args, needle in ((["--out", str(tmp_path / "x")], "give --model or --endpoint"),
                         (["--model", "word", "--out", str(tmp_path / "y"), "--preset", "huge"], "unknown preset"),
                         (["--model", "word", "--out", str(tmp_path / "z"), "--judge", "nope"], "unknown judge")):
        p = subprocess.run([PYTHON, "-m", "safereason.cli", "card", *args], capture_output=True, text=True,
                           env=cli_env, timeout=120)
        assert p.returncode == 2, p.stderr
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], p.stderr


def _fake_openai_server() -> Any:
    """tests/models/test_openai_backend.py's FakeVLLM: an OpenAI-compatible loopback server."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "models" / "test_openai_backend.py"
    spec = importlib.util.spec_from_file_location("_card_fake_openai", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeVLLM()


def test_endpoint_card_counts_blocked_prompts_apart(shared_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = _fake_openai_server()
    server.filter_word = "kill"  # the provider blocks every prompt holding this word
    try:
        got = make(tmp_path / "e", shared_data, None, model="m", endpoint=server.url,
                   sizes={**SIZES, "n_xstest": None, "k": 1, "n_code": 0})
    finally:
        server.close()
    assert got.stages["base/xstest"] == "done", got.card["sections"]["overrefusal"]["missing"]
    row = next(r for r in got.card["sections"]["overrefusal"]["variants"]["base"]["rows"]
               if r["judge"] == "refusal-string" and r["part"] == "answer")
    assert row["n_blocked"] > 0 and row["refusal"]["n"] == 250 - row["n_blocked"]
    assert row["refusal"]["value"] == 1.0  # the fake server refuses every prompt it answers
    assert got.card["sections"]["robustness"]["status"] == "ok"
    assert got.card["sections"]["provenance"]["rows"][0]["model"] == "m"


def test_without_data_every_section_says_why(tmp_path: Path, word_backend: type,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No benchmark files: the prompts stage fails, every eval stage is skipped naming it, the card is still
    written and says MISSING with the reason in each section."""
    import safereason.data.fetch as fetch

    def offline(*args: Any, **kwargs: Any) -> Any:
        from safereason.errors import DataError

        raise DataError("offline in this test")

    monkeypatch.setattr(fetch, "_download", offline)  # never the network in a test
    empty = tmp_path / "nodata"
    empty.mkdir()
    got = make(tmp_path / "n", empty, word_backend(context=None), sizes={**SIZES, "n_code": 0})
    assert got.stages["prompts"] == "failed" and got.stages["base/harmful"] == "failed"
    for section in ("harmful", "overrefusal", "robustness", "utility"):
        s = got.card["sections"][section]
        assert s["status"] == "missing" and s["missing"], section
        assert all("needs stage " in m["reason"] and ", which failed: " in m["reason"] for m in s["missing"])
    md = (got.out / "card.md").read_text()
    assert md.count("**MISSING**") >= 7 and "offline in this test" in json.dumps(got.card["notes"])
