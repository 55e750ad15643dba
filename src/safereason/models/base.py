"""The generation backend interface."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

#: "blocked": the provider refused to serve the request (a backend option says to record it); the runner
#: records such a sample with status blocked, never as a response, refusal or verdict
FinishReason = Literal["stop", "length", "blocked"]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int | None = None
    max_new_tokens: int = 512
    stop: tuple[str, ...] = field(default_factory=tuple)
    #: generate exactly max_new_tokens (benchmarks); as vLLM's ignore_eos
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int
    finish_reason: FinishReason
    #: the generated ids, cut before EOS or a stop string: what a continuation extends
    token_ids: tuple[int, ...] = ()
    #: "eos", the stop string that ended the row, or None when it ran out of tokens
    stopped_by: str | None = None


@runtime_checkable
class Backend(Protocol):
    """Turns prompts into completions.

    ``generate`` gets one already-rendered prompt text per output row (the runner repeats a prompt K
    times for K samples) and a seed; the same texts, params and seed must give the same completions,
    which is what makes runs reproducible and resumable.
    """

    name: str

    def render_prompt(self, prompt: str, *, system_prompt: str | None = None, prefill: str = "",
                      template_kwargs: dict[str, Any] | None = None) -> str: ...

    def generate(self, prompt_texts: Sequence[str], params: SamplingParams, seed: int) -> list[Completion]: ...

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                     seed: int) -> list[Completion]:
        """Continue exact token ids (MoreThink, SafeThink): no re-tokenisation of text generated so far."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def identity(self) -> dict[str, Any]:
        """Hashes of model weights, tokenizer and chat template, for the run manifest."""
        ...


def ids_before(ids: Sequence[int], cut: int, decode: Callable[[Sequence[int]], str]) -> list[int]:
    """The longest prefix of ``ids`` whose text ends at or before character ``cut`` (a token straddling the
    cut is dropped): how every backend trims ids at a stop string, so continuations agree across backends."""
    lo, hi = 0, len(ids)  # decoded length is monotone in the prefix length
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(decode(ids[:mid])) <= cut:
            lo = mid
        else:
            hi = mid - 1
    return list(ids[:lo])


def completion_from_ids(row: Sequence[int], params: SamplingParams, *, stop_ids: set[int],
                        decode: Callable[[Sequence[int]], str]) -> Completion:
    """A generated row cut at the first stop id (EOS, padding) or stop string, by one rule for all backends:
    like vLLM, the stop string is not part of the text, and the ids end where the text does."""
    n, stopped_by = len(row), None
    for i, t in enumerate(row):
        if t in stop_ids:
            n, stopped_by = i, "eos"
            break
    ids = list(row[:n])
    text = decode(ids)
    if params.stop:
        hits = [(i, s) for s in params.stop if (i := text.find(s)) >= 0]
        if hits:
            cut, stop = min(hits)
            ids = ids_before(ids, cut, decode)
            text, stopped_by = text[:cut], stop
    finish: FinishReason = "stop" if stopped_by is not None else "length"
    return Completion(text=text, n_tokens=len(ids), finish_reason=finish, token_ids=tuple(ids), stopped_by=stopped_by)


def tokenizer_blob(tokenizer: Any) -> str:
    """What a tokenizer hash is taken over: the fast tokenizer's JSON, else the sorted vocabulary."""
    try:
        return tokenizer.backend_tokenizer.to_str()
    except AttributeError:
        return repr(sorted(tokenizer.get_vocab().items()))
