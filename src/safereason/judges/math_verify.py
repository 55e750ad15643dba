"""``math-verify``: utility grading of math answers with Hugging Face's Math-Verify (``pip install math-verify``).

The reference (``meta["gold"]``: MATH-500, GSM8K, AIME 2024) is parsed as LaTeX (``$gold$``, and it must give a
SymPy object: no fall-back to the raw string) and the judged text
with Math-Verify's default extraction (``\\boxed{}`` first, then other LaTeX and plain expressions, the last
answer in the text winning); ``verify(gold, prediction)`` then compares them symbolically and numerically, so
``\\frac12``, ``0.5`` and ``1/2`` agree where exact string matching would not.

A gold answer that does not parse is a judge *error* (the reference is broken, not the model); a prediction
without a parseable answer, or one that times out, is ``correct=False`` with the reason in ``raw``.

Math-Verify bounds its own work with ``signal.alarm``, which only works in the main thread. Called from another
thread (a server, a thread pool), the judge grades in a worker process instead, where the alarms work again, with
a wall-clock bound around each call; a worker that overruns it is killed and the item is ``correct=False``.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from safereason.errors import ConfigError
from safereason.judges.base import JUDGES, JudgeItem
from safereason.records import Verdict

#: Math-Verify's own defaults (``parse(parsing_timeout=5)``, ``verify(timeout_seconds=5)``), in whole seconds
#: because ``signal.alarm`` takes whole seconds.
PARSING_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5


def _extracted(parsed: list[Any]) -> str:
    """The text Math-Verify extracted (the string it keeps next to the SymPy object); never ``str()`` of a SymPy
    object, which can itself hang on a pathological expression."""
    texts = [p for p in parsed if isinstance(p, str)]
    return texts[-1][:200] if texts else "(no text)"


def grade(gold: str, text: str, parsing_timeout: int, verify_timeout: int) -> tuple[str, str]:
    """``(outcome, detail)``: outcome is ``correct`` / ``incorrect`` / ``no_answer`` / ``gold_error``.

    Must run in a main thread (Math-Verify's alarms); :class:`MathVerifyJudge` takes care of that.
    """
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    try:
        gold_parsed = parse(f"${gold}$", fallback_mode="no_fallback", parsing_timeout=parsing_timeout,
                            raise_on_error=True)
    except (Exception, TimeoutException) as e:
        return "gold_error", f"the reference {gold!r} could not be parsed: {type(e).__name__}: {str(e)[:200]}"
    if not gold_parsed:
        return "gold_error", f"the reference {gold!r} holds no answer Math-Verify can parse"
    try:
        pred = parse(text, parsing_timeout=parsing_timeout, raise_on_error=True)
    except (Exception, TimeoutException) as e:
        return "no_answer", f"parsing the answer failed: {type(e).__name__}: {str(e)[:200]}"
    if not pred:
        return "no_answer", "no answer found in the text"
    try:
        ok = verify(gold_parsed, pred, timeout_seconds=verify_timeout, raise_on_error=True)
    except (Exception, TimeoutException) as e:
        return "incorrect", f"comparing {_extracted(pred)!r} with {gold!r} failed: {type(e).__name__}: {str(e)[:200]}"
    return ("correct" if ok else "incorrect"), f"extracted {_extracted(pred)!r}, reference {gold!r}"


def _grade_many(jobs: list[tuple[str, str]], parsing_timeout: int, verify_timeout: int) -> list[tuple[str, str]]:
    return [grade(g, t, parsing_timeout, verify_timeout) for g, t in jobs]


class MathVerifyJudge:
    """Sets ``Verdict.correct`` from Math-Verify; ``label`` is the outcome (correct / incorrect / no_answer)."""

    name = "math-verify"
    outputs = ("correct",)

    def __init__(self, parsing_timeout: int = PARSING_TIMEOUT_S, verify_timeout: int = VERIFY_TIMEOUT_S) -> None:
        for what, value in (("parsing_timeout", parsing_timeout), ("verify_timeout", verify_timeout)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"math-verify: {what} must be a whole number of seconds >= 1, got {value!r}")
        self.parsing_timeout = parsing_timeout
        self.verify_timeout = verify_timeout
        self._pool: Any = None  # the worker process used off the main thread, started on first need
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"name": "math-verify", "version": 1, "math_verify": metadata.version("math-verify"),
                "gold": "$gold$, no fallback", "extraction": "default (latex + expr)",
                "parsing_timeout": self.parsing_timeout, "verify_timeout": self.verify_timeout}

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        jobs = [(i, item.reference, item.text) for i, item in enumerate(items) if item.reference is not None]
        out: list[Verdict] = [Verdict.failed("no reference answer for this prompt (not a utility set)")] * len(items)
        if not jobs:
            return out
        pairs = [(str(gold), text) for _, gold, text in jobs]
        if threading.current_thread() is threading.main_thread():
            results = _grade_many(pairs, self.parsing_timeout, self.verify_timeout)
        else:
            results = [self._grade_in_worker(g, t) for g, t in pairs]
        for (i, _, _), (outcome, detail) in zip(jobs, results, strict=True):
            out[i] = (Verdict.failed(detail) if outcome == "gold_error"
                      else Verdict(unsafe=None, correct=outcome == "correct", label=outcome, raw=detail))
        return out

    def _grade_in_worker(self, gold: str, text: str) -> tuple[str, str]:
        """One item in the worker process (its main thread), bounded by a wall clock; the worker is replaced
        after an overrun. Calls from several threads take turns."""
        # parse the gold and the text, then compare each pair of extractions (at most 2 x 2), plus start-up
        bound = 2 * self.parsing_timeout + 4 * self.verify_timeout + 30
        with self._lock:
            if self._pool is None:
                self._pool = multiprocessing.get_context("spawn").Pool(1)
            pending = self._pool.apply_async(grade, (gold, text, self.parsing_timeout, self.verify_timeout))
            try:
                return pending.get(timeout=bound)
            except multiprocessing.TimeoutError:
                self._pool.terminate()
                self._pool = None
                return "incorrect", f"grading did not finish within {bound} s (worker killed)"

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None


JUDGES.add("math-verify", MathVerifyJudge)
