"""A λ prompt mix (``safereason data mix``) read and rendered for RL: every prompt exactly as ``safereason eval``
renders it, handed to TRL as the string that tokenises to eval's very ids (GRPO and DPO share it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safereason.errors import ConfigError, DataError
from safereason.rendering import check_rendering, render_prompt
from safereason.train.render import TemplateRenderer, eval_config

#: the prompt labels of a mix (``safereason data mix``)
LABELS = ("harmful", "benign", "ambiguous")


@dataclass(frozen=True)
class PromptRow:
    """One prompt of the mix, rendered as eval renders it."""

    id: str
    question: str
    label: str
    source: str
    rendered: str  # eval's prompt text, what the model continues
    text: str  # the same ids once TRL tokenises it (TRL's ``prompt``)
    think_prefill: str  # the part of the assistant turn already in ``text`` (for the format rule)


def read_mix(path: Path) -> list[dict[str, Any]]:
    """Rows of a prompt mix (id, prompt, label, source); every problem is a one-line DataError."""
    from safereason.data.tables import FORMATS, read_table

    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported prompt file type {path.suffix or '(no extension)'}; use .jsonl or "
                        ".parquet (as `safereason data mix` writes)")
    try:
        table = read_table(path.read_bytes(), fmt, str(path))
    except OSError as e:
        raise DataError(f"cannot read prompts {path}: {e.strerror}") from None
    missing = [c for c in ("prompt", "label") if c not in table.columns]
    if missing:
        raise DataError(f"{path} has no {' or '.join(missing)} column; its columns are: {', '.join(table.columns)}")
    rows = []
    for i, r in enumerate(table.rows):
        prompt, label = r.get("prompt"), r.get("label")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path} {table.at(i)}: 'prompt' must be non-empty text")
        if label not in LABELS:
            raise DataError(f"{path} {table.at(i)}: label {label!r} is not one of {', '.join(LABELS)}")
        rows.append({"id": str(r.get("id") or f"p{i}"), "prompt": prompt, "label": label,
                     "source": str(r.get("source") or "")})
    if not rows:
        raise DataError(f"{path} has no prompts")
    return rows


def open_prefill(text: str, fmt: Any) -> str:
    """The thinking markup the rendered prompt already holds at its end (open ``<think>\\n`` or a closed
    ZeroThink block), which the format rule counts as part of the completion."""
    if fmt.has_thinking and (fmt.opened_in_prompt(text) or fmt.closed_in_prompt(text)):
        return text[text.rfind(fmt.think_start):]
    return ""


def trl_prompt_text(text: str, tokenizer: Any, renderer: Any) -> str:
    """The string to give TRL (which tokenises with special tokens) so that it gets eval's very ids."""
    want = renderer.encode(text)
    if list(tokenizer(text)["input_ids"]) == want:
        return text
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and list(tokenizer(text[len(bos):])["input_ids"]) == want:
        return text[len(bos):]  # the tokenizer adds the BOS the template wrote
    raise ConfigError("the tokenizer adds special tokens that eval's rendering does not hold; GRPO would train on "
                      "other ids than eval feeds the model")


def render_mix(cfg: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> list[PromptRow]:
    """Render every prompt as eval does (``no_reasoning``: as ``eval --thinking zero``, ZeroThink's closed thought)."""
    from safereason.reasoning import get_format

    ecfg = eval_config(cfg.model_dump())
    if getattr(cfg, "no_reasoning", False):
        ecfg = ecfg.model_copy(update={"thinking": "zero"})  # what eval_command_for's --thinking zero renders
    fmt = get_format(ecfg.reasoning_format)
    renderer = TemplateRenderer(tokenizer, cfg.model)
    check_rendering(renderer, ecfg, model=cfg.model)
    out = []
    for r in rows:
        text = render_prompt(renderer, ecfg, r["prompt"])
        if cfg.max_prompt_length is not None and len(renderer.encode(text)) > cfg.max_prompt_length:
            raise ConfigError(f"{cfg.data_file()}: prompt {r['id']!r} renders to {len(renderer.encode(text))} "
                              f"tokens, over max_prompt_length {cfg.max_prompt_length}; raise it or drop the prompt")
        out.append(PromptRow(r["id"], r["prompt"], r["label"], r["source"], text,
                             trl_prompt_text(text, tokenizer, renderer), open_prefill(text, fmt)))
    return out


def prompt_dataset(rows: list[PromptRow]) -> Any:
    """The TRL dataset: ``prompt`` (TRL's text) plus the columns the rewards read."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [r.text for r in rows], "question": [r.question for r in rows],
                              "label": [r.label for r in rows], "source": [r.source for r in rows],
                              "id": [r.id for r in rows], "think_prefill": [r.think_prefill for r in rows]})
