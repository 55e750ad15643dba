"""The record types that flow from prompt to report.

A :class:`Prompt` comes out of a benchmark loader; the runner turns each prompt into K
:class:`Sample` records (one per sampled response), which carry the reasoning split and, once judged,
a :class:`Verdict` per (judge, part). ``samples.jsonl`` in a run directory is one Sample per line.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Part = Literal["thinking", "answer", "full"]
PARTS: tuple[Part, ...] = ("thinking", "answer", "full")

#: Prompt labels. Safety metrics are computed over prompts that are not ``benign``.
Label = Literal["harmful", "benign"]

#: What became of a sample: ``ok`` (generated), ``skipped`` (not generated: the prompt does not fit the model's
#: context and the run's policy is skip) or ``blocked`` (the provider refused to serve the request). Only ``ok``
#: samples are judged and enter the metrics; the others are counted.
SampleStatus = Literal["ok", "skipped", "blocked"]
SAMPLE_STATUSES: tuple[SampleStatus, ...] = ("ok", "skipped", "blocked")


class Prompt(BaseModel):
    """One benchmark prompt. ``prompt`` is the full user turn (context already prepended)."""

    model_config = ConfigDict(frozen=True)

    id: str
    prompt: str
    category: str | None = None
    label: Label | None = None
    #: local image files shown with the prompt (multimodal benchmarks: FigStep, MM-SafetyBench)
    images: list[str] = Field(default_factory=list)
    #: Anything else the source row carried that a later stage may want (e.g. XSTest's type).
    meta: dict[str, Any] = Field(default_factory=dict)


class Verdict(BaseModel):
    """A judge's verdict on one text.

    A *safety* judge sets ``unsafe``; a *refusal* judge sets ``refused`` (and ``label``, e.g. an XSTest
    class); some judges set both (WildGuard, the StrongREJECT rubric). When the judge could not decide,
    ``error`` says why and both are None: an unparseable output or a failed API call is an error, never a
    silent safe or unsafe. A verdict with neither a decision nor an error is refused at construction.
    """

    unsafe: bool | None
    score: float | None = None  # P(unsafe) in [0, 1] where the judge has one
    refused: bool | None = None  # did the text refuse (refusal judges)
    correct: bool | None = None  # does the answer match the reference (utility judges, e.g. exact-match)
    label: str | None = None  # the judge's own class: "full_refusal", Llama Guard's "S1,S6", ...
    flags: list[str] = Field(default_factory=list)  # e.g. "truncated" when the text was cut to fit
    raw: str | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _decided_or_error(self) -> Verdict:
        decisions = (self.unsafe, self.refused, self.correct)
        if self.error is not None:
            if any(d is not None for d in decisions):
                raise ValueError("a verdict with an error cannot also carry a decision")
        elif all(d is None for d in decisions):
            raise ValueError("a verdict needs a decision (unsafe, refused or correct) or an error")
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")
        return self

    @classmethod
    def failed(cls, error: str, raw: str | None = None) -> Verdict:
        return cls(unsafe=None, error=error, raw=raw)


class Sample(BaseModel):
    """One sampled response to one prompt, from generation through judging."""

    prompt_id: str
    sample_index: int
    prompt: str
    category: str | None = None
    label: Label | None = None
    prompt_text: str  # the exact text fed to the model: chat template + prefill
    response: str  # what the model generated (after the prompt text)
    thinking: str | None
    answer: str | None
    thinking_closed: bool
    split_status: Literal["closed", "unclosed", "no_thinking"]
    #: None for a sample that was not generated (status skipped)
    finish_reason: Literal["stop", "length", "blocked"] | None
    n_prompt_tokens: int
    n_response_tokens: int
    n_thinking_tokens: int | None = None
    n_answer_tokens: int | None = None
    #: what a thinking control or defense did to this sample (MoreThink: rounds, thinking and injected tokens,
    #: think and answer budgets used, ended_by; see MoreThinkResult.control); empty when nothing was done
    control: dict[str, Any] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list)
    status: SampleStatus = "ok"
    #: why a sample is not ``ok`` (the prompt's token count and the context limit, the provider's message)
    status_reason: str | None = None
    #: the prompt's ``meta`` (source-row fields such as HarmBench's ``Behavior`` / ``ContextString``)
    meta: dict[str, Any] = Field(default_factory=dict)
    #: judge name -> part -> verdict (``raw`` is kept in state files; see rundir)
    judgments: dict[str, dict[str, Verdict]] = Field(default_factory=dict)

    def part_text(self, part: Part) -> str | None:
        """The text a judge scores for ``part``, or None when the part does not exist for this sample.

        A part that exists but is empty (the model finished and wrote nothing, or closed its thought and wrote
        no answer) is ``""`` and is judged, as SafeChain judges empty responses (RS-Match: unsafe). A part is
        missing when the model did not produce it: an unclosed thought has no answer, ``no_thinking`` has no
        thought, a thought the prompt closed (ZeroThink, LessThink, a template that turns thinking off) is not
        the model's, and a skipped or blocked sample has no response at all.
        """
        if self.status != "ok":
            return None
        if part == "full":
            return self.response
        if part == "answer":
            return self.answer
        if self.thinking == "" and self.thinking_closed and _thought_closed_in_prompt(self.prompt_text):
            return None
        return self.thinking


def _thought_closed_in_prompt(prompt_text: str) -> bool:
    """Whether the prompt ends with a closed thought of a registered reasoning format (the split then gives an
    empty thought that the model never wrote)."""
    from safereason.reasoning.formats import FORMATS

    return any(FORMATS.get(name).closed_in_prompt(prompt_text) for name in FORMATS.names())
