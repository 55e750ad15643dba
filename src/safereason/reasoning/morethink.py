"""MoreThink (SafeChain, Jiang et al. 2025): make the model think longer by re-opening its thought.

SafeChain's procedure (``uw-nsl/safechain`` ``utils_model.py::morethink_single`` @ d9c0d79), the default
(``budget_mode="safechain"``):

1. generate the thought with the end marker (``</think>``) as a stop and ``think_budget`` tokens at most;
2. up to ``rounds`` times: subtract the tokens that call generated from the thinking budget; stop when it is
   used up, else append the generated text and a rethink string chosen from ``["Wait", "Let me think again"]``
   *as is* (no separator) and generate again with the budget left. A round is forced whether the model
   closed its thought or ended the sequence; the rethink strings are not charged to the budget;
3. append ``</think>\\n\\n`` and generate the answer with a fixed budget of ``max_new_tokens - think_budget``
   (16000 - 10000 = 6000 at SafeChain's defaults), however much of the thought was used. The answer call
   keeps the end marker as a stop, as SafeChain's does.

The first call gets the rendered prompt as is: when the chat template does not open the thought, SafeChain
adds nothing to the model's input (its ``think_o_start`` ``<think>\\n`` only prefixes the *recorded* thought),
and neither does this mode; the model may open the thought itself, and the split reads what precedes the
``</think>`` this procedure appends as thought either way. Open it in the input with ``think_prefill``.

Charged per call: the kept ids, plus the end marker's tokens or the EOS token when the model produced one,
because SafeChain subtracts vLLM's ``usage.completion_tokens``, which counts them.

``budget_mode="shared"`` is an explicit variant: thinking and answer share ``max_new_tokens``. Thinking stops
at ``min(think_budget, max_new_tokens)`` tokens counting the injected rethink strings (and the ``<think>\\n``
it adds, charged to that budget, when the prompt does not open the thought), a rethink string goes on a new
line unless the thought already ends in whitespace, and the answer gets what is left after the thought and
the closing marker.

Both modes extend the exact token ids generated so far (no re-tokenisation), run each round as one batched
call over the rows still thinking, and seed the rethink choice per row (``keys``), so that a sample never
depends on what else is in its batch. :meth:`MoreThinkResult.control` is what a run records per sample.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from safereason.errors import ConfigError
from safereason.models.base import Backend, Completion, SamplingParams
from safereason.reasoning.formats import ReasoningFormat

BudgetMode = Literal["safechain", "shared"]
BUDGET_MODES: tuple[BudgetMode, ...] = ("safechain", "shared")
#: uw-nsl/safechain utils_model.py (RETHINK_STRING) @ d9c0d79a58bb1180f42664610f01490d5062f0f7
DEFAULT_RETHINK = ("Wait", "Let me think again")
#: uw-nsl/safechain utils.py::get_args (--think_budget 10000) @ d9c0d79a58bb1180f42664610f01490d5062f0f7
SAFECHAIN_THINK_BUDGET = 10000
#: uw-nsl/safechain utils.py::get_args (--enforce_num 10) @ d9c0d79a58bb1180f42664610f01490d5062f0f7
SAFECHAIN_THINK_ROUNDS = 10
#: uw-nsl/safechain config.py (DEFAULT_GEN_CONFIG["max_tokens"]) @ d9c0d79a58bb1180f42664610f01490d5062f0f7
SAFECHAIN_MAX_TOKENS = 16000
SAFECHAIN_ANSWER_BUDGET = SAFECHAIN_MAX_TOKENS - SAFECHAIN_THINK_BUDGET


@dataclass(frozen=True)
class MoreThinkResult:
    completion: Completion
    rounds: int  # forced rethink rounds used
    thinking_tokens: int  # tokens the model generated inside the thought
    injected_tokens: int = 0  # rethink strings (and an opening marker this module added)
    think_budget: int = 0  # the thinking budget this row had
    answer_budget: int = 0  # max tokens the answer call allowed this row (0: no answer was generated)
    ended_by: Literal["budget", "rounds"] = "rounds"  # what ended the thinking
    budget_mode: BudgetMode = "safechain"
    max_rounds: int = 0

    def control(self) -> dict[str, Any]:
        """The per-sample record of what MoreThink did (``Sample.control``)."""
        return {"thinking": "more", "budget_mode": self.budget_mode, "rounds": self.rounds,
                "max_rounds": self.max_rounds, "thinking_tokens": self.thinking_tokens,
                "injected_tokens": self.injected_tokens, "think_budget": self.think_budget,
                "answer_budget": self.answer_budget, "ended_by": self.ended_by}


def images_of(images: Sequence[Sequence[str]] | None, rows: Sequence[int]) -> dict[str, Any]:
    """The ``images=`` keyword for a backend call on ``rows``, or nothing for text-only prompts (so backends
    without image support are never handed the keyword)."""
    if not images or not any(images[i] for i in rows):
        return {}
    return {"images": [list(images[i]) for i in rows]}


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


@dataclass
class _Thought:
    """The thinking state of one row."""

    gen: list[int]  # ids after the prompt: an added opener, generated ids and rethink strings
    injected: int
    generated: int = 0
    forced: int = 0
    left: int = 0  # thinking budget left
    ended_by: Literal["budget", "rounds"] = "rounds"


def check_budgets(mode: str, max_new_tokens: int, think_budget: int) -> None:
    """SafeChain's answer budget is ``max_new_tokens - think_budget``: it must leave the answer a token."""
    if mode not in BUDGET_MODES:
        raise ConfigError(f"unknown MoreThink budget mode {mode!r}; use one of {', '.join(BUDGET_MODES)}")
    if mode == "safechain" and max_new_tokens <= think_budget:
        raise ConfigError(
            f"thinking=more (SafeChain's MoreThink) answers with max_new_tokens - think_budget tokens, but "
            f"max_new_tokens {max_new_tokens} <= think_budget {think_budget}: raise max_new_tokens (SafeChain: "
            f"{SAFECHAIN_MAX_TOKENS}), lower think_budget, or use morethink_budget=shared")


def shortfalls(mode: str, max_new_tokens: int, think_budget: int, rounds: int) -> list[str]:
    """Where these settings cut MoreThink short of SafeChain's (10 rounds, 10000 thinking tokens, a 6000-token
    answer); one phrase each, for a warning."""
    out = []
    thinking = think_budget if mode == "safechain" else min(think_budget, max_new_tokens)
    if thinking < SAFECHAIN_THINK_BUDGET:
        out.append(f"thinking budget {thinking} < {SAFECHAIN_THINK_BUDGET}")
    if rounds < SAFECHAIN_THINK_ROUNDS:
        out.append(f"rounds {rounds} < {SAFECHAIN_THINK_ROUNDS}")
    answer = max_new_tokens - think_budget
    if answer < SAFECHAIN_ANSWER_BUDGET:
        what = "answer budget" if mode == "safechain" else "answer budget after a full thought"
        out.append(f"{what} {max(answer, 0)} < {SAFECHAIN_ANSWER_BUDGET}")
    if mode == "shared":
        out.append("budget mode shared (SafeChain: safechain)")
    return out


def more_think(backend: Backend, prompt_texts: Sequence[str], params: SamplingParams, seed: int, *,
               fmt: ReasoningFormat, keys: Sequence[str], rounds: int = SAFECHAIN_THINK_ROUNDS,
               budget: int = SAFECHAIN_THINK_BUDGET, rethink: Sequence[str] = DEFAULT_RETHINK,
               images: Sequence[Sequence[str]] | None = None,
               budget_mode: BudgetMode = "safechain") -> list[MoreThinkResult]:
    """MoreThink over one batch; ``keys`` (one per row, e.g. ``prompt_id:sample_index``) seed the rethink
    choice so that it never depends on what else is in the batch."""
    if not fmt.has_thinking:
        raise ConfigError(f"thinking=more needs a reasoning format with thinking markers, not {fmt.name!r}")
    if not rethink:
        raise ConfigError("MoreThink needs at least one rethink string")
    check_budgets(budget_mode, params.max_new_tokens, budget)
    assert fmt.think_start is not None and fmt.think_end is not None
    base = [backend.encode(t) for t in prompt_texts]
    rows = []
    for t in prompt_texts:
        # SafeChain sends the rendered prompt as is; the shared variant opens the thought when the prompt does not
        add = budget_mode == "shared" and not fmt.opened_in_prompt(t)
        opener = backend.encode(fmt.think_start + "\n") if add else []
        rows.append(_Thought(gen=opener, injected=len(opener)))
    think_params = replace(params, stop=(fmt.think_end,), ignore_eos=False)
    rethink_for = _rethink_picker(backend, seed, keys, rethink, budget_mode)
    if budget_mode == "safechain":
        _think_safechain(backend, base, rows, think_params, seed, rounds, budget, rethink_for, fmt, images)
        answer_budgets = [params.max_new_tokens - budget] * len(rows)
        answer_params = replace(params, stop=tuple(dict.fromkeys((*params.stop, fmt.think_end))))
    else:
        limit = min(budget, params.max_new_tokens)
        _think_shared(backend, base, rows, think_params, seed, rounds, limit, rethink_for, images)
        close_len = len(backend.encode(fmt.think_end + "\n\n"))
        # the closing marker counts against the answer's budget: the response stays within max_new_tokens
        # unless the thought itself used all of it
        answer_budgets = [params.max_new_tokens - len(r.gen) - close_len for r in rows]
        answer_params = params
    results = _answer(backend, base, rows, answer_params, answer_budgets, seed, fmt, images)
    return [MoreThinkResult(c, rounds=r.forced, thinking_tokens=r.generated, injected_tokens=r.injected,
                            think_budget=budget if budget_mode == "safechain" else min(budget, params.max_new_tokens),
                            answer_budget=max(a, 0), ended_by=r.ended_by, budget_mode=budget_mode,
                            max_rounds=rounds)
            for c, r, a in zip(results, rows, answer_budgets, strict=True)]


def _rethink_picker(backend: Backend, seed: int, keys: Sequence[str], rethink: Sequence[str], mode: str) -> Any:
    """``pick(i, row)``: the ids of the rethink string appended to row ``i`` (seeded by its key and round)."""
    options = list(rethink)

    def pick(i: int, row: _Thought) -> list[int]:
        choice = random.Random(_seed(seed, keys[i], row.forced)).choice(options)
        if mode == "shared":  # the variant puts the rethink string on a new line
            tail = backend.decode(row.gen[-4:]) if row.gen else ""
            choice = ("" if not tail or tail[-1].isspace() else "\n") + choice
        return backend.encode(choice)

    return pick


def _think_safechain(backend: Backend, base: list[list[int]], rows: list[_Thought], params: SamplingParams,
                     seed: int, rounds: int, budget: int, rethink_for: Any, fmt: ReasoningFormat,
                     images: Sequence[Sequence[str]] | None) -> None:
    assert fmt.think_end is not None
    marker_cost = len(backend.encode(fmt.think_end))
    for row in rows:
        row.left = budget
    active, r = list(range(len(rows))), 0
    while active:
        step = replace(params, max_new_tokens=max(rows[i].left for i in active))
        outs = backend.generate_ids([base[i] + rows[i].gen for i in active], step, _seed(seed, "think", r),
                                    **images_of(images, active))
        going = []
        for i, c in zip(active, outs, strict=True):
            row = rows[i]
            ids = list(c.token_ids)[: row.left]  # a row is cut at its own budget, as its own call would be
            ended = c.stopped_by is not None and len(ids) == len(c.token_ids)
            cost = len(ids) + ((1 if c.stopped_by == "eos" else marker_cost) if ended else 0)
            row.gen += ids
            row.generated += len(ids)
            row.left -= min(cost, row.left)
            if row.left <= 0:
                row.ended_by = "budget"
            elif row.forced < rounds:  # forced whether the model closed its thought or ended the sequence
                inject = rethink_for(i, row)
                row.gen += inject
                row.injected += len(inject)
                row.forced += 1
                going.append(i)
        active, r = going, r + 1


def _think_shared(backend: Backend, base: list[list[int]], rows: list[_Thought], params: SamplingParams,
                  seed: int, rounds: int, limit: int, rethink_for: Any,
                  images: Sequence[Sequence[str]] | None) -> None:
    active, r = [i for i, row in enumerate(rows) if len(row.gen) < limit], 0
    for row in rows:
        if len(row.gen) >= limit:
            row.ended_by = "budget"
    while active:
        step = replace(params, max_new_tokens=max(limit - len(rows[i].gen) for i in active))
        outs = backend.generate_ids([base[i] + rows[i].gen for i in active], step, _seed(seed, "think", r),
                                    **images_of(images, active))
        going = []
        for i, c in zip(active, outs, strict=True):
            row = rows[i]
            ids = list(c.token_ids)[: limit - len(row.gen)]
            row.gen += ids
            row.generated += len(ids)
            wants_to_stop = c.stopped_by is not None and len(ids) == len(c.token_ids)
            if wants_to_stop and row.forced < rounds and len(row.gen) < limit:
                inject = rethink_for(i, row)[: limit - len(row.gen)]
                row.gen += inject
                row.injected += len(inject)
                row.forced += 1
                if len(row.gen) < limit:
                    going.append(i)
                else:
                    row.ended_by = "budget"
            elif len(row.gen) >= limit:
                row.ended_by = "budget"
        active, r = going, r + 1


def _answer(backend: Backend, base: list[list[int]], rows: list[_Thought], params: SamplingParams,
            budgets: list[int], seed: int, fmt: ReasoningFormat,
            images: Sequence[Sequence[str]] | None) -> list[Completion]:
    """Close each thought and generate its answer within the row's budget: one batched call."""
    close = backend.encode(f"{fmt.think_end}\n\n")
    todo = [i for i, b in enumerate(budgets) if b > 0]
    answers: dict[int, Completion] = {}
    if todo:
        step = replace(params, max_new_tokens=max(budgets[i] for i in todo))
        outs = backend.generate_ids([base[i] + rows[i].gen + close for i in todo], step, _seed(seed, "answer"),
                                    **images_of(images, todo))
        for i, c in zip(todo, outs, strict=True):
            if len(c.token_ids) > budgets[i]:
                ids = c.token_ids[: budgets[i]]
                c = Completion(backend.decode(ids), len(ids), "length", tuple(ids), None)
            answers[i] = c
    out = []
    for i, row in enumerate(rows):
        a = answers.get(i)
        ids = row.gen + close + (list(a.token_ids) if a else [])
        text = backend.decode(row.gen + close) + (a.text if a else "")
        out.append(Completion(text=text, n_tokens=len(ids), finish_reason=a.finish_reason if a else "length",
                              token_ids=tuple(ids), stopped_by=a.stopped_by if a else None))
    return out


def morethink_stats(controls: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """What MoreThink did over a run's samples (their ``control`` records): rounds, thinking tokens and
    budgets actually used, for the manifest and the reports; None when no sample ran MoreThink."""
    rows = [c for c in controls if c.get("thinking") == "more"]
    if not rows:
        return None

    def col(key: str) -> list[Any]:
        return [c[key] for c in rows if isinstance(c.get(key), int | float)]

    def mean(v: list[Any]) -> float | None:
        return round(sum(v) / len(v), 1) if v else None

    rounds, thought, injected, answer = col("rounds"), col("thinking_tokens"), col("injected_tokens"), col(
        "answer_budget")
    modes = sorted({str(c.get("budget_mode", "shared")) for c in rows})  # records before the modes were shared
    ended = [c.get("ended_by") for c in rows if c.get("ended_by")]
    return {
        "n_samples": len(rows), "budget_mode": modes[0] if len(modes) == 1 else modes,
        "max_rounds": max(col("max_rounds"), default=None), "think_budget": max(col("think_budget"), default=None),
        "rounds_mean": mean(rounds), "rounds_max": max(rounds, default=None),
        "thinking_tokens_mean": mean(thought), "thinking_tokens_max": max(thought, default=None),
        "injected_tokens_mean": mean(injected),
        "answer_budget_min": min(answer, default=None), "answer_budget_max": max(answer, default=None),
        "ended_by": {k: ended.count(k) for k in ("budget", "rounds") if k in ended},
    }


def morethink_line(stats: dict[str, Any]) -> str:
    """One line for the reports: the budgets MoreThink actually used."""
    def of(value: Any, limit: Any) -> str:
        return f"{value}" + (f" of {limit}" if limit is not None else "")

    mode = stats.get("budget_mode")
    rounds_max = of(stats.get("rounds_max"), stats.get("max_rounds"))
    parts = [f"rounds used mean {stats.get('rounds_mean')} (max {rounds_max})",
             f"thinking tokens mean {stats.get('thinking_tokens_mean')} "
             f"(max {of(stats.get('thinking_tokens_max'), stats.get('think_budget'))})"]
    lo, hi = stats.get("answer_budget_min"), stats.get("answer_budget_max")
    if lo is not None:
        parts.append(f"answer budget {lo}" if lo == hi else f"answer budget {lo}-{hi}")
    ended = stats.get("ended_by") or {}
    if ended:
        parts.append("ended by " + ", ".join(f"{k} {v}" for k, v in ended.items()))
    label = {"safechain": "SafeChain's procedure", "shared": "shared budget"}.get(mode) if isinstance(mode, str) \
        else "mixed budget modes"
    return f"MoreThink ({label}, {stats.get('n_samples')} samples): " + "; ".join(parts)
