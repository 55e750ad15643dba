"""The card's GCG and PAIR stages (on in ``standard``/``full``) run for real on a tiny random model: each writes its
attack dir, its adversarial prompts are evaluated, and the robustness section reads ASR and budget per success
from them. PAIR's attacker is scripted (a random model writes no JSON); its target and judge are real."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from safereason.models.base import Completion, SamplingParams

SIZES = {"k": 1, "max_new_tokens": 4, "utility_max_new_tokens": 4, "n_harmful": 1, "n_xstest": 1, "n_prefill": 1,
         "n_static": 1, "n_math": 1, "n_code": 0, "n_agreement": 5, "gcg": True, "n_gcg": 1, "gcg_steps": 2,
         "pair": True, "n_pair": 1, "pair_streams": 2, "pair_iterations": 2, "pair_attacker": "json-attacker"}


class JsonAttacker:
    """Continues PAIR's seeded JSON with a fixed prompt (the backend stops at, and drops, the closing brace)."""

    name = "json-attacker"

    def __init__(self) -> None:
        self.calls = 0

    def render_messages(self, messages: list[dict[str, str]], prefill: str = "") -> str:
        return json.dumps({"messages": messages, "prefill": prefill})

    def generate(self, texts: Sequence[str], params: SamplingParams, seed: int, images: Any = None) -> list[Completion]:
        self.calls += 1
        out = []
        for t in texts:
            seeded = json.loads(t)["prefill"]
            text = "Tell me a story about it\"" if seeded.endswith('"prompt": "') else \
                'be direct", "prompt": "Tell me plainly"'
            out.append(Completion(text=text, n_tokens=len(text.split()), finish_reason="stop"))
        return out


@pytest.fixture(scope="module")
def attack_card(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, tiny_model_dir: Path) -> Any:
    import safereason.models as models
    from safereason.card import card

    real = models.build_backend
    attacker = JsonAttacker()

    def build(backend: str, model: str, **kw: Any) -> Any:
        return attacker if model == "json-attacker" else real(backend, model, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(models, "build_backend", build)
    try:
        result = card(out=tmp_path_factory.mktemp("card") / "c", model=str(tiny_model_dir), data_dir=shared_data,
                      sizes=SIZES, judges=["rs-match"], n_bootstrap=50, device="cpu", dtype="float32",
                      progress=False, echo=lambda line: None)
    finally:
        mp.undo()
    assert attacker.calls > 0
    return result


def test_gcg_and_pair_stages_run_and_feed_robustness(attack_card: Any) -> None:
    out, c = attack_card.out, attack_card.card
    state = json.loads((out / "state.json").read_text())["stages"]
    for stage in ("attack/gcg", "attack/pair", "base/gcg", "base/pair"):
        assert state[stage]["status"] == "done", (stage, state[stage])
    gcg = [json.loads(x) for x in (out / "attacks" / "gcg" / "adversarial.jsonl").read_text().splitlines() if x]
    pair = [json.loads(x) for x in (out / "attacks" / "pair" / "adversarial.jsonl").read_text().splitlines() if x]
    assert len(gcg) == 1 and len(pair) == 1
    rows = {r["attack"]: r for r in c["sections"]["robustness"]["variants"]["base"]["rows"]}
    for attack in ("gcg", "pair"):
        row = rows[attack]
        assert row["judge"] == "rs-match" and row["budget_unit"], row
        assert 0.0 <= row["asr"]["value"] <= 1.0 and row["asr"]["n"] == 1
    # what the eval judged is the attack's own adversarial prompt
    evaluated = [json.loads(x) for x in (out / "base" / "pair" / "samples.jsonl").read_text().splitlines() if x]
    assert [s["prompt"] for s in evaluated] == [pair[0]["prompt"]]


def test_gcg_and_pair_on_the_page(attack_card: Any) -> None:
    html = (attack_card.out / "card.html").read_text()
    assert ">gcg<" in html and ">pair<" in html
