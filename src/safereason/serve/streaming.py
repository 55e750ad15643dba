"""Streaming pieces of ``safereason serve``: turning settled token ids into ``delta.reasoning`` /
``delta.content`` text that never has to be taken back, and the hook that sees a transformers generation's ids
as they are sampled.

Why a hold-back: the non-streamed reply is the split of the *whole* response (thinking stripped, cut at a stop
string, the steering prefix moved into the reasoning), and a streamed one must reassemble to exactly that. A
text that is still growing can change at its tail: a ``</think>`` or stop string half written, a multi-byte
character half decoded, trailing whitespace that the split strips. So each delta stops a few characters short
of what is known, and the rest is sent once the response is complete. Answer text is held while the defense
may still steer (SafeThink's monitored steps): a prefix injected there moves what precedes it into the
reasoning, which cannot be undone once sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from safereason.reasoning.formats import ReasoningFormat
from safereason.serve.policy import split_guarded

log = logging.getLogger("safereason.serve")


class Cancelled(Exception):
    """The client went away: raised from a progress hook to stop the generation."""


class IncrementalText:
    """``decode(ids)`` of a growing list of ids, decoding only its tail: a full decode per token makes a long
    stream quadratic. The text is checkpointed where it ends on a whole character; anything that does not
    extend the checkpoint (ids taken back, a decoder that does not concatenate) falls back to a full decode."""

    _OVERLAP = 4  # ids decoded again before the new ones, so that a merge across the boundary is seen

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self.decode = decode
        self.n, self.text, self.tail = 0, "", []  # the checkpoint: decode(ids[:n]) == text

    def __call__(self, ids: Sequence[int]) -> str:
        k = max(0, self.n - self._OVERLAP)
        text = None
        if len(ids) >= self.n and list(ids[k:self.n]) == self.tail:
            head, new = self.decode(ids[k:self.n]), self.decode(ids[k:])
            if new.startswith(head):
                text = self.text + new[len(head):]
        if text is None:
            text = self.decode(ids)
        if not text.endswith("\ufffd"):
            self.n, self.text = len(ids), text
            self.tail = list(ids[max(0, self.n - self._OVERLAP):self.n])
        return text


class DeltaStream:
    """What of a growing response may be sent: :meth:`update` with the settled ids returns the new
    ``(field, text)`` deltas, :meth:`finish` with the final reasoning and content sends the rest."""

    def __init__(self, fmt: ReasoningFormat, prompt_text: str, decode: Callable[[Sequence[int]], str],
                 stops: Sequence[str], prefix: str | None, withhold_flagged: bool) -> None:
        self.fmt, self.prompt_text, self.decode, self.stops = fmt, prompt_text, IncrementalText(decode), tuple(stops)
        self.prefix, self.withhold_flagged = prefix, withhold_flagged
        longest_stop = max((len(s) for s in self.stops), default=0)
        self.hold_reasoning = max(len(fmt.think_end or ""), longest_stop)
        self.hold_content = max(longest_stop, len(fmt.answer_end or ""))
        self.sent = {"reasoning": "", "content": ""}
        self.stopped = False  # a flagged step under the refuse policy: nothing more is sent

    def _split(self, text: str) -> tuple[str, str, str]:
        cut = [i for s in self.stops if (i := text.find(s)) >= 0]
        if cut:
            text = text[: min(cut)]
        prefix = self.prefix if self.prefix and self.prefix in text else None
        split = split_guarded(self.fmt, text, self.prompt_text, prefix)
        return split.thinking or "", split.answer or "", split.status

    def _held(self, text: str) -> bool:
        """Whether the text could still turn into an opened thought (``<th`` so far)."""
        lead, start = text.lstrip(), self.fmt.think_start
        return start is not None and len(lead) < len(start) and start.startswith(lead)

    def _deltas(self, reasoning: str, content: str, hold_r: int, hold_c: int) -> list[tuple[str, str]]:
        out = []
        for field, value, hold in (("reasoning", reasoning, hold_r), ("content", content, hold_c)):
            sent = self.sent[field]
            if not value.startswith(sent):
                continue  # can only grow; what differs is settled by finish()
            end = max(len(sent), len(value) - hold)
            if end > len(sent):
                out.append((field, value[len(sent):end]))
                self.sent[field] = value[:end]
        return out

    def update(self, ids: Sequence[int], settled: bool, flagged: bool) -> list[tuple[str, str]]:
        """Deltas for the settled ids so far; ``settled``: the defense can no longer steer this response;
        ``flagged``: a monitored step stayed unsafe (under the refuse policy nothing more is sent)."""
        if self.stopped or (flagged and self.withhold_flagged):
            self.stopped = True
            return []
        text = self.decode(ids).rstrip("\ufffd")  # a character still being decoded
        if self._held(text):
            return []
        reasoning, content, status = self._split(text)
        if content and not settled:
            return []  # a steering prefix may yet move it into the reasoning
        hold_r = 0 if status == "closed" else self.hold_reasoning
        if self.fmt.answer_start is not None and status != "unclosed" and self.fmt.answer_start not in text:
            return self._deltas(reasoning, "", hold_r, 0)  # the answer may yet start further on
        return self._deltas(reasoning, content, hold_r, self.hold_content)

    def finish(self, reasoning: str | None, content: str | None) -> list[tuple[str, str]]:
        """The rest of the final reply (what :meth:`update` held back)."""
        out = []
        for field, value in (("reasoning", reasoning or ""), ("content", content or "")):
            sent = self.sent[field]
            if not value.startswith(sent):
                log.warning("streamed %s diverged from the final reply (sent %d chars)", field, len(sent))
                continue
            if len(value) > len(sent):
                out.append((field, value[len(sent):]))
                self.sent[field] = value
        return out


class CancelCheck:
    """Stops a generation nobody waits for any more: transformers' streamer interface (any batch size) and a
    defense's progress hook in one, raising :class:`Cancelled` at the next token or step once ``cancel`` is set
    (the client of a non-streamed request went away)."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, *_: Any) -> None:
        if self.cancel.is_set():
            raise Cancelled

    def put(self, value: Any) -> None:
        self()

    def end(self) -> None:
        pass


class IdStreamer:
    """transformers' streamer interface (``put``/``end``) for one row: passes the generated ids so far, cut at
    the first stop id, to ``on_ids``; the first ``put`` is the prompt."""

    def __init__(self, on_ids: Callable[[list[int]], None], stop_ids: Sequence[int]) -> None:
        self.on_ids, self.stop_ids = on_ids, set(stop_ids)
        self.ids: list[int] = []
        self._prompt_seen = False
        self._ended = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self._ended:
            return
        for t in value.reshape(-1).tolist():
            if t in self.stop_ids:
                self._ended = True
                break
            self.ids.append(t)
        self.on_ids(self.ids)

    def end(self) -> None:
        self._ended = True
