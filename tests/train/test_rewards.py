"""TARS's rewards as TRL reward functions: the format rule, routing, the product, failures and logging."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from safereason.errors import ConfigError, SafereasonError
from safereason.records import Verdict
from safereason.train.rewards import (
    MODERATION_CLAMP,
    AnswerReward,
    JudgeScorer,
    answer_of,
    format_reward,
    format_score,
    make_format_reward,
    make_helpfulness_reward,
    make_safety_reward,
    make_tars_reward,
)


def bf16(x: float) -> float:
    """x as TARS's reward tensors hold it (bfloat16)."""
    return float(torch.tensor(x, dtype=torch.bfloat16).item())


class ScoreJudge:
    """A stand-in safety judge: P(unsafe) = 0.8 when the text mentions 'bomb', else 0.05; 'FAIL' errors."""

    outputs = ("unsafe",)

    def __init__(self, name: str = "stub-guard") -> None:
        self.name = name
        self.batches: list[int] = []

    def identity(self) -> dict[str, Any]:
        return {"name": self.name}

    def judge(self, items: list) -> list[Verdict]:
        self.batches.append(len(items))
        out = []
        for it in items:
            if "FAIL" in it.text:
                out.append(Verdict.failed("judge exploded"))
            else:
                p = 0.8 if "bomb" in it.text else 0.05
                out.append(Verdict(unsafe=p >= 0.5, score=p))
        return out


@pytest.mark.parametrize(("text", "prefill", "want"), [
    ("<think>plan</think>Here you go.", "", 1),
    ("<think>plan</think>", "", 1),  # TARS's check_format: an empty answer passes
    ("<think>\nplan\n</think>\n\nHere you go.", "", 1),
    ("Here you go.", "", 0),  # missing
    ("<think>a</think><think>b</think>answer", "", 0),  # doubled
    ("<think>a</think>answer</think>", "", 0),  # doubled end
    ("</think>answer<think>", "", 0),  # reversed
    ("<think>plan</think>   \n", "", 1),  # empty answer: passes TARS's rule
    ("<think>plan", "", 0),  # unclosed
    ("plan</think>The answer.", "<think>\n", 1),  # prefilled <think>
    ("<think>plan</think>The answer.", "<think>\n", 0),  # prefill + generated <think> = two
    ("plan</think>The answer.", "", 0),  # no prefill: no <think>
])
def test_format_rule(text: str, prefill: str, want: int) -> None:
    assert format_score(text, prefill) == want
    # the project's earlier rule, kept as a named option, differs only on an empty answer
    empty = text.endswith("</think>") or text.endswith("</think>   \n")
    assert format_score(text, prefill, "nonempty-answer") == (0 if empty else want)


def test_format_rule_option_in_rewards() -> None:
    comp = ["<think>plan</think>  "]
    assert format_reward(["q"], comp) == [1.0]
    assert make_format_reward(rule="nonempty-answer")(["q"], comp) == [0.0]
    with pytest.raises(ConfigError, match="format rule"):
        make_format_reward(rule="strict")


def test_format_reward_reads_prefill_from_column_prompt_and_messages() -> None:
    comp = "plan</think>The answer."
    # a think_prefill column, a rendered prompt ending in <think>, a continued assistant message, none
    assert format_reward(["q"], [comp], think_prefill=["<think>\n"]) == [1.0]
    assert format_reward(["<|user|>q<|assistant|><think>\n"], [comp]) == [1.0]
    conv_prompt = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>"}]
    assert format_reward([conv_prompt], [[{"role": "assistant", "content": comp}]]) == [1.0]
    assert format_reward([[{"role": "user", "content": "q"}]], [[{"role": "assistant", "content": comp}]]) == [0.0]


def test_format_reward_with_a_template_that_opens_the_thought() -> None:
    conv = [[{"role": "user", "content": "q"}]]
    comp = [[{"role": "assistant", "content": "plan</think>The answer."}]]
    assert make_format_reward("<think>\n")(conv, comp) == [1.0]
    assert make_format_reward("<think>\n")(conv, comp, think_prefill=[""]) == [0.0]  # the column wins
    reward = make_tars_reward(safety=make_safety_reward(ScoreJudge()), helpfulness="refusal-proxy",
                              think_prefill="<think>\n")
    assert reward(conv, comp, label=["benign"]) == [1.0]


def test_answer_is_text_after_think_else_whole() -> None:
    assert answer_of("<think>how to build a bomb</think>\n\nI can't help.") == "I can't help."
    assert answer_of("no thinking here") == "no thinking here"


def test_safety_reward_is_one_minus_score_on_the_answer() -> None:
    judge = ScoreJudge()
    reward = make_safety_reward(judge, split="think-close", precision="float64")
    comps = ["<think>bomb talk</think>No.", "<think>ok</think>Here is a bomb recipe", "<think>x</think>FAIL"]
    out = reward(["p"] * 3, comps)
    assert out[0] == pytest.approx(0.95)  # the thinking mentions 'bomb', the answer does not
    assert out[1] == pytest.approx(0.2)
    assert out[2] is None and reward.failures == 1
    assert judge.batches == [3]  # one batched judge call per reward call


def test_safety_reward_by_default_sees_the_thinking_without_tars_delimiter() -> None:
    reward = make_safety_reward(ScoreJudge())
    comps = ["<think>bomb talk</think>No.", "<think>\nbomb talk\n</think>\n\nNo."]
    # no exact "\n</think>\n\n": TARS judges the whole response (the thinking's 'bomb' counts); with it, the answer
    assert reward(["p", "p"], comps) == [bf16(0.2), bf16(0.95)]
    assert bf16(0.95) == 0.94921875  # the values are TARS's bfloat16 ones


def test_moderation_rule_clamps_like_tars() -> None:
    assert MODERATION_CLAMP == 0.9  # danielkty/tars verl/verl/workers/fsdp_workers.py @ 32c10be
    reward = make_safety_reward(ScoreJudge(name="openai-moderation"))
    out = reward(["p", "p"], ["<think>t</think>fine", "<think>t</think>a bomb"])
    assert out == [1.0, bf16(0.2)]  # 0.95 >= 0.9 is set to 1; 0.2 stays (as bfloat16)
    unclamped = make_safety_reward(ScoreJudge(name="openai-moderation"), clamp=None, precision="float64")
    assert unclamped(["p"], ["<think>t</think>fine"]) == [pytest.approx(0.95)]


def test_safety_reward_rejects_non_safety_judges() -> None:
    with pytest.raises(ConfigError, match="safety judge"):
        make_safety_reward("refusal-string")


def test_refusal_proxy_is_named_and_scores_refusals() -> None:
    reward = make_helpfulness_reward("refusal-proxy")
    assert "proxy" in reward.__name__
    out = reward(["q", "q"], ["<think>\nt\n</think>\n\nI'm sorry, I cannot help.", "<think>t</think>Sure: step 1."])
    assert out == [0.0, 1.0]
    # without TARS's exact delimiter the judge sees the whole completion, which opens with the thought
    assert reward(["q"], ["<think>t</think>I'm sorry, I cannot help."]) == [1.0]
    think_close = make_helpfulness_reward("refusal-proxy", split="think-close")
    assert think_close(["q"], ["<think>t</think>I'm sorry, I cannot help."]) == [0.0]


def test_helpfulness_rejects_a_judge_without_refusal_or_rubric() -> None:
    with pytest.raises(ConfigError, match="cannot score helpfulness"):
        make_helpfulness_reward("exact-match")


def test_tars_reward_routes_by_label_and_multiplies_by_format() -> None:
    judge = ScoreJudge()
    reward = make_tars_reward(safety=make_safety_reward(judge), helpfulness="refusal-proxy")
    prompts = ["h1", "h2", "b1", "a1", "b2"]
    comps = [
        "<think>t</think>I won't.",  # harmful, safe answer -> 0.95
        "<think>t</think>Here is a bomb.",  # harmful, unsafe answer -> 0.2
        "<think>\nt\n</think>\n\nI'm sorry, I can't.",  # benign refused -> 0
        "<think>t</think>Sure, here is how.",  # ambiguous helped -> 1
        "Sure, here is how.",  # benign but bad format -> 0, not judged
    ]
    labels = ["harmful", "harmful", "benign", "ambiguous", "benign"]
    out = reward(prompts, comps, label=labels)
    assert out == [bf16(0.95), bf16(0.2), 0.0, 1.0, 0.0]
    assert judge.batches == [2]  # only harmful completions go to the safety judge, in one call
    # the same completions with the labels swapped use the other reward
    swapped = reward(prompts[:2], comps[:2], label=["benign", "benign"])
    assert swapped == [1.0, 1.0]


def test_tars_reward_without_format_gate() -> None:
    reward = make_tars_reward(safety=make_safety_reward(ScoreJudge()), helpfulness="refusal-proxy", format=False)
    assert reward(["b"], ["Sure, here is how."], label=["benign"]) == [1.0]


def test_tars_reward_none_on_judge_failure_is_counted() -> None:
    reward = make_tars_reward(safety=make_safety_reward(ScoreJudge()), helpfulness="refusal-proxy")
    out = reward(["h", "h"], ["<think>t</think>FAIL", "<think>t</think>no"], label=["harmful", "harmful"])
    assert out[0] is None and out[1] == bf16(0.95)
    assert reward.failures == 1


def test_a_raising_scorer_gives_none_not_zero() -> None:
    class Boom:
        name = "boom"

        def judge(self, items: list) -> list:
            raise RuntimeError("endpoint down")

    reward = AnswerReward("helpfulness_boom", JudgeScorer(Boom(), lambda v: 1.0), "helpfulness")
    assert reward(["q", "q"], ["<think>t</think>a", "<think>t</think>b"]) == [None, None]
    assert reward.failures == 2


def test_tars_reward_needs_known_labels() -> None:
    reward = make_tars_reward(safety=make_safety_reward(ScoreJudge()), helpfulness="refusal-proxy")
    with pytest.raises(SafereasonError, match="'label' column"):
        reward(["q"], ["<think>t</think>a"])
    with pytest.raises(SafereasonError, match="unknown prompt label"):
        reward(["q"], ["<think>t</think>a"], label=["spicy"])


def test_usable_with_trl_call_signature_and_logs_components() -> None:
    """Called exactly as TRL 1.16's GRPOTrainer calls a reward function (conversational data)."""
    metrics: dict[str, list[float]] = {}
    extra: dict[str, list] = {}
    reward = make_tars_reward(safety=make_safety_reward(ScoreJudge()), helpfulness="refusal-proxy")
    prompts = [[{"role": "user", "content": "how do I make a bomb"}], [{"role": "user", "content": "kill a process"}]]
    completions = [[{"role": "assistant", "content": "<think>no</think>I won't help."}],
                   [{"role": "assistant", "content": "<think>easy</think>Use kill -9."}]]
    out = reward(prompts=prompts, completions=completions, completion_ids=[[1], [2]], label=["harmful", "ambiguous"],
                 id=["a", "b"], source=["x", "y"], trainer_state=None,
                 log_extra=lambda col, vals: extra.setdefault(col, []).extend(vals),
                 log_metric=lambda name, value: metrics.setdefault(name, []).append(value))
    assert out == [bf16(0.95), 1.0]
    assert metrics["tars/format"] == [1.0]
    assert metrics["tars/safety"] == [bf16(0.95)]
    assert metrics["tars/helpfulness_proxy"] == [1.0]
    assert metrics["tars/failures"] == [0.0]
    assert set(extra) == {"format", "safety", "helpfulness_proxy"} and extra["safety"][1] is None
    assert format_reward(prompts=prompts, completions=completions, log_metric=lambda *a: None) == [1.0, 1.0]


def test_reward_model_is_sigmoid_of_a_sequence_classifier(tmp_path, tiny_model_dir) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = LlamaConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels = 1
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reward = make_helpfulness_reward(str(tmp_path), device="cpu", dtype="float32", split="think-close",
                                     precision="float64")
    assert "proxy" not in reward.__name__
    comps = ["<think>t</think>short", "<think>t</think>a much longer answer here"]
    out = reward(["q1", "q2"], comps)
    assert all(s is not None and 0.0 < s < 1.0 and math.isfinite(s) for s in out)
    scorer = reward.scorer
    text = scorer._render("q1", "short")
    enc = scorer.tokenizer([text], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        logit = scorer.model(**enc).logits[0, 0].item()
    assert out[0] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)
    # TARS's rules (the default): the whole completion (no exact delimiter) and a bfloat16 value
    tars = AnswerReward("rm", scorer, "helpfulness", post=lambda x: bf16(x))
    assert tars(["q1"], comps[:1]) == [bf16(scorer(["q1"], comps[:1])[0])]
