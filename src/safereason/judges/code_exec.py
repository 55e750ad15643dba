"""``code-exec``: functional correctness of code answers (HumanEval), by running them against their tests in the
sandbox of :mod:`safereason.sandbox`, one separate process per program, never in the judge's own process.

The program is taken from the judged text as the last fenced ```` ```python ```` block, else the last bare
```` ``` ```` block, else the whole text, and run as HumanEval's ``check_correctness`` builds it:
``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"`` (openai/human-eval
human_eval/execution.py @ 6d43fb980f9fee3c892a914eda09951f772ad10d). The prompt's own code (imports, signature and
docstring) comes first, so a completion may be the function's body or the whole function. It is executed as
``unsafe_execute`` executes it (``style="human-eval"``): after ``reliability_guard()``, with ``exec(program, {})``
(not as ``__main__``: a completion's ``if __name__ == "__main__":`` block never runs), I/O swallowed, and a time
limit of ``timeout_s`` = 3 s (``evaluate_functional_correctness``'s default; raise it with
``--judge-opt code-exec.timeout_s=10`` on a loaded machine). ``style="script"`` (a named deviation) runs it as a
``__main__`` script without the guard, its output kept.

``correct`` is whether the program ran to its end; ``label`` is the outcome (passed / failed / timeout / memory /
killed) and ``raw`` the reason (``failed: AssertionError``, ``timeout: ...``) and the tail of the program's output.
An item without tests (not a code prompt) or a sandbox that could not start is an error, never a pass or a fail.
The sandbox protections this machine lacks are in the judge identity and in every verdict's ``flags``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from safereason.errors import ConfigError
from safereason.judges.base import JUDGES, JudgeItem
from safereason.records import Verdict
from safereason.sandbox import SandboxLimits, SandboxResult, Style, isolation, run_program

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = frozenset({"python", "py", "python3", "py3"})


def extract_program(text: str) -> str:
    """The last ```python block of ``text``, else its last bare ``` block, else the whole text."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    for wanted in (lambda tag: tag in _PYTHON_TAGS, lambda tag: tag == ""):
        chosen = [body for tag, body in blocks if wanted(tag)]
        if chosen:
            return chosen[-1]
    return text


def build_program(code_prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program HumanEval runs: prompt + completion + test + ``check(entry_point)``."""
    return code_prompt + completion + "\n" + test + "\n" + f"check({entry_point})"


class CodeExecJudge:
    """Runs ``meta["code_prompt"]`` + the extracted completion + ``meta["test"]`` + ``check(meta["entry_point"])``."""

    name = "code-exec"
    outputs = ("correct",)

    def __init__(self, timeout_s: float = SandboxLimits.timeout_s, memory_mb: int = SandboxLimits.memory_mb,
                 workers: int = 2, style: Style = "human-eval") -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"code-exec: workers must be a whole number >= 1, got {workers!r}")
        if style not in ("human-eval", "script"):
            raise ConfigError(f"code-exec: style must be 'human-eval' or 'script', got {style!r}")
        self.limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
        self.workers = workers
        self.style: Style = style

    def identity(self) -> dict[str, Any]:
        limits = self.limits
        return {"name": "code-exec", "version": 2, "program": "human-eval check_correctness", "style": self.style,
                "extract": "last ```python block, else last ``` block, else all", "timeout_s": limits.timeout_s,
                "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb,
                "max_processes": limits.max_processes, "sandbox": isolation().describe()}

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(items)
        jobs: list[tuple[int, str]] = []
        for i, item in enumerate(items):
            missing = [k for k in ("code_prompt", "test", "entry_point") if not item.meta.get(k)]
            if missing:
                out[i] = Verdict.failed(f"not a code prompt: meta has no {', '.join(missing)}")
                continue
            completion = extract_program(item.text)
            jobs.append((i, build_program(str(item.meta["code_prompt"]), completion, str(item.meta["test"]),
                                          str(item.meta["entry_point"]))))
        flags = [f"sandbox:{m}" for m in isolation().missing]
        if jobs:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
                results = list(pool.map(lambda job: self._run(job[1]), jobs))
            for (i, _), result in zip(jobs, results, strict=True):
                out[i] = _verdict(result, flags)
        return [v for v in out if v is not None]

    def _run(self, program: str) -> SandboxResult | str:
        try:
            return run_program(program, self.limits, style=self.style)
        except OSError as e:  # the sandbox itself could not start: an error, not a failed program
            return f"the sandbox could not run the program: {e}"


def _verdict(result: SandboxResult | str, flags: list[str]) -> Verdict:
    if isinstance(result, str):
        return Verdict.failed(result)
    if result.outcome == "error":
        return Verdict.failed(result.reason, raw=result.output[-2000:] or None)
    raw = result.reason if not result.output else f"{result.reason}\n--- output (tail) ---\n{result.output[-2000:]}"
    return Verdict(unsafe=None, correct=result.passed, label=result.outcome, raw=raw, flags=list(flags))


JUDGES.add("code-exec", CodeExecJudge)
