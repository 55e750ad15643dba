"""Token-by-token batched decoding on one KV cache, with per-row rewind and forced tokens.

Why: SafeThink sends a row back to the start of a failing step and injects a steering prefix. With
``generate`` every steering is a new call that re-reads the whole prefix, and a synchronous batch waits for
its slowest row at every step. A session keeps every row's KV cache for the whole batch: a rewind only masks
the dropped positions (they stay in the cache but are never attended again, and the row's next positions
continue from the kept length, so the row computes exactly what a fresh call on the kept ids would), and a
forced prefix is fed one token per step while the other rows keep generating.

Sampling uses the same warpers as ``generate`` (temperature, top-k, top-p) but one ``torch.Generator`` per
row, so a row's tokens do not depend on the other rows of its batch; a rewind may reseed the row, so what it
generates after the rewind does not depend on how far it had got before it.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from safereason.models.base import Completion, SamplingParams, completion_from_ids, ids_before


def _warpers(params: SamplingParams) -> list[Any]:
    """The logits warpers ``generate`` applies for these params, in its order."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out: list[Any] = []
    if params.temperature != 1.0:
        out.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        out.append(TopKLogitsWarper(params.top_k))
    if params.top_p is not None and params.top_p < 1.0:
        out.append(TopPLogitsWarper(params.top_p))
    return out


#: generation-config settings that change the next-token distribution beyond temperature / top-k / top-p;
#: ``generate`` applies them from the model's config, a session does not, so it refuses such a model
_OTHER_LOGITS_SETTINGS = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0,
    "min_new_tokens": None, "bad_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None, "typical_p": 1.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None, "renormalize_logits": False,
}


def unsupported_settings(generation_config: Any) -> list[str]:
    """The model's generation settings a session would not apply (empty: a session samples as generate)."""
    out = []
    for name, neutral in _OTHER_LOGITS_SETTINGS.items():
        value = getattr(generation_config, name, neutral)
        if value not in (neutral, None) and value != [] and not (name == "min_length" and value == 0):
            out.append(f"{name}={value!r}")
    return out


class HFDecodeSession:
    """A batch of rows decoded together; see the module docstring for why.

    ``step()`` advances every live row by one position and returns the rows that sampled a token;
    ``rewind(row, keep, force)`` cuts a row back to its first ``keep`` generated ids and queues ``force``
    after them. A row ends at an EOS (or padding) id, at a stop string in its generated text, or at
    ``max_new_tokens`` kept ids; a rewind revives it.
    """

    def __init__(self, model: Any, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                 seeds: Sequence[int], *, stop_ids: Sequence[int], pad_id: int, device: str,
                 decode: Callable[[Sequence[int]], str], suppress_ids: Sequence[int] = ()) -> None:
        import torch
        from transformers import DynamicCache

        if not prompt_ids:
            raise ValueError("a decode session needs at least one row")
        if len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} rows")
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("cannot generate from an empty prompt")
        self.model, self.params, self.device, self.decode = model, params, device, decode
        self.pad_id = pad_id
        self.stop_ids = set(stop_ids)
        self.eos_id = next(iter(stop_ids))
        self.suppress = list(suppress_ids) + (sorted(self.stop_ids) if params.ignore_eos else [])
        self.warpers = [] if params.greedy else _warpers(params)
        self.window = max((len(s) for s in params.stop), default=0) + 2
        n = len(prompt_ids)
        self.n = n
        self.prompt_len = [len(p) for p in prompt_ids]
        self.gen: list[list[int]] = [[] for _ in range(n)]
        self.cols: list[list[int]] = [[] for _ in range(n)]  # cache column of each fed generated id
        self.fed = [0] * n  # generated ids already in the cache; gen[i][fed[i]:] wait to be fed
        self.ready = [True] * n  # self.logits[i] predicts the id after gen[i]
        self.done = [False] * n
        self.stopped_by: list[str | None] = [None] * n
        self.gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.forwards = 0

        width = max(self.prompt_len)
        ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompt_ids], device=device)
        self.mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        kw: dict[str, Any] = {}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            kw["logits_to_keep"] = 1
        self.cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                        past_key_values=self.cache, use_cache=True, **kw)
        self.forwards += 1
        self.cache = out.past_key_values
        self.logits = out.logits[:, -1, :].float().clone()  # a normal tensor: rows are overwritten in place

    # -- state -------------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return not all(self.done)

    def ids(self, row: int) -> list[int]:
        """The row's generated ids so far (without a final EOS)."""
        return list(self.gen[row])

    # -- decoding ----------------------------------------------------------------------------------
    def step(self) -> list[int]:
        """Feed one waiting id per row that has one (one forward pass), then sample one id for every live row
        with nothing left to feed. Returns the rows that sampled (rows that just ended included)."""
        feed = [i for i in range(self.n) if not self.done[i] and self.fed[i] < len(self.gen[i])]
        if feed:
            self._forward(feed)
        rows = [i for i in range(self.n) if not self.done[i] and self.ready[i] and self.fed[i] == len(self.gen[i])]
        if rows:
            for i, t in zip(rows, self._sample(rows), strict=True):
                self._append(i, t)
        return rows

    def _forward(self, feed: list[int]) -> None:
        import torch

        col = self.mask.shape[1]
        inp, pos, new = [self.pad_id] * self.n, [0] * self.n, [0] * self.n
        for i in feed:
            g = self.fed[i]
            inp[i] = self.gen[i][g]
            pos[i] = self.prompt_len[i] + g  # = the number of kept ids before it: masked columns do not count
            new[i] = 1
            self.cols[i].append(col)
            self.fed[i] += 1
        # built on the host and moved once: no per-row device writes
        self.mask = torch.cat([self.mask, torch.tensor(new, dtype=self.mask.dtype, device=self.device)[:, None]], 1)
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor(inp, device=self.device)[:, None], attention_mask=self.mask,
                             position_ids=torch.tensor(pos, device=self.device)[:, None],
                             past_key_values=self.cache, use_cache=True)
        self.forwards += 1
        self.cache = out.past_key_values
        got = [i for i in feed if self.fed[i] == len(self.gen[i])]
        if got:
            idx = torch.tensor(got, device=self.device)
            self.logits[idx] = out.logits[idx, -1, :].float()
            for i in got:
                self.ready[i] = True

    def _sample(self, rows: list[int]) -> list[int]:
        import torch

        scores = self.logits[rows]
        if self.suppress:
            scores[:, self.suppress] = float("-inf")
        if self.params.greedy:
            return scores.argmax(-1).tolist()
        for w in self.warpers:
            scores = w(None, scores)
        probs = torch.softmax(scores, dim=-1)
        # each row draws from its own generator; the draws stay on the device until one sync for the batch
        return torch.cat([torch.multinomial(probs[k], 1, generator=self.gens[i]) for k, i in enumerate(rows)]).tolist()

    def _append(self, i: int, t: int) -> None:
        self.ready[i] = False
        if t in self.stop_ids:
            self.done[i], self.stopped_by[i] = True, "eos"
            return
        self.gen[i].append(t)
        if self.params.stop:
            tail = self.decode(self.gen[i][-self.window:])
            if any(s in tail for s in self.params.stop):
                text = self.decode(self.gen[i])
                self.done[i], self.stopped_by[i] = True, min((text.find(s), s) for s in self.params.stop
                                                            if s in text)[1]
                return
        if len(self.gen[i]) >= self.params.max_new_tokens:
            self.done[i], self.stopped_by[i] = True, None

    def rewind(self, row: int, keep: int, force: Sequence[int], seed: int | None = None) -> None:
        """Cut ``row`` back to its first ``keep`` generated ids, queue ``force`` after them (it must be
        non-empty: its last id gives the logits the row samples from next) and revive the row; ``seed``
        reseeds the row's sampler."""
        if not force:
            raise ValueError("rewind needs at least one forced id")
        if not 0 <= keep <= len(self.gen[row]):
            raise ValueError(f"cannot keep {keep} of {len(self.gen[row])} generated ids")
        if keep + len(force) > self.params.max_new_tokens:
            raise ValueError("the forced ids do not fit in the row's token budget")
        if self.cols[row][keep:]:
            self.mask[row, self.cols[row][keep:]] = 0  # never attended again
        self.fed[row] = min(self.fed[row], keep)
        self.cols[row] = self.cols[row][: self.fed[row]]
        self.gen[row] = self.gen[row][:keep] + list(force)
        self.ready[row] = False
        self.done[row], self.stopped_by[row] = False, None
        if len(self.gen[row]) >= self.params.max_new_tokens:
            self.done[row] = True
        if seed is not None:
            self.gens[row].manual_seed(int(seed))

    def run(self) -> None:
        """Decode every row to its end, unmonitored."""
        while self.live:
            self.step()

    def completions(self) -> list[Completion]:
        """One completion per row, by the rule every backend uses (cut at EOS or a stop string)."""
        return [completion_from_ids(self.gen[i] + ([self.eos_id] if self.stopped_by[i] == "eos" else []),
                                    self.params, stop_ids=self.stop_ids, decode=self.decode)
                for i in range(self.n)]


def _call_seed(seed: int, call: int) -> int:
    return int.from_bytes(hashlib.sha256(f"chunk:{seed}:{call}".encode()).digest()[:4], "little")


class ChunkedSession:
    """The session interface over any backend's ``generate_ids`` (vLLM, OpenAI-compatible servers, Ray,
    image prompts): a step extends every live row by up to ``chunk`` ids in one batched call.

    Every row of a call generates the same number of ids (no stop at a step boundary), so no row waits for a
    slower one; a rewind costs only what is thrown away, and vLLM's prefix caching makes re-reading the kept
    ids cheap. ``run()`` finishes all rows in one call. Seeds are per call (the backends derive per-row seeds
    from them), so sampled rows depend on the call sequence, not on the session's batch.
    """

    def __init__(self, backend: Any, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, seed: int, *,
                 chunk: int, images: Sequence[Sequence[str]] | None = None) -> None:
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.backend, self.params, self.seed, self.chunk = backend, params, seed, chunk
        self.base = [list(p) for p in prompt_ids]
        self.images = images
        self.n = len(self.base)
        self.gen: list[list[int]] = [[] for _ in range(self.n)]
        self.done = [False] * self.n
        self.stopped_by: list[str | None] = [None] * self.n
        self.calls = 0

    @property
    def live(self) -> bool:
        return not all(self.done)

    def ids(self, row: int) -> list[int]:
        return list(self.gen[row])

    def _call(self, rows: list[int], max_new: int) -> None:
        from dataclasses import replace

        from safereason.reasoning.controls import images_of

        room = {i: self.params.max_new_tokens - len(self.gen[i]) for i in rows}
        outs = self.backend.generate_ids([self.base[i] + self.gen[i] for i in rows],
                                         replace(self.params, max_new_tokens=max(1, min(max_new, max(room.values())))),
                                         _call_seed(self.seed, self.calls), **images_of(self.images, rows))
        self.calls += 1
        decode = self.backend.decode
        for i, c in zip(rows, outs, strict=True):
            ids = list(c.token_ids)[: room[i]]
            self.gen[i] += ids
            if c.stopped_by is not None and len(c.token_ids) <= room[i]:
                self.done[i], self.stopped_by[i] = True, c.stopped_by
            elif len(self.gen[i]) >= self.params.max_new_tokens or not ids:
                self.done[i] = True
            if self.params.stop and self.stopped_by[i] is None:  # a stop string across the chunk boundary
                text = decode(self.gen[i])
                hits = [(k, s) for s in self.params.stop if (k := text.find(s)) >= 0]
                if hits:
                    cut, stop = min(hits)
                    self.gen[i] = ids_before(self.gen[i], cut, decode)
                    self.done[i], self.stopped_by[i] = True, stop

    def step(self) -> list[int]:
        rows = [i for i in range(self.n) if not self.done[i]]
        if rows:
            self._call(rows, self.chunk)
        return rows

    def rewind(self, row: int, keep: int, force: Sequence[int], seed: int | None = None) -> None:
        if not 0 <= keep <= len(self.gen[row]):
            raise ValueError(f"cannot keep {keep} of {len(self.gen[row])} generated ids")
        if keep + len(force) > self.params.max_new_tokens:
            raise ValueError("the forced ids do not fit in the row's token budget")
        self.gen[row] = self.gen[row][:keep] + list(force)
        self.done[row], self.stopped_by[row] = len(self.gen[row]) >= self.params.max_new_tokens, None

    def run(self) -> None:
        while rows := [i for i in range(self.n) if not self.done[i]]:
            self._call(rows, self.params.max_new_tokens)

    def completions(self) -> list[Completion]:
        out = []
        for i in range(self.n):
            stopped = self.stopped_by[i]
            out.append(Completion(self.backend.decode(self.gen[i]), len(self.gen[i]),
                                  "stop" if stopped is not None else "length", tuple(self.gen[i]), stopped))
        return out
