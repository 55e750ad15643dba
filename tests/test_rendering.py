"""One rendering for every path: eval, training (SFT and GRPO), the attacks and ``serve`` feed the model the very
same prompt text (and ids) for the same settings."""

from __future__ import annotations

import json

import pytest

from safereason.config import make_config
from safereason.rendering import render_prompt

SETTINGS = {"system_prompt": "Be safe.", "think_prefill": "<think>\n"}


def _served(engine, prompt: str, history: list[dict[str, str]] | None = None) -> str:
    from safereason.serve.schema import parse_request

    messages = [*(history or []), {"role": "user", "content": prompt}]
    req = parse_request(json.dumps({"model": "tiny", "messages": messages}).encode())
    return engine.prompt_text(engine._turns(req.messages))


def test_eval_training_attacks_and_serve_render_identically(tiny_model_dir, tiny_backend, tmp_path):
    from safereason.attacks.gcg_run import eval_renderer
    from safereason.data import load_benchmark
    from safereason.runner import evaluate
    from safereason.serve.engine import GuardedModel
    from safereason.train.grpo import make_grpo_config, render_mix
    from safereason.train.render import TrainRow, build_examples, eval_config

    model = str(tiny_model_dir)
    prompt = load_benchmark("smoke", limit=1).prompts[0].prompt
    run = evaluate({"model": model, "benchmark": "smoke", "limit": 1, "k": 1, "max_new_tokens": 1,
                    "n_bootstrap": 10, "out": str(tmp_path / "run"), **SETTINGS}, backend=tiny_backend, progress=False)
    (sample,) = run.samples
    evaluated = sample.prompt_text
    assert evaluated.endswith("<think>\n") and "Be safe." in evaluated and prompt in evaluated

    tok = tiny_backend.tokenizer
    (sft,) = build_examples([TrainRow(prompt, "<think>\nok\n</think>\n\nNo.")], tok,
                            eval_config({"model": model, **SETTINGS}), model_name=model)
    grpo_cfg = make_grpo_config(model=model, prompts=tmp_path / "m.jsonl", out=tmp_path / "g", **SETTINGS)
    (grpo,) = render_mix(grpo_cfg, tok, [{"id": "p", "prompt": prompt, "label": "harmful", "source": "t"}])
    attack, _ = eval_renderer(tiny_backend, model, **SETTINGS)
    engine = GuardedModel(make_config(model=model, **SETTINGS), tiny_backend, served_model_name="tiny")

    rendered = {"sft": sft.prompt_text, "grpo": grpo.rendered, "attack": attack(prompt),
                "serve": _served(engine, prompt)}
    assert rendered == dict.fromkeys(rendered, evaluated)
    assert sft.prompt_ids == tiny_backend.encode(evaluated)  # and the ids eval generates from
    assert sample.n_prompt_tokens == len(sft.prompt_ids)


@pytest.mark.parametrize("defense", ["safepath", "adashield", "zerothink"])
def test_serve_renders_a_defense_as_eval_does(tiny_model_dir, tiny_backend, tmp_path, defense):
    """A defense's system prompt, thinking control or prefix lands in the same place for eval and serve; earlier
    turns (serve only) go between the system prompt and the last user turn."""
    from safereason.defenses import build_defense
    from safereason.serve.engine import GuardedModel

    config = make_config(model=str(tiny_model_dir), defense=defense, **SETTINGS)
    engine = GuardedModel(config, tiny_backend, served_model_name="tiny")
    eval_text = render_prompt(tiny_backend, config, "Hi there", defense=build_defense(defense, {}))
    assert _served(engine, "Hi there") == eval_text
    turns = [{"role": "user", "content": "First?"}, {"role": "assistant", "content": "Yes."}]
    multi = _served(engine, "Hi there", turns)
    assert multi.index("First?") < multi.index("Yes.") < multi.index("Hi there")
    assert multi.endswith(eval_text[eval_text.index("Hi there"):])  # the same tail: prefill, control, prefix
