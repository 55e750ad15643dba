"""SafeThink's ``session`` and ``chunked`` modes: rows advance together on one decode session (a KV cache, or
chunked ``generate_ids`` calls) and a failing step is rewound and steered while the other rows go on.

``on_progress`` (streaming): called with each row's *settled* ids, the ids no rewind can take back any more,
as they grow: a monitored step only once it is judged, every id once monitoring is over. Raising from it
stops the generation (a client that went away).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from safereason.defenses.base import DefenseOutput
from safereason.defenses.safethink.common import Progress, _ids_through, _seed
from safereason.models.base import SamplingParams
from safereason.reasoning.controls import images_of
from safereason.reasoning.formats import ReasoningFormat

if TYPE_CHECKING:
    from safereason.defenses.safethink import SafeThinkDefense


def generate_session(self: SafeThinkDefense, backend: Any, prompt_texts: Sequence[str],
                     user_prompts: Sequence[str], params: SamplingParams, seed: int, *, fmt: ReasoningFormat,
                     keys: Sequence[str], images: Sequence[Sequence[str]] | None = None, chunk: int | None = None,
                     on_progress: Progress | None = None) -> list[DefenseOutput]:
    """Rows advance together (one id per step on a KV-cache session, ``chunk`` ids per batched call
    otherwise); each monitored step is scored as soon as it is complete, with the other rows completing one
    in the same step, and a failing step is rewound to its start and steered while the other rows go on.
    No row waits for another at a step boundary."""
    from safereason.models.session import ChunkedSession

    n = len(prompt_texts)
    base = [backend.encode(t) for t in prompt_texts]
    if self.max_steps == 0 or not fmt.has_thinking:  # nothing to monitor: exactly the undefended call
        outs = backend.generate_ids(base, params, seed, **images_of(images, range(n)))
        for i, c in enumerate(outs if on_progress is not None else []):
            on_progress(i, list(c.token_ids), True, False)
        return [DefenseOutput(c, {"defense": "safethink", "steps": [], "interventions": []}) for c in outs]
    decode = backend.decode
    prefix_ids = backend.encode(self.prefix)
    budget = params.max_new_tokens
    sess: Any
    if chunk is None:
        # per-row seeds from the batch seed and the row's place, as vLLM's: a request id in a key must not
        # change what a seed reproduces
        sess = backend.open_session(base, params, [_seed(seed, "row", i) for i in range(n)])
    else:
        sess = ChunkedSession(backend, base, params, seed, chunk=chunk, images=images)
    step_no = [1] * n  # the step being generated; > max_steps: unmonitored
    start = [0] * n  # generated-id index where the current step starts (before any injected prefix)
    body = [0] * n  # ... and where the model's own text of it starts (after the prefix)
    text_from = [0] * n  # character offset where the step's own text starts
    record: dict[int, dict[str, Any]] = {}  # the open intervention of a row
    steps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    interventions: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    flagged = [False] * n  # a monitored step of the row stayed unsafe

    def report(i: int, ids: list[int]) -> None:
        if on_progress is not None:
            on_progress(i, ids, step_no[i] > self.max_steps or sess.done[i], flagged[i])

    def thinking_of(i: int, text: str) -> str:
        split = fmt.split(text, prompt_texts[i])
        return split.thinking if split.thinking is not None else text

    window = max(len(self.delimiter), len(fmt.think_end or "")) + 2

    def next_step(i: int) -> tuple[int, int, int, bool] | None:
        """The row's current step if it is complete: (end of its text, end recorded, ids through its end,
        closes the thought); None while it is still being written."""
        ids = sess.gen[i]
        cap_at = body[i] + self.max_step_tokens
        if chunk is None and not sess.done[i] and len(ids) < cap_at and len(ids) > body[i] + window:
            # one new id: look at the tail only (a token holds at least one character), the whole text
            # only when a boundary string shows there; keeps a large batch cheap per token
            tail = decode(ids[-window:])
            if self.delimiter not in tail and not (fmt.think_end and fmt.think_end in tail):
                return None
        text = decode(ids)
        cap = len(decode(ids[:cap_at])) if len(ids) >= cap_at else None
        limit = len(text) if cap is None else cap
        close = text.find(fmt.think_end, text_from[i], limit) if fmt.think_end else -1
        d = text.find(self.delimiter, text_from[i], close if close >= 0 else limit)
        # a step ends with the id that completes its delimiter; the next one starts after that id (where a
        # delimiter ends inside an id, as in " the" for a space, that id's rest counts as this step's)
        if d >= 0:
            through = _ids_through(ids, d + len(self.delimiter), decode)
            return d, len(decode(ids[:through])), through, False
        if close >= 0:
            return close, close, _ids_through(ids, close + len(fmt.think_end), decode), True
        if cap is not None:
            return cap, cap, cap_at, False
        if sess.done[i]:
            stop = sess.stopped_by[i]
            end = text.find(stop, text_from[i]) if stop not in (None, "eos") else -1
            end = end if end >= 0 else len(text)
            if len(ids) <= start[i]:
                return None  # the sample ended with the previous step: nothing more to monitor
            return end, end, len(ids), False
        return None

    while any(step_no[i] <= self.max_steps and not sess.done[i] for i in range(n)):
        todo = [i for i in sess.step() if step_no[i] <= self.max_steps]
        while todo:  # a chunk may complete several steps of a row: score them in order
            ended = [(i, st) for i in todo if (st := next_step(i)) is not None]
            if not ended:
                break
            safety = self.safety([user_prompts[i] for i, _ in ended],
                                 [thinking_of(i, decode(sess.gen[i])[: st[0]]) for i, st in ended])
            todo = []
            for (i, (_, rec_end, end_ids, closes)), sfty in zip(ended, safety, strict=True):
                rec = record.get(i)
                if rec is not None:
                    rec["safety"].append(sfty)
                if sfty < self.threshold and (rec is None or rec["attempts"] < self.attempts) \
                        and budget - start[i] - len(prefix_ids) > 0:
                    if rec is None:
                        rec = record[i] = {"step": step_no[i], "prefix": self.prefix, "attempts": 0,
                                           "safety": [sfty], "accepted": False}
                    rec["attempts"] += 1
                    sess.rewind(i, start[i], prefix_ids,
                                seed=_seed(seed, "row", i, "step", step_no[i], rec["attempts"]))
                    body[i] = start[i] + len(prefix_ids)
                    text_from[i] = len(decode(sess.gen[i]))
                    continue
                if rec is None and sfty < self.threshold:  # no budget left to steer: the step stays
                    interventions[i].append({"step": step_no[i], "prefix": self.prefix, "attempts": 0,
                                             "safety": [sfty], "accepted": False})
                    flagged[i] = True
                elif rec is not None:
                    rec["accepted"] = sfty >= self.threshold
                    flagged[i] = flagged[i] or not rec["accepted"]
                    interventions[i].append(record.pop(i))
                steps[i].append({"step": step_no[i], "end": rec_end, "safety": sfty, "tokens": end_ids - start[i]})
                step_no[i] = self.max_steps + 1 if closes else step_no[i] + 1
                start[i] = body[i] = end_ids
                text_from[i] = rec_end
                report(i, sess.gen[i][:end_ids])  # judged: it may leave the server
                if step_no[i] <= self.max_steps:
                    todo.append(i)
    for i, rec in record.items():  # an attempt the sample's end left unscored (not expected): keep it
        interventions[i].append(rec)
    for i in range(n):
        report(i, sess.gen[i])
    if on_progress is not None and chunk is None:  # the rest, unmonitored, streamed as it is decoded
        while sess.live:
            for i in sess.step():
                on_progress(i, sess.gen[i], True, flagged[i])
    else:
        sess.run()  # the rest, unmonitored
    control = [{"defense": "safethink", "steps": steps[i], "interventions": interventions[i]} for i in range(n)]
    return [DefenseOutput(c, ctl) for c, ctl in zip(sess.completions(), control, strict=True)]
