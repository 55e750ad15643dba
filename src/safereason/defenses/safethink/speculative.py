"""SafeThink's ``speculative`` mode: draft the whole continuation, score its first monitored steps afterwards,
and re-draft only the rows whose step fails (no trigger: exactly the undefended call)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from safereason.defenses.base import DefenseOutput
from safereason.defenses.safethink.common import _seed
from safereason.models.base import Backend, Completion, SamplingParams, ids_before
from safereason.reasoning.controls import images_of
from safereason.reasoning.formats import ReasoningFormat

if TYPE_CHECKING:
    from safereason.defenses.safethink import SafeThinkDefense


def steps_in(self: SafeThinkDefense, text: str, start: int, ids: Sequence[int], decode: Any, fmt: ReasoningFormat,
           n_steps: int) -> tuple[list[tuple[int, int]], bool]:
    """Up to ``n_steps`` (start, end) character spans of steps in ``text`` from ``start``: a step ends at
    the delimiter, at the end of the thought, after ``max_step_tokens`` tokens, or at the end of the text.
    The flag says whether the thought closes within the spans' reach (monitoring stops there)."""
    close = text.find(fmt.think_end, start) if fmt.think_end else -1
    limit = close if close >= 0 else len(text)
    spans: list[tuple[int, int]] = []
    pos = start
    while len(spans) < n_steps and pos < limit:
        d = text.find(self.delimiter, pos, limit)
        end = d if d >= 0 else limit
        # the max_step_tokens rule, on the tokens of this span
        first = len(ids_before(ids, pos, decode))
        if len(ids_before(ids, end, decode)) - first > self.max_step_tokens:
            end = len(decode(list(ids[: first + self.max_step_tokens])))
            spans.append((pos, end))
            pos = end
            continue
        spans.append((pos, end))
        pos = end + len(self.delimiter) if d >= 0 else limit
    return spans, close >= 0


def generate_speculative(self: SafeThinkDefense, backend: Backend, prompt_texts: Sequence[str],
                         user_prompts: Sequence[str], params: SamplingParams, seed: int, *, fmt: ReasoningFormat,
                         images: Sequence[Sequence[str]] | None = None) -> list[DefenseOutput]:
    """Draft the whole continuation in one call, then score its first monitored steps; only a row whose
    step fails is cut back to that step's start and steered, then drafted again from there.

    Same rule as the step-by-step loop (score each of the first m steps; below tau, re-generate that step
    after the prefix, up to B times), but a batch no longer waits at every step boundary for its slowest
    row: with no intervention the output is exactly the undefended output (same seed, one call)."""
    n = len(prompt_texts)
    base = [backend.encode(t) for t in prompt_texts]
    gen: list[list[int]] = [[] for _ in range(n)]
    budget = params.max_new_tokens
    next_step = [1 if fmt.has_thinking else self.max_steps + 1] * n
    done = [False] * n
    finals: dict[int, Completion] = {}
    final_text: dict[int, str] = {}  # the draft's own text where it ends a row (a stop string stays cut)
    steps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    interventions: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    stops = (self.delimiter, *((fmt.think_end,) if fmt.think_end else ()), *params.stop)
    step_params = replace(params, stop=stops, ignore_eos=False)
    prefix_ids = backend.encode(self.prefix)
    decode = backend.decode

    def thinking_of(i: int, text: str) -> str:
        split = fmt.split(text, prompt_texts[i])
        return split.thinking if split.thinking is not None else text

    round_ = 0
    while True:
        rows = [i for i in range(n) if not done[i]]
        if not rows:
            break
        room = {i: budget - len(gen[i]) for i in rows}
        draft_seed = seed if round_ == 0 else _seed(seed, "draft", round_)  # round 0: the undefended call
        outs = backend.generate_ids([base[i] + gen[i] for i in rows],
                                    replace(params, max_new_tokens=max(1, max(room.values()))), draft_seed,
                                    **images_of(images, rows))
        drafts: dict[int, Completion] = {}
        for i, c in zip(rows, outs, strict=True):
            if len(c.token_ids) > room[i]:
                ids = c.token_ids[: room[i]]
                c = Completion(decode(ids), len(ids), "length", tuple(ids), None)
            drafts[i] = c
        # the monitored steps of each draft, as character spans of the full generated text
        spans: dict[int, list[tuple[int, int]]] = {}
        texts: dict[int, str] = {}
        all_ids: dict[int, list[int]] = {}
        for i in rows:
            all_ids[i] = gen[i] + list(drafts[i].token_ids)
            texts[i] = decode(gen[i]) + drafts[i].text
            want = max(0, self.max_steps - next_step[i] + 1)
            spans[i], _ = steps_in(self, texts[i], len(decode(gen[i])), all_ids[i], decode, fmt, want)
        # score step t of every draft that has one, until each row passes all or fails one
        failed: dict[int, int] = {}  # row -> index into spans[i] of its first failing step
        t = 0
        while True:
            live = [i for i in rows if i not in failed and t < len(spans[i])]
            if not live:
                break
            safety = self.safety([user_prompts[i] for i in live],
                                 [thinking_of(i, texts[i][: spans[i][t][1]]) for i in live])
            for i, sfty in zip(live, safety, strict=True):
                steps[i].append({"step": next_step[i] + t, "end": spans[i][t][1], "safety": sfty})
                if sfty < self.threshold:
                    failed[i] = t
            t += 1
        for i in rows:
            if i not in failed:
                gen[i] = all_ids[i]
                finals[i] = drafts[i]
                final_text[i] = texts[i]
                done[i] = True
        if not failed:
            break
        # cut each failing row back to the start of its failing step and steer that step
        go = sorted(failed)
        record: dict[int, dict[str, Any]] = {}
        for i in go:
            start = spans[i][failed[i]][0]
            failing = steps[i].pop()  # the failing step's draft is discarded, its score is kept below
            gen[i] = ids_before(all_ids[i], start, decode)
            next_step[i] += failed[i]
            record[i] = {"step": next_step[i], "prefix": self.prefix, "attempts": 0,
                         "safety": [failing["safety"]], "accepted": False}
        cand: dict[int, tuple[list[int], str | None]] = {}
        need = [i for i in go if budget - len(gen[i]) - len(prefix_ids) > 0]
        for a in range(1, self.attempts + 1):
            if not need:
                break
            cap = {i: min(self.max_step_tokens, budget - len(gen[i]) - len(prefix_ids)) for i in need}
            outs = backend.generate_ids([base[i] + gen[i] + prefix_ids for i in need],
                                        replace(step_params, max_new_tokens=max(cap.values())),
                                        _seed(seed, "step", next_step[need[0]], a, round_),
                                        **images_of(images, need))
            cands = {i: (prefix_ids + list(c.token_ids)[: cap[i]],
                         c.stopped_by if len(c.token_ids) <= cap[i] else None)
                     for i, c in zip(need, outs, strict=True)}
            scores = self.safety([user_prompts[i] for i in need],
                                 [thinking_of(i, decode(gen[i] + cands[i][0])) for i in need])
            still = []
            for i, sfty in zip(need, scores, strict=True):
                cand[i] = cands[i]
                record[i]["attempts"] = a
                record[i]["safety"].append(sfty)
                if sfty >= self.threshold:
                    record[i]["accepted"] = True
                else:
                    still.append(i)
            need = still
        for i in go:
            interventions[i].append(record[i])
            if i not in cand:  # no budget left to steer: keep the draft as it was
                gen[i] = all_ids[i]
                finals[i] = drafts[i]
                final_text[i] = texts[i]
                done[i] = True
                continue
            ids, stopped_by = cand[i]
            gen[i] += ids
            if stopped_by == self.delimiter:
                gen[i] += backend.encode(self.delimiter)[: max(0, budget - len(gen[i]))]
            elif fmt.think_end is not None and stopped_by == fmt.think_end:
                gen[i] += backend.encode(fmt.think_end)[: max(0, budget - len(gen[i]))]
                next_step[i] = self.max_steps + 1  # the thought is closed: no more monitoring
            elif stopped_by is not None:
                done[i] = True  # EOS or a user stop string ended the sample inside the steered step
                finals[i] = Completion("", 0, "stop", (), stopped_by)
            steps[i].append({"step": next_step[i], "end": len(decode(gen[i])), "safety": record[i]["safety"][-1]})
            next_step[i] = min(next_step[i] + 1, self.max_steps + 1)
            if len(gen[i]) >= budget and not done[i]:
                done[i] = True
                finals[i] = Completion("", 0, "length", (), None)
        round_ += 1
    results = []
    for i in range(n):
        f = finals[i]
        text = final_text.get(i, decode(gen[i]))
        control = {"defense": "safethink", "steps": steps[i], "interventions": interventions[i]}
        results.append(DefenseOutput(Completion(text, len(gen[i]), f.finish_reason, tuple(gen[i]), f.stopped_by),
                                     control))
    return results
