"""The demo: the thinking model undefended and under SafeThink (scorer smol-guard), and the paired comparison."""

from pathlib import Path

import pytest

from safereason import demo
from safereason.serve.policy import check_scorer


def test_demo_settings():
    cfg = demo.demo_config("x", defense="safethink")
    assert cfg.model == "smollm2-135m-think" and cfg.benchmark == "smoke" and cfg.k == 2
    assert cfg.judges == ["smol-guard", "rs-match"] and cfg.defense_options == {"scorer": "smol-guard"}
    assert demo.demo_config("x").defense is None
    from safereason.defenses import build_defense

    check_scorer(build_defense(cfg.defense, cfg.defense_options))  # a continuous scorer: serve would take it


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_model(monkeypatch, tiny_model_dir: Path, tmp_path: Path):
    """Both runs, judged by the real smol-guard and rs-match, and SafeThink's change with a paired CI."""
    monkeypatch.setattr(demo, "DEMO_MODEL", str(tiny_model_dir))
    result = demo.run_demo(tmp_path / "demo", k=1, max_new_tokens=8, progress=False)
    for run in (result.undefended, result.safethink):
        assert set(run.metrics) >= {"smol-guard", "rs-match", "refusal-string"}
        assert run.metrics["smol-guard"]["full"]["n_judged"] == 12  # the 12 harmful prompts, K = 1
    cmp = result.comparison
    assert cmp.labels == ["undefended", "safethink"] and cmp.baseline == "undefended"
    deltas = cmp.deltas["safethink"]
    assert any(c.judge == "smol-guard" for c in deltas) and all(d.ci is not None for d in deltas.values())
