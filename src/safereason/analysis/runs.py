"""Run dirs as the analyses read them: samples grouped by model (or any config key), with TARS's prompt roles.

A sample's role is ``harmful``, ``benign`` or ``ambiguous``: the ``label`` column of a λ mix (``safereason data
mix``) survives in the prompt's meta and wins, so ambiguous prompts are told apart from plain benign ones;
otherwise the benchmark's label is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safereason.errors import SafereasonError
from safereason.report.runs import Run, load_run

ROLES = ("harmful", "benign", "ambiguous")


@dataclass
class Group:
    """The runs of one model (or one value of the grouping key), pooled."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def samples(self) -> list[dict[str, Any]]:
        return [s for r in self.runs for s in r.samples]


def role_of(sample: dict[str, Any]) -> str:
    """harmful / benign / ambiguous, or ``unlabelled``."""
    meta = sample.get("meta") or {}
    raw = meta.get("label")
    if isinstance(raw, str) and raw.strip().lower() in ROLES:
        return raw.strip().lower()
    label = sample.get("label")
    return label if label in ROLES else "unlabelled"


def load_groups(run_dirs: Sequence[str | Path], *, group_by: str = "model", labels: Sequence[str] | None = None,
                allow_partial: bool = False) -> list[Group]:
    """Load run dirs and pool them per ``group_by`` (a config key such as ``model``, or ``run``: one per dir);
    ``labels`` names each run dir's group explicitly (e.g. ``SFT``, ``DPO``, ``TARS λ=0.5``)."""
    if not run_dirs:
        raise SafereasonError("give at least one run dir")
    if labels is not None and len(labels) != len(run_dirs):
        raise SafereasonError(f"{len(labels)} labels for {len(run_dirs)} run dirs; give one label per run dir")
    groups: dict[str, Group] = {}
    for i, d in enumerate(run_dirs):
        run = load_run(Path(d), allow_partial=allow_partial)
        if labels is not None:
            name = labels[i]
        elif group_by == "run":
            name = str(Path(d).name)
        else:
            if group_by not in run.config:
                raise SafereasonError(f"{d}: config has no key {group_by!r} to group by")
            name = str(run.config[group_by])
        groups.setdefault(name, Group(name)).runs.append(run)
    return list(groups.values())


def bootstrap_ci(values: Sequence[float], *, n_bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean over prompts (None with fewer than two values)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2 or n_bootstrap <= 0:
        return None
    idx = np.random.default_rng(seed).integers(0, arr.size, size=(n_bootstrap, arr.size))
    boot = arr[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))
