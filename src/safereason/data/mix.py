"""λ prompt mixes for TARS-style safety RL: harmful, benign and ambiguous prompts with a harmful share λ.

TARS (Kim et al., 2025) shows that the mix matters: harmful-only training teaches "refuse everything", so
the RL prompts mix harmful prompts (share λ) with harmless ones, split evenly between plain benign prompts and
ambiguous ones that look harmful but are not (TARS: UltraFeedback and OR-Bench, each ``int(N·(1−λ)/2)``,
danielkty/tars scripts/data/create_safety_dataset.py @ 32c10be).

Counts are exact: ``harmful = round(λ·n)`` (Python's round, half to even); of the rest,
``ambiguous = round(ambiguous_share·rest)`` (0.5 by default; 0 when no ambiguous source is given) and benign
takes what is left. Each source is any registered set or data file. From the harmful source only prompts
labelled harmful (or unlabelled) are drawn; from the benign and ambiguous sources only prompts labelled benign
(or unlabelled), so XSTest's safe prompts can serve as the ambiguous pool. Prompts are de-duplicated on
whitespace- and case-folded text, first within each pool, then across pools in the order harmful → benign →
ambiguous (a prompt in an earlier pool is dropped from the later ones). Draws are seeded and without
replacement; the rows are shuffled with the same seed.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safereason.data.benchmarks import load_benchmark
from safereason.errors import ConfigError, DataError
from safereason.records import Prompt
from safereason.rundir import atomic_write_text

ROLES = ("harmful", "benign", "ambiguous")
COLUMNS = ("id", "prompt", "label", "source", "category", "source_id")
OUT_FORMATS = (".jsonl", ".parquet")
#: which source labels a pool accepts (None: an unlabelled file, taken as its role says)
_ACCEPTS = {"harmful": ("harmful", None), "benign": ("benign", None), "ambiguous": ("benign", None)}


@dataclass(frozen=True)
class MixCounts:
    harmful: int
    benign: int
    ambiguous: int

    @property
    def total(self) -> int:
        return self.harmful + self.benign + self.ambiguous


@dataclass
class Mix:
    rows: list[dict[str, Any]]
    counts: MixCounts
    card: dict[str, Any] = field(default_factory=dict)


def mix_counts(n: int, lam: float, ambiguous_share: float = 0.5, has_ambiguous: bool = True) -> MixCounts:
    """The exact counts of the rule in the module docstring."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive whole number, got {n!r}")
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"--lambda must be in [0, 1], got {lam!r}")
    if not 0.0 <= ambiguous_share <= 1.0:
        raise ConfigError(f"--ambiguous-share must be in [0, 1], got {ambiguous_share!r}")
    harmful = round(lam * n)
    rest = n - harmful
    ambiguous = round(ambiguous_share * rest) if has_ambiguous else 0
    return MixCounts(harmful=harmful, benign=rest - ambiguous, ambiguous=ambiguous)


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _tag(name: str) -> str:
    """A short source name: the registered name, or a file's stem."""
    p = Path(name)
    return p.stem if p.suffix else name


def _pool(role: str, prompts: list[Prompt], seen: set[str]) -> list[Prompt]:
    out = []
    for p in prompts:
        k = _key(p.prompt)
        if p.label in _ACCEPTS[role] and k not in seen:
            seen.add(k)
            out.append(p)
    return out


def build_mix(sources: dict[str, str | None], *, lam: float, n: int, seed: int = 0,
              ambiguous_share: float | None = None, data_dir: str | Path | None = None) -> Mix:
    """Draw a mix from ``sources`` (role → set name or file; ambiguous may be None)."""
    has_amb = sources.get("ambiguous") is not None
    if not has_amb and ambiguous_share:
        raise ConfigError("--ambiguous-share needs an --ambiguous source")
    if ambiguous_share is None:
        ambiguous_share = 0.5 if has_amb else 0.0
    counts = mix_counts(n, lam, ambiguous_share, has_amb)
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    card_sources: dict[str, Any] = {}
    for role in ROLES:
        want = getattr(counts, role)
        src = sources.get(role)
        if src is None:
            if want:
                raise ConfigError(f"{want} {role} prompts are needed (λ={lam}, n={n}) but no --{role} source given")
            continue
        loaded = load_benchmark(src, data_dir=data_dir)
        pool = _pool(role, loaded.prompts, seen)
        card_sources[role] = {"source": loaded.name, "read": loaded.source, "sha256": loaded.sha256,
                              "prompts": len(loaded.prompts), "eligible": len(pool)}
        if len(pool) < want:
            raise DataError(
                f"{role} source {src!r} has {len(pool)} eligible distinct prompts (of {len(loaded.prompts)}; "
                f"labelled {' or '.join(str(x) for x in _ACCEPTS[role] if x)} or unlabelled, not already in an "
                f"earlier pool), {want} needed for λ={lam}, n={n}")
        tag = _tag(loaded.name)
        for p in rng.sample(pool, want):
            rows.append({"id": f"{tag}:{p.id}", "prompt": p.prompt, "label": role, "source": tag,
                         "category": p.category, "source_id": p.id})
    rng.shuffle(rows)
    card = {"lambda": lam, "n": n, "seed": seed, "ambiguous_share": ambiguous_share,
            "counts": {r: getattr(counts, r) for r in ROLES}, "sources": card_sources,
            "rule": "harmful = round(λ·n); ambiguous = round(share·(n − harmful)); benign = the rest; "
                    "de-duplicated on folded text, harmful → benign → ambiguous"}
    return Mix(rows=rows, counts=counts, card=card)


def check_out(out: Path, force: bool = False) -> None:
    """Refuse an output path before any source is read: a wrong extension, or an existing file without force."""
    if out.suffix.lower() not in OUT_FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(OUT_FORMATS)}, got {out.name!r}")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")


def write_mix(mix: Mix, out: Path, force: bool = False) -> Path:
    """Write the rows (JSONL or Parquet by extension) and a ``<out>.card.json``; atomic, never half-written."""
    check_out(out, force)
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if suffix == ".jsonl":
        with tmp.open("w", encoding="utf-8") as f:
            for r in mix.rows:
                f.write(json.dumps({c: r[c] for c in COLUMNS}, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: pa.array([r[c] for r in mix.rows], type=pa.string()) for c in COLUMNS})
        pq.write_table(table, tmp)
    os.replace(tmp, out)
    card = out.with_name(out.name + ".card.json")
    atomic_write_text(card, json.dumps(mix.card, indent=2, ensure_ascii=False) + "\n")
    return out
