"""Training rows -> token ids, rendered exactly as ``safereason eval`` renders a prompt.

A model tuned on text it never sees at inference learns the wrong thing, so the prompt side of every example
is the very text ``eval`` feeds the model (:func:`safereason.rendering.render_prompt`: chat template with the
system prompt, any template switch, then ``think_prefill``), tokenised as the backends do (no special tokens added).
The completion is the assistant text after what the prompt already holds (a prompt ending in ``<think>\\n``
leaves the thought open, so the target starts after that marker), tokenised on its own and closed with EOS:
``input_ids = prompt_ids + completion_ids + [eos]``. The model is trained only on the completion part
(TRL's ``completion_mask`` with ``completion_only_loss=True``).

Rows come in two shapes: ``messages`` = ``[user, assistant]`` (what ``safereason data safechain`` writes; other
columns are kept only as row metadata) or ``prompt`` / ``completion`` (strings, or TRL's conversational
one-message lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safereason.config import EvalConfig, make_config
from safereason.data.tables import FORMATS, Table, read_table
from safereason.errors import ConfigError, DataError, ModelLoadError
from safereason.models.prompting import ChatPromptMixin
from safereason.reasoning import get_format
from safereason.reasoning.formats import ReasoningFormat
from safereason.rendering import check_rendering, render_prompt

#: the keys of a training config that decide how a row is rendered: the same keys as eval's
RENDER_KEYS = ("model", "preset", "reasoning_format", "system_prompt", "think_prefill", "enable_thinking",
               "chat_template")


@dataclass(frozen=True)
class TrainRow:
    """One training pair: the user's prompt and the assistant's full reply (thinking included)."""

    prompt: str
    target: str


@dataclass(frozen=True)
class Example:
    """A tokenised training example; ``prompt_text`` is the exact text eval generates from."""

    prompt_text: str
    completion_text: str
    prompt_ids: list[int]
    completion_ids: list[int]  # ends with EOS

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    @property
    def completion_mask(self) -> list[int]:
        return [0] * len(self.prompt_ids) + [1] * len(self.completion_ids)


# -- reading rows ------------------------------------------------------------------------------------

def read_rows(path: str | Path) -> list[TrainRow]:
    """The training pairs of a JSONL / JSON / Parquet / CSV file; every problem is a one-line DataError."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported training data file type {path.suffix or '(no extension)'}; use "
                        ".jsonl, .json, .parquet or .csv")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read training data {path}: {e.strerror}") from None
    return rows_from_table(read_table(data, fmt, str(path)))


def rows_from_table(table: Table) -> list[TrainRow]:
    if "messages" in table.columns:
        return [_from_messages(table, i, r.get("messages")) for i, r in enumerate(table.rows)]
    if "prompt" in table.columns and "completion" in table.columns:
        return [_from_prompt_completion(table, i, r) for i, r in enumerate(table.rows)]
    raise DataError(f"{table.where} has neither a 'messages' column nor 'prompt' and 'completion' columns; its "
                    f"columns are: {', '.join(table.columns)}")


def _turn_text(table: Table, i: int, turn: Any, role: str) -> str:
    if not isinstance(turn, dict) or turn.get("role") != role:
        got = turn.get("role") if isinstance(turn, dict) else type(turn).__name__
        raise DataError(f"{table.where} {table.at(i)}: expected a {role!r} turn, got {got!r}")
    content = turn.get("content")
    if not isinstance(content, str) or not content.strip():
        raise DataError(f"{table.where} {table.at(i)}: the {role} turn has no text content")
    return content


def _from_messages(table: Table, i: int, messages: Any) -> TrainRow:
    if hasattr(messages, "tolist"):  # a Parquet list column read through numpy
        messages = messages.tolist()
    if not isinstance(messages, list) or len(messages) != 2:
        roles = [m.get("role") for m in messages if isinstance(m, dict)] if isinstance(messages, list) else None
        raise DataError(
            f"{table.where} {table.at(i)}: messages must be exactly [user, assistant], got "
            f"{roles if roles is not None else type(messages).__name__}; a system prompt comes from --system-prompt, "
            "so that training renders it as eval does"
        )
    return TrainRow(_turn_text(table, i, messages[0], "user"), _turn_text(table, i, messages[1], "assistant"))


def _from_prompt_completion(table: Table, i: int, row: dict[str, Any]) -> TrainRow:
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list) and len(prompt) == 1 and len(completion) == 1:
        return TrainRow(_turn_text(table, i, prompt[0], "user"), _turn_text(table, i, completion[0], "assistant"))
    for name, value in (("prompt", prompt), ("completion", completion)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{table.where} {table.at(i)}: {name!r} must be non-empty text (or a one-message list)")
    assert isinstance(prompt, str) and isinstance(completion, str)
    return TrainRow(prompt, completion)


# -- rendering ---------------------------------------------------------------------------------------

class TemplateRenderer(ChatPromptMixin):
    """The prompt side of a text-only backend (same ``render_prompt`` / ``encode``) without loading weights."""

    def __init__(self, tokenizer: Any, model_name: str) -> None:
        self.tokenizer = tokenizer
        self.model_name = model_name


def eval_config(values: dict[str, Any]) -> EvalConfig:
    """The eval config whose rendering training must match (model presets apply as in eval)."""
    return make_config(**{k: v for k, v in values.items() if k in RENDER_KEYS and v is not None})


def completion_text(prompt_text: str, target: str, fmt: ReasoningFormat, where: str) -> str:
    """What the model must generate after ``prompt_text`` to produce the reply ``target``."""
    if not fmt.has_thinking:
        return target
    assert fmt.think_start is not None and fmt.think_end is not None
    lead = target.lstrip()
    if fmt.opened_in_prompt(prompt_text):
        tail = prompt_text[prompt_text.rfind(fmt.think_start):]  # e.g. "<think>\n", already in the prompt
        if target.startswith(tail):
            return target[len(tail):]
        if lead.startswith(fmt.think_start):
            return lead[len(fmt.think_start):].lstrip()
        if fmt.think_end in target:
            return target  # the row holds only the continuation of the opened thought
        raise DataError(f"{where}: the prompt opens a thinking block ({tail!r}, from the chat template or "
                        f"think_prefill) but the reply has no {fmt.think_end!r}; train on replies with thinking, or "
                        "use a template / think_prefill that does not open one")
    if fmt.closed_in_prompt(prompt_text) and lead.startswith(fmt.think_start):
        raise DataError(f"{where}: the prompt already closes the thinking block (enable_thinking false?) but the "
                        "reply starts with thinking; drop --disable-thinking or train on answer-only replies")
    return target


def build_examples(rows: list[TrainRow], tokenizer: Any, config: EvalConfig, *, model_name: str,
                   max_length: int | None = None, where: str = "data") -> list[Example]:
    """Tokenise every row as eval renders it; refuse rows whose prompt leaves no room for the target."""
    if not rows:
        raise DataError(f"{where} has no training rows")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelLoadError(f"the tokenizer of {model_name!r} has no EOS token, so a target could not end")
    renderer = TemplateRenderer(tokenizer, model_name)
    check_rendering(renderer, config, model=model_name)
    fmt = get_format(config.reasoning_format)
    eos_text = tokenizer.eos_token or ""
    examples = []
    for i, row in enumerate(rows):
        prompt_text = render_prompt(renderer, config, row.prompt)
        completion = completion_text(prompt_text, row.target, fmt, f"{where} row {i + 1}")
        if eos_text and completion.endswith(eos_text):
            completion = completion[: -len(eos_text)]
        prompt_ids, completion_ids = renderer.encode(prompt_text), [*renderer.encode(completion), eos]
        if max_length is not None and len(prompt_ids) >= max_length:
            raise ConfigError(f"{where} row {i + 1}: its prompt alone is {len(prompt_ids)} tokens, and max_length "
                              f"{max_length} leaves no room for the target; raise --max-length")
        examples.append(Example(prompt_text, completion, prompt_ids, completion_ids))
    return examples
