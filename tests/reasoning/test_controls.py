"""ZeroThink / LessThink prefill strings (MoreThink: test_morethink.py)."""

import hashlib

import pytest

from safereason.errors import ConfigError
from safereason.reasoning import get_format
from safereason.reasoning.controls import LESS_THINK_BODY, control_prefill

R1 = get_format("r1")
LESS = "Okay, the user ask for this, I can answer it without thinking much. \n</think>\n\n"
# sha256 of the string in uw-nsl/safechain resp_gen.py::input_proc @ d9c0d79a58bb1180f42664610f01490d5062f0f7
LESS_SHA256 = "3617130f6428c5b325b6f336016e4dc0173c8624777627f59432b9afda17147e"


@pytest.mark.parametrize(("prompt_end", "mode", "expected"), [
    ("<|im_start|>assistant\n", "zero", "<think>\n\n</think>\n\n"),
    ("<|im_start|>assistant\n<think>\n", "zero", "\n</think>\n\n"),
    ("<|im_start|>assistant\n<think>", "zero", "\n\n</think>\n\n"),
    ("<|im_start|>assistant\n", "less", "<think>\n" + LESS),
    ("<|im_start|>assistant\n<think>\n", "less", LESS),
    ("<|im_start|>assistant\n", "default", ""),
    ("<|im_start|>assistant\n", "more", ""),
])
def test_prefill_strings(prompt_end, mode, expected):
    assert control_prefill(mode, R1, "<|im_start|>user\nhi<|im_end|>\n" + prompt_end) == expected


def test_result_is_exactly_the_safechain_turn():
    for opened in ("", "<think>\n"):
        text = "A:" + opened
        assert (text + control_prefill("zero", R1, text)).endswith("A:<think>\n\n</think>\n\n")
        assert (text + control_prefill("less", R1, text)).endswith("A:<think>\n" + LESS)


def test_prefill_uses_format_markers_and_custom_less_text():
    sky = get_format("skyt1")
    assert control_prefill("zero", sky, "A:") == "<|begin_of_thought|>\n\n<|end_of_thought|>\n\n"
    assert control_prefill("less", R1, "A:<think>\n", less_think_text="Short.\n</think>\n\n") == "Short.\n</think>\n\n"
    with pytest.raises(ConfigError):
        control_prefill("zero", get_format("none"), "A:")


def test_split_after_zero_think_has_empty_closed_thinking():
    prompt = "A:<think>\n\n</think>\n\n"
    s = R1.split("Sure, here it is.", prompt)
    assert s.thinking == "" and s.answer == "Sure, here it is." and s.thinking_closed


def test_less_think_string_is_safechains():
    # uw-nsl/safechain resp_gen.py::input_proc @ d9c0d79a58bb1180f42664610f01490d5062f0f7
    assert LESS_THINK_BODY + "</think>\n\n" == LESS
    assert hashlib.sha256(LESS.encode()).hexdigest() == LESS_SHA256
