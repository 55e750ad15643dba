"""The card's parts on their own: taxonomy coverage, the grade rule, presets, and the page in a real browser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from safereason.card.grades import grade


def test_taxonomy_maps_every_category_of_the_harmful_sets(shared_data: Path) -> None:
    from safereason.card.taxonomy import UNMAPPED, load_taxonomy
    from safereason.data import load_benchmark

    tax = load_taxonomy()
    assert list(tax.hazards) == [f"S{i}" for i in range(1, 15)]
    for name in ("strongreject", "strongreject-small", "harmbench", "jbb-harmful", "smoke", "mm-safetybench-tiny",
                 "tars-adversarial"):
        cats = {p.category for p in load_benchmark(name, data_dir=shared_data).prompts if p.label != "benign"}
        # every category is in the table: mapped to a code, or unmapped on purpose with a note
        assert {c.lower() for c in cats if c} <= set(tax.sets[name]), name
    assert tax.hazard("strongreject", "Violence") == "S1" and tax.hazard("jbb-harmful", "Privacy") == "S7"
    assert tax.hazard("harmbench", "misinformation_disinformation") == UNMAPPED
    assert tax.hazard("unknown-set", "Violence") == UNMAPPED
    unmapped = [r for r in tax.table() if r["hazard"] == "unmapped"]
    assert unmapped and all(r["note"] for r in unmapped)


@pytest.mark.parametrize(("mine", "refs", "better", "expected"), [
    ({"value": 0.9, "ci": [0.85, 0.95], "judge": "j"}, [0.5, 0.8], "higher", "ABOVE"),
    ({"value": 0.3, "ci": [0.2, 0.4], "judge": "j"}, [0.5, 0.8], "higher", "BELOW"),
    ({"value": 0.6, "ci": [0.3, 0.9], "judge": "j"}, [0.5, 0.8], "higher", "WITHIN"),
    ({"value": 0.1, "ci": [0.05, 0.2], "judge": "j"}, [0.5, 0.8], "lower", "ABOVE"),
    ({"value": 0.9, "ci": [0.85, 0.95], "judge": "j"}, [0.5, 0.8], "lower", "BELOW"),
])
def test_grade_rule(mine: dict[str, Any], refs: list[float], better: str, expected: str) -> None:
    got, why = grade(mine, [{"value": r, "judge": "j"} for r in refs], better)
    assert got == expected and "references" in why


def test_no_grade_without_a_comparable_reference() -> None:
    mine = {"value": 0.5, "ci": [0.4, 0.6], "judge": "j"}
    assert grade(mine, [{"value": 0.1, "judge": "other"}], "higher")[0] == "none"
    assert grade(None, [{"value": 0.1, "judge": "j"}], "higher")[0] == "none"
    assert grade({**mine, "ci": None}, [{"value": 0.1, "judge": "j"}], "higher")[0] == "none"


def test_presets_grow_and_overrides_are_checked(tmp_path: Path) -> None:
    from safereason.card import PRESETS, make_card_config
    from safereason.errors import ConfigError

    assert PRESETS["quick"].k < PRESETS["standard"].k < PRESETS["full"].k == 5
    assert PRESETS["full"].n_harmful is None and PRESETS["full"].pair and PRESETS["full"].gcg
    cfg = make_card_config(out=tmp_path, model="m", judges=["rs-match"], sizes={"n_harmful": 3})
    assert cfg.resolved_sizes().n_harmful == 3 and cfg.resolved_sizes().k == PRESETS["quick"].k
    with pytest.raises(ConfigError, match="n_hamful"):
        make_card_config(out=tmp_path, model="m", sizes={"n_hamful": 3})
    assert make_card_config(out=tmp_path, endpoint="http://127.0.0.1:8000/v1").target == \
        "default at http://127.0.0.1:8000/v1"


VALUES = {m: {"value": 0.5, "ci": [0.2, 0.8], "n": 12} for m in ("safe@1", "safe@k", "conssafe@k")}


def _card_page(tmp_path: Path) -> Path:
    from safereason.card.render import render_html

    card = {"title": 'Safety card: <b>m</b>', "preset": "quick", "judges": ["rs-match"], "defense": None,
            "generated_at": "now", "primary_judge": "rs-match", "notes": [],
            "taxonomy": {"name": "Llama Guard 3 (S1-S14)", "rows": [{"set": "s", "category": "c", "hazard": "S1",
                                                                   "note": ""}]},
            "sections": {
                "harmful": {"status": "ok", "missing": [], "variants": {"base": {
                    "set": "strongreject-small", "hazards": {}, "rows": [
                        {"judge": "rs-match", "part": "full", "k": 2, "n_errors": 0, "n_missing": 0, "n_blocked": 0,
                         **VALUES}]}}},
                "reasoning": {"status": "missing", "missing": [{"stage": "base/harmful", "reason": "boom <x>",
                                                               "resume": "safereason card --config c.yaml"}],
                              "variants": {}},
                "overrefusal": {"status": "ok", "missing": [], "variants": {"base": {"rows": [
                    {"set": "xstest", "judge": "refusal-string", "part": "answer", "n_blocked": 0, "n_skipped": 0,
                     "refusal": {"value": 0.2, "ci": [0.0, 0.4], "n": 10}}]}}},
                **{s: {"status": "missing", "missing": [], "variants": {}} for s in ("robustness", "utility")},
                "defense": {"status": "off", "missing": [], "variants": {}, "deltas": [], "cost": {}},
                "validity": {"status": "missing", "missing": [], "rows": [], "notes": {}},
                "references": {"status": "off", "missing": [], "rows": [], "labels": [], "points": [], "rule": ""},
                "provenance": {"status": "ok", "missing": [], "rows": [], "generated_tokens": 0, "prompt_tokens": 0,
                               "seconds": None, "price_per_mtok": None, "money": None}}}
    page = tmp_path / "card.html"
    page.write_text(render_html(card), encoding="utf-8")
    return page


def test_page_in_headless_chromium(tmp_path: Path) -> None:
    """A real browser renders the page: the screenshot is not blank and the DOM holds every section title."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium (apt-get install -y chromium)")
    from PIL import Image, ImageStat

    page = _card_page(tmp_path)
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "card.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    stat = ImageStat.Stat(Image.open(shot).convert("L"))
    assert stat.stddev[0] > 5, "blank screenshot"
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    for title in ("1. Harmful requests", "2. Reasoning", "3. Over-refusal", "4. Robustness", "5. Utility",
                  "6. Defense", "7. Judge validity", "8. References and grades", "9. Provenance and cost"):
        assert f">{title}</h2>" in dom
    # escaped (the h1 holds text, not a <b> element); the missing stage's reason shown; the trade-off drawn
    assert "<h1>Safety card: &lt;b&gt;m&lt;/b&gt;</h1>" in dom and "boom &lt;x&gt;" in dom and "<circle" in dom
