"""SafeThink: monitor the first reasoning steps with a safety scorer and steer unsafe ones back.

The trace is generated step by step (a step ends at ``delimiter``, default a blank line, or after
``max_step_tokens``). After each of the first ``max_steps`` (m) steps the scorer judges (prompt, trace so
far); safety = 1 - P(unsafe) (a judge without a probability gives 0 or 1). When safety < ``threshold`` (tau),
the step is re-generated from the trace before it plus the steering prefix (``prefix``, s), up to
``attempts`` (B) times; the first candidate with safety >= tau is kept, else the last one (satisficing, not
maximising). After step m the model continues unmonitored to the end of its thinking and answer.

Defaults are ours, since the paper's exact values are not public: s = "Wait, think safely.", tau = 0.5,
m = 3, B = 4. With m = 0 the output is exactly the undefended output (same seed, same ids).

All steps are batched across the prompts and samples of a batch; each continuation extends the exact ids
generated so far. Four implementations of the same rule (``mode``): ``session`` decodes token by token on
one KV cache and rewinds only the failing row (no waiting, no prefix re-read; transformers, text prompts);
``chunked`` extends all rows by fixed chunks per batched call and rewinds only failing rows (any backend);
``speculative`` drafts whole continuations and re-drafts failing rows (no trigger: exactly the undefended
call); ``stepwise`` makes one batched call per step (the reference the others are tested against). ``auto``
picks session where the backend has it, else chunked.

A scorer error stops the run (it is resumable) rather than letting a step pass unmonitored. What happened
is recorded per sample in ``control``: the step boundaries (character offsets into the response) with their
safety, and each intervention (step, prefix, attempts, safety per attempt); the injected prefix stays visible
in the response and the thinking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from safereason.defenses.base import DEFENSES, Defense, DefenseOutput
from safereason.errors import ConfigError, SafereasonError
from safereason.models.base import Backend, Completion, SamplingParams, ids_before
from safereason.reasoning.controls import images_of
from safereason.reasoning.formats import ReasoningFormat

DEFAULT_PREFIX = "Wait, think safely."
#: how the monitored steps are generated (same rule, different cost; see the module docstring)
MODES = ("auto", "session", "chunked", "speculative", "stepwise")


class DefenseError(SafereasonError):
    """A defense could not do its job (its safety scorer failed): the batch is not recorded."""


def _ids_through(ids: Sequence[int], cut: int, decode: Any) -> int:
    """How many of ``ids`` it takes for their text to reach character ``cut`` (the token holding it included)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= cut:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


class SafeThinkDefense(Defense):
    name = "safethink"
    generates = True

    def __init__(self, scorer: str = "rs-match", scorer_options: dict[str, Any] | None = None,
                 prefix: str = DEFAULT_PREFIX, threshold: float = 0.5, max_steps: int = 3, attempts: int = 4,
                 delimiter: str = "\n\n", max_step_tokens: int = 128, mode: str = "auto",
                 chunk_tokens: int | None = None) -> None:
        from safereason.judges import JUDGES

        factory = JUDGES.get(scorer)
        if "unsafe" not in getattr(factory, "outputs", ("unsafe",)):
            raise ConfigError(f"safethink scorer {scorer!r} is a refusal judge; it needs a safety judge")
        if not prefix.strip():
            raise ConfigError("safethink needs a non-empty steering prefix")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"safethink threshold must be in [0, 1], got {threshold}")
        if max_steps < 0 or attempts < 1 or max_step_tokens < 1:
            raise ConfigError("safethink needs max_steps >= 0, attempts >= 1 and max_step_tokens >= 1")
        if not delimiter:
            raise ConfigError("safethink needs a non-empty step delimiter")
        if mode not in MODES:
            raise ConfigError(f"safethink mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.scorer_name, self.scorer_options = scorer, dict(scorer_options or {})
        self.prefix, self.threshold, self.max_steps, self.attempts = prefix, threshold, max_steps, attempts
        self.delimiter, self.max_step_tokens = delimiter, max_step_tokens
        if chunk_tokens is not None and chunk_tokens < 1:
            raise ConfigError("safethink chunk_tokens must be >= 1")
        self.mode, self.chunk_tokens = mode, chunk_tokens
        self._scorer: Any = None

    def identity(self) -> dict[str, Any]:
        from safereason.judges import build_judge, identity_hash

        return {"name": self.name, "scorer": self.scorer_name,
                "scorer_identity": identity_hash(build_judge(self.scorer_name, self.scorer_options)),
                "prefix": self.prefix, "threshold": self.threshold, "max_steps": self.max_steps,
                "attempts": self.attempts, "delimiter": self.delimiter, "max_step_tokens": self.max_step_tokens,
                "mode": self.mode, "chunk_tokens": self.chunk_tokens}

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from safereason.judges import build_judge

            self._scorer = build_judge(self.scorer_name, self.scorer_options)
        return self._scorer

    def close(self) -> None:
        if self._scorer is not None:
            from safereason.judges import close_judge

            close_judge(self._scorer)
            self._scorer = None

    def safety(self, prompts: Sequence[str], traces: Sequence[str]) -> list[float]:
        """1 - P(unsafe) per (prompt, trace); any scorer error raises, it never passes as safe."""
        from safereason.judges import JudgeItem

        verdicts = self.scorer.judge([JudgeItem(prompt=p, text=t if t.strip() else "(empty)")
                                      for p, t in zip(prompts, traces, strict=True)])
        out = []
        for v in verdicts:
            if v.error is not None or v.unsafe is None:
                raise DefenseError(f"safethink scorer {self.scorer_name!r} failed: {v.error or 'no verdict'}; "
                                   "the batch was not recorded (re-run to resume)")
            out.append(1.0 - (v.score if v.score is not None else float(v.unsafe)))
        return out

    def generate(self, backend: Backend, prompt_texts: Sequence[str], user_prompts: Sequence[str],
                 params: SamplingParams, seed: int, *, fmt: ReasoningFormat, keys: Sequence[str],
                 images: Sequence[Sequence[str]] | None = None) -> list[DefenseOutput]:
        mode = self.resolve_mode(backend, images)
        if mode == "session":
            return self._generate_session(backend, prompt_texts, user_prompts, params, seed, fmt=fmt, keys=keys)
        if mode == "chunked":
            return self._generate_session(backend, prompt_texts, user_prompts, params, seed, fmt=fmt, keys=keys,
                                          images=images, chunk=self.chunk_tokens or self.max_step_tokens)
        if mode == "speculative":
            return self._generate_speculative(backend, prompt_texts, user_prompts, params, seed, fmt=fmt,
                                              images=images)
        return self._generate_stepwise(backend, prompt_texts, user_prompts, params, seed, fmt=fmt, images=images)

    def resolve_mode(self, backend: Backend, images: Sequence[Sequence[str]] | None = None) -> str:
        """``auto``: a decode session where the backend has one (transformers, text only), else chunked."""
        can = bool(getattr(backend, "supports_session", False)) and not (images and any(images))
        if self.mode == "auto":
            return "session" if can else "chunked"
        if self.mode == "session" and not can:
            raise ConfigError(f"safethink mode 'session' needs a backend with decode sessions (transformers, "
                              f"text only); {getattr(backend, 'name', type(backend).__name__)!r} has none: "
                              "use mode=chunked")
        return self.mode

    def _generate_session(self, backend: Any, prompt_texts: Sequence[str], user_prompts: Sequence[str],
                          params: SamplingParams, seed: int, *, fmt: ReasoningFormat, keys: Sequence[str],
                          images: Sequence[Sequence[str]] | None = None, chunk: int | None = None
                          ) -> list[DefenseOutput]:
        """Rows advance together (one id per step on a KV-cache session, ``chunk`` ids per batched call
        otherwise); each monitored step is scored as soon as it is complete, with the other rows completing one
        in the same step, and a failing step is rewound to its start and steered while the other rows go on.
        No row waits for another at a step boundary."""
        from safereason.models.session import ChunkedSession

        n = len(prompt_texts)
        base = [backend.encode(t) for t in prompt_texts]
        if self.max_steps == 0 or not fmt.has_thinking:  # nothing to monitor: exactly the undefended call
            outs = backend.generate_ids(base, params, seed, **images_of(images, range(n)))
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
                    elif rec is not None:
                        rec["accepted"] = sfty >= self.threshold
                        interventions[i].append(record.pop(i))
                    steps[i].append({"step": step_no[i], "end": rec_end, "safety": sfty, "tokens": end_ids - start[i]})
                    step_no[i] = self.max_steps + 1 if closes else step_no[i] + 1
                    start[i] = body[i] = end_ids
                    text_from[i] = rec_end
                    if step_no[i] <= self.max_steps:
                        todo.append(i)
        for i, rec in record.items():  # an attempt the sample's end left unscored (not expected): keep it
            interventions[i].append(rec)
        sess.run()  # the rest, unmonitored
        control = [{"defense": "safethink", "steps": steps[i], "interventions": interventions[i]} for i in range(n)]
        return [DefenseOutput(c, ctl) for c, ctl in zip(sess.completions(), control, strict=True)]

    def _generate_stepwise(self, backend: Backend, prompt_texts: Sequence[str], user_prompts: Sequence[str],
                           params: SamplingParams, seed: int, *, fmt: ReasoningFormat,
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


    def _steps(self, text: str, start: int, ids: Sequence[int], decode: Any, fmt: ReasoningFormat,
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

    def _generate_speculative(self, backend: Backend, prompt_texts: Sequence[str], user_prompts: Sequence[str],
                              params: SamplingParams, seed: int, *, fmt: ReasoningFormat,
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
                spans[i], _ = self._steps(texts[i], len(decode(gen[i])), all_ids[i], decode, fmt, want)
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


DEFENSES.add("safethink", SafeThinkDefense)
