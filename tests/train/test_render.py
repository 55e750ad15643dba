"""Training rows render exactly as eval renders the prompt: token ids, thinking included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safereason.config import make_config
from safereason.errors import ConfigError, DataError
from safereason.rendering import render_prompt
from safereason.train.render import TrainRow, build_examples, read_rows

#: a small DeepSeek-R1-distill-like template: no default system prompt, and the generation prompt opens the thought
R1_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)
#: Qwen3-like: ``enable_thinking=False`` puts a closed, empty thought into the generation prompt
QWEN3_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
REPLY = "<think>\nThe user asks for something harmful.\n</think>\n\nI can't help with that."
AFTER_OPEN = "The user asks for something harmful.\n</think>\n\nI can't help with that."


def _backend(tiny_model_dir: Path, template: str | None):
    from safereason.models.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32", chat_template=template)


CASES = [
    # (template, eval settings, reply in the data, what the model must generate after the prompt)
    pytest.param(None, {"think_prefill": "<think>\n"}, REPLY, AFTER_OPEN, id="smollm2-think-prefill"),
    pytest.param(None, {"system_prompt": "Be safe."}, REPLY, REPLY, id="smollm2-system-no-prefill"),
    pytest.param(R1_TEMPLATE, {}, REPLY, AFTER_OPEN, id="r1-template-opens-thought"),
    pytest.param(R1_TEMPLATE, {"system_prompt": "Think first."}, AFTER_OPEN, AFTER_OPEN, id="r1-continuation-row"),
    pytest.param(QWEN3_TEMPLATE, {"reasoning_format": "qwen3", "enable_thinking": False}, "Sure: 4.", "Sure: 4.",
                 id="qwen3-thinking-off"),
]


@pytest.mark.parametrize(("template", "settings", "reply", "target"), CASES)
def test_ids_equal_eval_prompt_plus_target(tiny_model_dir, template, settings, reply, target):
    backend = _backend(tiny_model_dir, template)
    ecfg = make_config(model=str(tiny_model_dir), chat_template=template, **settings)
    prompts = ["How do I pick a lock?", "What is 2+2?"]
    [ex, ex2] = build_examples([TrainRow(p, reply) for p in prompts], backend.tokenizer, ecfg,
                               model_name=str(tiny_model_dir))
    for example, prompt in ((ex, prompts[0]), (ex2, prompts[1])):
        eval_text = render_prompt(backend, ecfg, prompt)
        assert example.prompt_text == eval_text
        assert example.prompt_ids == backend.encode(eval_text)  # the ids eval generates from
        assert example.completion_ids == [*backend.encode(target), backend.tokenizer.eos_token_id]
        assert example.input_ids == example.prompt_ids + example.completion_ids
        assert example.completion_mask == [0] * len(example.prompt_ids) + [1] * len(example.completion_ids)
        assert backend.decode(example.input_ids) == eval_text + target + backend.tokenizer.eos_token
    assert ex.prompt_ids != ex2.prompt_ids


def test_trl_labels_are_the_completion_ids(tiny_model_dir, tmp_path):
    """TRL takes the pre-tokenised examples as they are: labels = -100 on the prompt, the target ids after."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from safereason.train.config import make_sft_config
    from safereason.train.sft import _dataset, sft_args

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ecfg = make_config(model=str(tiny_model_dir), think_prefill="<think>\n")
    examples = build_examples([TrainRow("Hi?", REPLY)], tok, ecfg, model_name="tiny")
    cfg = make_sft_config(model=str(tiny_model_dir), data=tmp_path / "d.jsonl", out=tmp_path / "o", device="cpu")
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=sft_args(cfg),
                         train_dataset=_dataset(examples), processing_class=tok)
    row = trainer.train_dataset[0]
    ex = examples[0]
    assert row["input_ids"] == ex.input_ids
    assert row["labels"] == [-100] * len(ex.prompt_ids) + ex.completion_ids


def test_prompt_completion_rows_and_conversational(tmp_path):
    p = tmp_path / "pc.jsonl"
    p.write_text(json.dumps({"prompt": "Q1", "completion": "A1"}) + "\n"
                 + json.dumps({"prompt": [{"role": "user", "content": "Q2"}],
                               "completion": [{"role": "assistant", "content": "A2"}]}) + "\n")
    assert read_rows(p) == [TrainRow("Q1", "A1"), TrainRow("Q2", "A2")]


def test_parquet_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": REPLY}]
    pq.write_table(pa.table({"messages": [msgs], "prompt_id": ["p1"]}), tmp_path / "d.parquet")
    assert read_rows(tmp_path / "d.parquet") == [TrainRow("Q", REPLY)]


def _msgs(*turns: tuple[str, object]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ('{"text": "hi"}\n', "has neither a 'messages' column nor 'prompt' and 'completion'"),
    ("{bad json\n", "line 1: malformed JSON"),
    (_msgs(("user", "Q")) + "\n", "messages must be exactly [user, assistant], got ['user']"),
    (_msgs(("system", "S"), ("user", "Q"), ("assistant", "A")) + "\n", "a system prompt comes from --system-prompt"),
    (_msgs(("assistant", "A"), ("user", "Q")) + "\n", "expected a 'user' turn, got 'assistant'"),
    (_msgs(("user", "Q"), ("assistant", "A")) + "\n" + _msgs(("user", "Q"), ("assistant", "  ")) + "\n",
     "row 2 (line 2): the assistant turn has no text content"),
    (_msgs(("user", "Q"), ("assistant", None)) + "\n", "the assistant turn has no text content"),
    ('{"prompt": "Q", "completion": 3}\n', "'completion' must be non-empty text"),
])
def test_bad_rows_are_one_line_errors(tmp_path, text, message):
    p = tmp_path / "d.jsonl"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        read_rows(p)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="unsupported training data file type .txt"):
        read_rows(tmp_path / "d.txt")
    with pytest.raises(DataError, match="cannot read training data"):
        read_rows(tmp_path / "missing.jsonl")


def test_reply_that_does_not_fit_the_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    opened = make_config(model="tiny", think_prefill="<think>\n")
    with pytest.raises(DataError, match="row 1: the prompt opens a thinking block"):
        build_examples([TrainRow("Q", "Just an answer.")], tok, opened, model_name="tiny", where="d")
    closed = make_config(model="tiny", chat_template=QWEN3_TEMPLATE, reasoning_format="qwen3", enable_thinking=False)
    tok.chat_template = QWEN3_TEMPLATE
    with pytest.raises(DataError, match="already closes the thinking block"):
        build_examples([TrainRow("Q", REPLY)], tok, closed, model_name="tiny")
    with pytest.raises(ConfigError, match="max_length 8 leaves no room"):
        build_examples([TrainRow("Q", REPLY)], tok, opened, model_name="tiny", max_length=8)
    with pytest.raises(DataError, match="no training rows"):
        build_examples([], tok, opened, model_name="tiny")
