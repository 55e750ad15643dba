"""Is a run whole? Missing samples, missing judgments and judge errors of a run dir.

A run killed during generation or judging holds fewer records than its config asks for, and metrics
computed from them describe an unknown subset. ``metrics`` (and ``report``) refuse such a run unless
asked to compute from what is there (``allow_partial``); the result is then marked partial in
``metrics.json`` (``"partial"`` in each judge/part entry), in ``manifest.json`` and in the reports.

Judge errors are not missing records (the item was judged and the judge failed), but they are not final:
the next ``eval`` or ``judge`` on the run retries them, and commands report how many are left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safereason.errors import RunDirError
from safereason.records import Part, Sample


def needs_verdict(sample: Sample, part: Part) -> bool:
    """Whether ``part`` of ``sample`` is judged at all (an unclosed thought has no answer to judge)."""
    return sample.part_text(part) is not None


def _fmt_counts(counts: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{j} x {p}: {n}" for j, parts in counts.items() for p, n in parts.items())


@dataclass
class RunStatus:
    """What a run's records lack compared to its config, and how many of its verdicts are errors."""

    expected_samples: int | None  # n_prompts x k; None when the run dir does not record n_prompts
    n_samples: int
    missing_judgments: dict[str, dict[str, int]]  # judge -> part -> samples with no verdict yet
    judge_errors: dict[str, dict[str, int]]  # judge -> part -> samples whose verdict is an error

    @property
    def missing_samples(self) -> int:
        return max(0, self.expected_samples - self.n_samples) if self.expected_samples is not None else 0

    @property
    def n_missing_judgments(self) -> int:
        return sum(n for parts in self.missing_judgments.values() for n in parts.values())

    @property
    def n_judge_errors(self) -> int:
        return sum(n for parts in self.judge_errors.values() for n in parts.values())

    @property
    def complete(self) -> bool:
        return self.missing_samples == 0 and self.n_missing_judgments == 0

    def partial(self) -> dict[str, Any] | None:
        """The ``partial`` record of manifest.json, or None for a complete run."""
        if self.complete:
            return None
        return {"missing_samples": self.missing_samples, "expected_samples": self.expected_samples,
                "missing_judgments": self.n_missing_judgments,
                "missing_judgments_by_judge": self.missing_judgments}

    def describe(self) -> str:
        """'12 of 120 samples and 30 judgments (rs-match x full: 30) are missing'."""
        bits = []
        if self.missing_samples:
            bits.append(f"{self.missing_samples} of {self.expected_samples} samples")
        if self.n_missing_judgments:
            bits.append(f"{self.n_missing_judgments} judgments ({_fmt_counts(self.missing_judgments)})")
        return " and ".join(bits) + " are missing" if bits else "nothing is missing"

    def errors_line(self) -> str:
        """The count a command ends with when verdicts are errors."""
        return (f"{self.n_judge_errors} judge errors ({_fmt_counts(self.judge_errors)}); "
                "re-run the same command to retry them")


class IncompleteRunError(RunDirError):
    """Metrics asked of a run whose records are not all there."""

    def __init__(self, path: Path, status: RunStatus) -> None:
        self.status = status
        super().__init__(f"run dir {path} is incomplete: {status.describe()}; re-run the `safereason eval` "
                         "command that made it to resume (or `safereason judge` for missing judgments), or pass "
                         "--allow-partial to compute from the records there are (marked PARTIAL)")


def run_status(samples: Sequence[Sample], *, expected_samples: int | None,
               requested: Mapping[str, Sequence[Part]]) -> RunStatus:
    """Count what ``samples`` (with their judgments attached) lack: ``requested`` maps a judge to its parts."""
    missing: dict[str, dict[str, int]] = {}
    errors: dict[str, dict[str, int]] = {}
    for judge, parts in requested.items():
        for part in parts:
            n = sum(1 for s in samples if needs_verdict(s, part) and s.judgments.get(judge, {}).get(part) is None)
            if n:
                missing.setdefault(judge, {})[part] = n
    for s in samples:
        for judge, verdicts in s.judgments.items():
            for part, v in verdicts.items():
                if v.error is not None:
                    errors.setdefault(judge, {}).setdefault(part, 0)
                    errors[judge][part] += 1
    unique = len({(s.prompt_id, s.sample_index) for s in samples})
    return RunStatus(expected_samples=expected_samples, n_samples=unique, missing_judgments=missing,
                     judge_errors=errors)


def mark_partial(metrics: dict[str, dict[str, dict[str, Any]]], status: RunStatus,
                 requested: Mapping[str, Sequence[Part]] | None = None) -> None:
    """Add ``"partial"`` to every judge/part entry of ``metrics`` when the run is incomplete. A ``requested``
    judge/part with no verdict at all (a run killed before its first sample) gets an entry without numbers
    (``kind`` empty), so that metrics.json carries the marker even then."""
    if status.complete:
        return
    from safereason.metrics import _aggregate  # the shape of an entry over no prompts

    for judge, parts in (requested or {}).items():
        for part in parts:
            if part not in metrics.get(judge, {}):
                empty = {**_aggregate([], n_bootstrap=0, seed=0, confidence=0.95), "k": 0, "kind": ""}
                metrics.setdefault(judge, {})[part] = empty
    for judge, parts in metrics.items():
        for part, entry in parts.items():
            entry["partial"] = {"missing_samples": status.missing_samples,
                                "expected_samples": status.expected_samples,
                                "missing_judgments": status.missing_judgments.get(judge, {}).get(part, 0)}
