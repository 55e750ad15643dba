"""SafeThink's ``stepwise`` mode: one batched call per monitored step (the reference the other modes are
tested against; the batch waits for its slowest row at every step)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from safereason.defenses.base import DefenseOutput
from safereason.defenses.safethink.common import _seed
from safereason.models.base import Backend, Completion, SamplingParams
from safereason.reasoning.controls import images_of
from safereason.reasoning.formats import ReasoningFormat

if TYPE_CHECKING:
    from safereason.defenses.safethink import SafeThinkDefense


def generate_stepwise(self: SafeThinkDefense, backend: Backend, prompt_texts: Sequence[str],
                      user_prompts: Sequence[str], params: SamplingParams, seed: int, *, fmt: ReasoningFormat,
                      images: Sequence[Sequence[str]] | None = None) -> list[DefenseOutput]:
    """Each monitored step is its own batched call (the batch waits for its slowest row at every step)."""
    n = len(prompt_texts)
    base = [backend.encode(t) for t in prompt_texts]
    gen: list[list[int]] = [[] for _ in range(n)]
    budget = params.max_new_tokens
    thinking = [fmt.has_thinking] * n  # still inside the trace (monitoring applies)
    ended: list[str | None] = [None] * n  # "eos" or a user stop string that ended the sample
    steps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    interventions: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    stops = (self.delimiter, *((fmt.think_end,) if fmt.think_end else ()), *params.stop)
    step_params = replace(params, stop=stops, ignore_eos=False)
    prefix_ids = backend.encode(self.prefix)

    def trace(i: int, extra: Sequence[int]) -> str:
        text = backend.decode(gen[i] + list(extra))
        split = fmt.split(text, prompt_texts[i])
        return split.thinking if split.thinking is not None else text

    for j in range(1, self.max_steps + 1):
        active = [i for i in range(n) if thinking[i] and ended[i] is None and len(gen[i]) < budget]
        if not active:
            break
        room = {i: min(self.max_step_tokens, budget - len(gen[i])) for i in active}
        outs = backend.generate_ids([base[i] + gen[i] for i in active],
                                    replace(step_params, max_new_tokens=max(room.values())),
                                    _seed(seed, "step", j, 0), **images_of(images, active))
        # candidate step per row: its ids and what ended it (None when cut by the step's token room)
        cand: dict[int, tuple[list[int], str | None]] = {}
        for i, c in zip(active, outs, strict=True):
            cand[i] = (list(c.token_ids)[: room[i]], c.stopped_by if len(c.token_ids) <= room[i] else None)
        safety = dict(zip(active, self.safety([user_prompts[i] for i in active],
                                              [trace(i, cand[i][0]) for i in active]), strict=True))
        need = [i for i in active if safety[i] < self.threshold]
        record = {i: {"step": j, "prefix": self.prefix, "attempts": 0, "safety": [safety[i]], "accepted": False}
                  for i in need}
        for a in range(1, self.attempts + 1):
            if not need:
                break
            room_a = {i: budget - len(gen[i]) - len(prefix_ids) for i in need}
            go = [i for i in need if room_a[i] > 0]
            for i in need:
                if room_a[i] <= 0:  # no budget left for the prefix: keep the step, stop trying
                    record[i]["attempts"] = a - 1
            if not go:
                break
            outs = backend.generate_ids(
                [base[i] + gen[i] + prefix_ids for i in go],
                replace(step_params, max_new_tokens=max(min(self.max_step_tokens, room_a[i]) for i in go)),
                _seed(seed, "step", j, a), **images_of(images, go))
            for i, c in zip(go, outs, strict=True):
                cap = min(self.max_step_tokens, room_a[i])
                cand[i] = (prefix_ids + list(c.token_ids)[:cap], c.stopped_by if len(c.token_ids) <= cap else None)
            scores = self.safety([user_prompts[i] for i in go], [trace(i, cand[i][0]) for i in go])
            still = []
            for i, s in zip(go, scores, strict=True):
                safety[i] = s
                record[i]["attempts"] = a
                record[i]["safety"].append(s)
                if s >= self.threshold:
                    record[i]["accepted"] = True
                else:
                    still.append(i)
            need = still
        for i, rec in record.items():
            interventions[i].append(rec)
        for i in active:
            ids, stopped_by = cand[i]
            gen[i] += ids
            if stopped_by == self.delimiter:
                gen[i] += backend.encode(self.delimiter)[: max(0, budget - len(gen[i]))]
            elif fmt.think_end is not None and stopped_by == fmt.think_end:
                gen[i] += backend.encode(fmt.think_end)[: max(0, budget - len(gen[i]))]
                thinking[i] = False
            elif stopped_by is not None:
                ended[i] = stopped_by  # EOS or a user stop string: the sample is over
            steps[i].append({"step": j, "end": len(backend.decode(gen[i])), "safety": safety[i],
                             "tokens": len(ids)})
    # unmonitored rest, with the batch's own seed: with m = 0 this is exactly the undefended call
    rest = [i for i in range(n) if ended[i] is None and len(gen[i]) < budget]
    finals: dict[int, Completion] = {}
    if rest:
        outs = backend.generate_ids([base[i] + gen[i] for i in rest],
                                    replace(params, max_new_tokens=max(budget - len(gen[i]) for i in rest)),
                                    seed, **images_of(images, rest))
        for i, c in zip(rest, outs, strict=True):
            if len(c.token_ids) > budget - len(gen[i]):
                ids = c.token_ids[: budget - len(gen[i])]
                c = Completion(backend.decode(ids), len(ids), "length", tuple(ids), None)
            finals[i] = c
    results = []
    for i in range(n):
        f = finals.get(i)
        head = backend.decode(gen[i]) if gen[i] else ""
        text = head + (f.text if f else "")
        ids = gen[i] + (list(f.token_ids) if f else [])
        if f is not None:
            finish, stopped_by = f.finish_reason, f.stopped_by
        elif ended[i] is not None:
            finish, stopped_by = "stop", ended[i]
        else:
            finish, stopped_by = "length", None
        control = {"defense": "safethink", "steps": steps[i], "interventions": interventions[i]}
        results.append(DefenseOutput(Completion(text, len(ids), finish, tuple(ids), stopped_by), control))
    return results
